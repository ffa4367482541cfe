"""Task abstraction shared by every verifiable task (paper §3, Figure 1).

A task is *pure*: it turns a dataset row into chat messages (lists of ``{"role", "content"}``
dicts) and judges a response with a binary verifier. Rendering messages into token ids through a
tokenizer's chat template is done elsewhere (``rrr/core/chat.py``), so tasks never touch tokenizers.

The Reflect-Retry-Reward conversation (§3) is always::

    first_messages(row)            # system + user: the task
    assistant: first attempt       # verified; if correct we stop
    reflection_message(row)        # user: "reflect on what went wrong" (§4.1 / §4.2)
    assistant: self-reflection     # the only tokens GRPO rewards
    retry_messages(row)            # re-prompt for the second attempt (Appendix A)
    assistant: second attempt      # verified; success => reward the reflection
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from rrr.verifiers import Verdict

Message = dict[str, str]
Row = dict[str, Any]

# Prompt families (Appendix A.1): Qwen 2 uses ChatML-style <tools>/<tool_call> tags; Llama 3.1 and
# Phi 3.5 share the Llama JSON tool-calling format ("Phi performs better following the Llama
# tool-calling template").
FAMILIES: tuple[str, ...] = ("qwen", "llama")

# "phi" must be followed by a version (phi-3.5, phi3, Phi-2) so names such as "dolphin" or a user
# directory "/home/philip/..." are not mistaken for Phi models.
_PHI_RE = re.compile(r"(?<![a-z])phi[-_ .]?\d")


class RowError(ValueError):
    """A dataset row that cannot be used; ``reason`` is a short machine-readable key that the
    loader counts (e.g. ``missing_field:nums``, ``tools_not_json``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def message(role: str, content: str) -> Message:
    """One chat message; a helper so every task builds identical dict shapes."""
    return {"role": role, "content": content}


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown prompt family {family!r}; expected one of {FAMILIES}")
    return family


def detect_family(model_name_or_path: str, override: str | None = None) -> str:
    """Pick the Appendix A.1 prompt family for a model.

    ``override`` may be ``None`` or ``"auto"`` (detect from the name) or a family name. Names
    containing "qwen" -> "qwen"; "llama" or "phi<version>" -> "llama" (the paper prompts Phi 3.5
    with the Llama template); anything else (e.g. SmolLM2, which uses ChatML) -> "qwen".
    """
    if override is not None and override != "auto":
        if override not in FAMILIES:
            raise ValueError(
                f"bad prompt family override {override!r}; expected 'auto' or one of {FAMILIES}"
            )
        return override
    name = model_name_or_path.lower()
    if "qwen" in name:
        return "qwen"
    if "llama" in name or _PHI_RE.search(name):
        return "llama"
    return "qwen"


@runtime_checkable
class TaskProtocol(Protocol):
    """What rrr needs of a task, plugins included (docs/plugins.md). Subclassing ``Task`` is the
    easy way to meet it; any class with these members and a ``(family, **options)`` constructor
    works. Instances must pickle (the verifier pool ships them to its actors) and ``verify`` must
    return on its own: the pool, not the task, enforces time-outs.
    """

    name: str  # the registered name; results and reports are keyed by it
    error_categories: tuple[str, ...]  # the Verdict.error values verify returns, table order
    family: str

    def read_source(self, source: str, split: str) -> Iterable[Mapping[str, Any]] | None: ...
    def validate_row(self, raw: Mapping[str, Any]) -> Row: ...
    def first_messages(self, row: Row) -> list[Message]: ...
    def reflection_message(self, row: Row) -> Message: ...
    def retry_messages(self, row: Row) -> list[Message]: ...
    def verify(self, row: Row, response: str) -> Verdict: ...
    def row_key(self, row: Row) -> str: ...


# read_source is optional (rrr.core.tasks.loading asks for it with getattr); the rest are required.
_PROTOCOL_METHODS: tuple[str, ...] = (
    "validate_row", "first_messages", "reflection_message", "retry_messages", "verify", "row_key",
)  # fmt: skip


def check_task_class(cls: Any) -> str | None:
    """Why ``cls`` is not a usable task class, or None (checked before it is ever built, so a
    plugin's mistake names the member instead of failing mid-run)."""
    if not isinstance(cls, type):
        return f"{cls!r} is not a class"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return "class attribute `name` must be a non-empty str"
    cats = getattr(cls, "error_categories", None)
    if not isinstance(cats, tuple) or not all(isinstance(c, str) and c for c in cats):
        return "class attribute `error_categories` must be a tuple of non-empty str"
    missing = [m for m in _PROTOCOL_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        return f"missing methods {missing}"
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        return f"abstract methods not implemented: {abstract}"
    return None


class Task(ABC):
    """A verifiable task (paper §4): prompts from Appendix A plus a binary verifier."""

    name: ClassVar[str]
    # Error categories in the column order of the paper's error-analysis tables (Tables 4/5);
    # they are the ``Verdict.error`` values the task's verifier returns.
    error_categories: ClassVar[tuple[str, ...]]

    def __init__(self, family: str = "qwen") -> None:
        self.family = check_family(family)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r})"

    def read_source(self, source: str, split: str) -> Iterable[Mapping[str, Any]] | None:
        """Raw records for a source only this task knows how to read (e.g. ``humaneval`` for the
        code task), or None to let ``rrr.core.tasks.loading`` route it (files, datasets,
        generators).
        Each record still goes through ``validate_row``."""
        return None

    @abstractmethod
    def validate_row(self, raw: Mapping[str, Any]) -> Row:
        """Return the normalised row or raise ``RowError(reason)``."""

    @abstractmethod
    def first_messages(self, row: Row) -> list[Message]:
        """System + user messages for the first attempt."""

    @abstractmethod
    def reflection_message(self, row: Row) -> Message:
        """The user turn that asks for a self-reflection after a failed attempt."""

    @abstractmethod
    def retry_messages(self, row: Row) -> list[Message]:
        """Messages appended after the reflection to set up the second attempt."""

    @abstractmethod
    def verify(self, row: Row, response: str) -> Verdict:
        """Binary success signal (§3) plus an error category for the error analysis."""

    @abstractmethod
    def row_key(self, row: Row) -> str:
        """A stable id for dedup / resume (independent of the row's position in a file)."""

    # Convenience builders for the full §3 conversation, so callers need not re-derive the order.
    def reflection_conversation(self, row: Row, first_response: str) -> list[Message]:
        """Conversation whose next assistant turn is the self-reflection."""
        return [
            *self.first_messages(row),
            message("assistant", first_response),
            self.reflection_message(row),
        ]

    def retry_conversation(self, row: Row, first_response: str, reflection: str) -> list[Message]:
        """Conversation whose next assistant turn is the second attempt."""
        return [
            *self.reflection_conversation(row, first_response),
            message("assistant", reflection),
            *self.retry_messages(row),
        ]


def require(raw: Mapping[str, Any], field: str) -> Any:
    """Fetch a required field; absent and ``None`` both count as missing."""
    value = raw.get(field)
    if value is None:
        raise RowError(f"missing_field:{field}")
    return value
