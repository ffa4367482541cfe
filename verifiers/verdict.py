"""The result type shared by every verifier.

A verdict is a small immutable value so it can be logged, pickled across processes and compared
in tests. Its text fields are capped and made encodable here, once, so that a hostile model
response (megabytes of text, lone surrogates) can never make a logger or a JSON dump fail later.
"""

from __future__ import annotations

from dataclasses import dataclass

DETAIL_CAP = 200
"""Longest ``detail`` kept: it is a short human reason, not a copy of the response."""

EXTRACTED_CAP = 1000
"""Longest ``extracted`` kept: enough for any real equation or call, bounded for logs."""


def _safe_text(text: str, cap: int) -> str:
    """Cap ``text`` and replace lone surrogates so the result always encodes as UTF-8.

    ``str.isascii`` is a fast C check, so ordinary ASCII text pays almost nothing.
    """
    if len(text) > cap:
        text = text[: cap - 3] + "..."
    if not text.isascii():
        # Lone surrogates ("\ud800") are legal in a Python str but not in UTF-8; writing them
        # out as escapes keeps the verdict printable and JSON-serialisable.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of judging one response.

    Attributes:
        correct: whether the response earns the reward.
        error: ``None`` iff ``correct``; otherwise a verifier-specific error class such as
            ``"invalid_equation"`` or ``"format"`` (see each verifier's ``ERRORS``).
        detail: a short human-readable reason (capped at ``DETAIL_CAP`` characters).
        extracted: the equation or call text that was judged, if any (capped).
    """

    correct: bool
    error: str | None
    detail: str = ""
    extracted: str | None = None

    def __post_init__(self) -> None:
        # A verdict that is both correct and erroneous (or neither) is a bug in a verifier,
        # not a property of the model output, so it raises.
        if self.correct != (self.error is None):
            raise ValueError(
                f"Verdict invariant broken: correct={self.correct!r} error={self.error!r}"
            )
        # Frozen dataclass: the capped copies have to go in through object.__setattr__.
        if self.detail:
            object.__setattr__(self, "detail", _safe_text(self.detail, DETAIL_CAP))
        if self.extracted is not None:
            object.__setattr__(self, "extracted", _safe_text(self.extracted, EXTRACTED_CAP))

    @classmethod
    def ok(cls, extracted: str | None = None, detail: str = "") -> Verdict:
        """A correct verdict."""
        return cls(True, None, detail, extracted)

    @classmethod
    def fail(cls, error: str, detail: str = "", extracted: str | None = None) -> Verdict:
        """A wrong verdict with error class ``error``."""
        return cls(False, error, detail, extracted)
