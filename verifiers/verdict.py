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

VERIFIER_ERROR = "verifier_error"
"""The error class of a verdict that judged nothing: the verifier crashed or ran out of time
(actors/verifier_pool.py). Such a response may well be right, so training drops it instead of
scoring it 0 (rrr/core/episodes.py)."""


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
        object.__setattr__(self, "detail", _capped_detail(self.detail))
        object.__setattr__(self, "extracted", _capped_extracted(self.extracted))

    @classmethod
    def ok(cls, extracted: str | None = None, detail: str = "") -> Verdict:
        """A correct verdict (the fast constructor the verifiers use)."""
        return _build(True, None, detail, extracted)

    @classmethod
    def fail(cls, error: str, detail: str = "", extracted: str | None = None) -> Verdict:
        """A wrong verdict with error class ``error`` (the fast constructor the verifiers use)."""
        if error is None:
            raise ValueError("a failed verdict needs an error class")
        return _build(False, error, detail, extracted)


def _capped_detail(detail: str) -> str:
    if detail and (len(detail) > DETAIL_CAP or not detail.isascii()):
        return _safe_text(detail, DETAIL_CAP)
    return detail


def _capped_extracted(extracted: str | None) -> str | None:
    if extracted is not None and (len(extracted) > EXTRACTED_CAP or not extracted.isascii()):
        return _safe_text(extracted, EXTRACTED_CAP)
    return extracted


# A verdict is built on every verification, and the frozen dataclass __init__ (four
# object.__setattr__ calls plus __post_init__) is about half of a small verification's overhead.
# ok()/fail() satisfy the invariant by construction, so they fill the slots directly.
_new = object.__new__
_set_correct = Verdict.__dict__["correct"].__set__
_set_error = Verdict.__dict__["error"].__set__
_set_detail = Verdict.__dict__["detail"].__set__
_set_extracted = Verdict.__dict__["extracted"].__set__


def _build(correct: bool, error: str | None, detail: str, extracted: str | None) -> Verdict:
    """Exactly ``Verdict(correct, error, detail, extracted)``, without the dataclass machinery."""
    verdict = _new(Verdict)
    _set_correct(verdict, correct)
    _set_error(verdict, error)
    _set_detail(verdict, _capped_detail(detail))
    _set_extracted(verdict, _capped_extracted(extracted))
    return verdict
