"""Countdown math equations (paper §4.2, prompts from Appendix A.2)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import rrr.verifiers.countdown
from rrr.core.tasks.base import Message, Row, RowError, Task, message, require
from rrr.verifiers import Verdict

# Paper A.2: system prompt (the LaTeX source escapes the backslash; the model sees "\boxed{}").
COUNTDOWN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# Paper A.2: user turn. Placeholders are the paper's own; the "→" continuation lines of the PDF
# are joined into one line. A.2 has no comma after the list (the §4.2 sample and TinyZero do:
# "Using the numbers [4, 73, 4, 23], create ..."); we follow A.2, the stated template.
NUMS_PLACEHOLDER = "{nums, in list format}"
TARGET_PLACEHOLDER = "{target}"
COUNTDOWN_USER_TEMPLATE = (
    "Using the numbers {nums, in list format} create an equation that equals {target}. "
    "You can use basic arithmetic operations (+, -, *, /) and each number can only be used once.\n"
    "Please reason step by step, and put your final answer within \\boxed{}."
)

# Paper §4.2 / A.2: self-reflection prompt after a failed Countdown attempt.
COUNTDOWN_REFLECTION_PROMPT = (
    "You tried solving the problem and got the wrong answer. Reflect on what went wrong "
    "and write a short explanation that will help you do better next time."
)

# Row constraints: 2-6 numbers covers Countdown-Tasks-3to4 (3-4) plus easier/harder variants;
# the bound on magnitudes keeps prompts short and exhaustive checks cheap.
MIN_NUMS, MAX_NUMS = 2, 6
MAX_NUM_EXCLUSIVE = 10**6


def _as_int(value: Any) -> int | None:
    """Accept Python/numpy integers but not bools (``True`` is an int in Python)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def format_nums(nums: list[int]) -> str:
    """The paper's "{nums, in list format}": a Python-style list, e.g. ``[4, 73, 4, 23]``."""
    return "[" + ", ".join(str(n) for n in nums) + "]"


def countdown_user_prompt(nums: list[int], target: int) -> str:
    return COUNTDOWN_USER_TEMPLATE.replace(NUMS_PLACEHOLDER, format_nums(nums)).replace(
        TARGET_PLACEHOLDER, str(target)
    )

# Worked examples for `fewshot` > 0: SmolLM2-135M never writes a boxed equation zero-shot
# (1 % on 2-number sums), but does after one example (~37 %, measured at temperature 1).
FEWSHOT_EXAMPLES: tuple[tuple[list[int], int, str], ...] = (
    ([3, 4], 7, "3 + 4"),
    ([8, 1], 9, "8 + 1"),
    # With "-" in the task's ops, a subtraction example: without one the model writes "+" for
    # every problem, and a retry after a reflection copies the "+" of the failed first try.
    ([9, 4], 5, "9 - 4"),
)


class CountdownTask(Task):
    """Rows: ``{"nums": list[int], "target": int}`` plus optional ``id`` / ``solution``.

    The prompts are the same for every model family (A.2 gives one template).
    """

    name: ClassVar[str] = "countdown"
    # Table 5 column order: invalid equation, wrong numbers, missed target.
    error_categories: ClassVar[tuple[str, ...]] = (
        "invalid_equation",
        "wrong_numbers",
        "missed_target",
    )

    def __init__(self, family: str = "qwen", *, fewshot: int = 0) -> None:
        super().__init__(family)
        if not 0 <= fewshot <= len(FEWSHOT_EXAMPLES):
            raise ValueError(f"fewshot must be in [0, {len(FEWSHOT_EXAMPLES)}], got {fewshot}")
        self.fewshot = fewshot

    def validate_row(self, raw: Mapping[str, Any]) -> Row:
        if not isinstance(raw, Mapping):
            raise RowError("not_an_object")
        raw_nums = require(raw, "nums")
        raw_target = require(raw, "target")
        # Lists from JSON/pyarrow/datasets; tuples from Python callers; numpy arrays (pandas).
        if hasattr(raw_nums, "tolist") and not isinstance(raw_nums, (list, tuple)):
            raw_nums = raw_nums.tolist()
        if not isinstance(raw_nums, (list, tuple)):
            raise RowError("bad_type:nums", type(raw_nums).__name__)
        nums: list[int] = []
        for value in raw_nums:
            n = _as_int(value)
            if n is None:
                raise RowError("bad_type:nums", repr(value))
            nums.append(n)
        if not MIN_NUMS <= len(nums) <= MAX_NUMS:
            raise RowError("bad_length:nums", str(len(nums)))
        if any(not 0 < n < MAX_NUM_EXCLUSIVE for n in nums):
            raise RowError("out_of_range:nums", format_nums(nums))
        target = _as_int(raw_target)
        if target is None:
            raise RowError("bad_type:target", repr(raw_target))
        row: Row = {"nums": nums, "target": target}
        for optional in ("id", "solution"):
            if raw.get(optional) is not None:
                row[optional] = raw[optional]
        return row

    def first_messages(self, row: Row) -> list[Message]:
        # Paper A.2: system prompt, then the problem "as role user". Optional worked examples
        # (not in the paper; data.fewshot) sit between them as earlier user/assistant turns.
        shots = []
        for nums, target, equation in FEWSHOT_EXAMPLES[: self.fewshot]:
            shots += [
                message("user", countdown_user_prompt(nums, target)),
                message("assistant", f"\\boxed{{{equation}}}"),
            ]
        return [
            message("system", COUNTDOWN_SYSTEM_PROMPT),
            *shots,
            message("user", countdown_user_prompt(row["nums"], row["target"])),
        ]

    def reflection_message(self, row: Row) -> Message:
        return message("user", COUNTDOWN_REFLECTION_PROMPT)

    def retry_messages(self, row: Row) -> list[Message]:
        # Paper A.2: "we repeat the user message from above" (no system prompt).
        return [message("user", countdown_user_prompt(row["nums"], row["target"]))]

    def verify(self, row: Row, response: str) -> Verdict:
        return rrr.verifiers.countdown.verify(response, row["nums"], row["target"])

    def row_key(self, row: Row) -> str:
        # Order-sensitive on purpose: the prompt (and so the sample) depends on the order.
        return "countdown:" + ",".join(str(n) for n in row["nums"]) + f"->{row['target']}"
