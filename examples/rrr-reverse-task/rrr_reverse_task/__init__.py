"""An rrr task plugin: write a word backwards, answer in \\boxed{}.

Everything rrr needs is here: rows (``read_source`` + ``validate_row``), the prompt turns of the
first try, the reflection and the retry, a verifier returning a ``Verdict``, and the error
categories it uses. The instance holds only plain data, so it pickles into the verifier pool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from rrr.core.tasks.base import Message, Row, RowError, Task, message, require
from rrr.verifiers import Verdict

# A source name this task reads by itself (rrr asks the task before routing files/datasets).
BUILTIN_SOURCE = "reverse-words"
WORDS: tuple[str, ...] = (
    "stone", "river", "apple", "cloud", "tiger", "plant", "house", "light",
    "bread", "chair", "glass", "money", "music", "ocean", "paper", "queen",
    "radio", "sugar", "table", "voice", "water", "young", "zebra", "earth",
    "flame", "grape", "heart", "juice", "knife", "lemon", "mouse", "night",
)  # fmt: skip

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
# In the paper's style (section 4): name what failed, ask for a short explanation.
REFLECTION_PROMPT = (
    "You tried writing the word backwards and got the wrong answer. Reflect on what went wrong "
    "and write a short explanation that will help you do better next time."
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def user_prompt(word: str) -> str:
    return f"Write the word {word!r} backwards, letter by letter reversed."


class ReverseTask(Task):
    name: ClassVar[str] = "reverse"
    error_categories: ClassVar[tuple[str, ...]] = ("format", "wrong_answer")

    def read_source(self, source: str, split: str) -> Iterable[Mapping[str, Any]] | None:
        if source != BUILTIN_SOURCE:
            return None  # a file or dataset: rrr's loader reads it
        return [{"word": w} for w in WORDS]

    def validate_row(self, raw: Mapping[str, Any]) -> Row:
        word = require(raw, "word")
        if not isinstance(word, str) or not word.isalpha():
            raise RowError("bad_type:word", repr(word))
        return {"word": word.lower()}

    def first_messages(self, row: Row) -> list[Message]:
        return [message("system", SYSTEM_PROMPT), message("user", user_prompt(row["word"]))]

    def reflection_message(self, row: Row) -> Message:
        return message("user", REFLECTION_PROMPT)

    def retry_messages(self, row: Row) -> list[Message]:
        return [message("user", user_prompt(row["word"]))]  # the question again, as in A.2

    def verify(self, row: Row, response: str) -> Verdict:
        found = _BOXED.findall(response[-2000:])  # the answer sits at the end; bounded work
        if not found:
            return Verdict.fail("format", "no \\boxed{} answer")
        answer = found[-1].strip().lower()
        if answer == row["word"][::-1]:
            return Verdict.ok(answer)
        return Verdict.fail("wrong_answer", f"{answer!r} is not {row['word'][::-1]!r}", answer)

    def row_key(self, row: Row) -> str:
        return f"reverse:{row['word']}"
