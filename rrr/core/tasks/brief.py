"""Brief descriptions: the learnability task (issue 23, item 4), shipped as a plugin.

"Describe a lantern in at most 12 words." A small model overshoots the limit; asked to reflect,
it writes a better answer inside its reflection, and the retry ("write your better answer again")
mostly copies it. So what the reflection says controls the retry's reward, the property GRPO
needs to move, and the reward is cheap and exact: count the words.

This task proves the loop learns, not that a model reasons better. Measured with the embedded
SmolLM2-135M at temperature 0.7 (docs/learnability.md): about 22 % of first tries pass, 20-30 %
of retries after a failure pass, and about 40 % of retries repeat the reflection's text. It is the
regression test of every change to the algorithm (`configs/learnability-cpu.yaml`).

Rows are ``{"object": str, "max_words": int}``. The task reads two sources itself:
``brief:train`` and ``brief:heldout``, every (object, limit) pair of disjoint object lists, in a
fixed shuffled order (so ``data.limit`` takes a spread of objects and limits).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from rrr.core.tasks.base import Message, Row, RowError, Task, message, require
from rrr.verifiers import Verdict

# Concrete, everyday nouns a 135M model can describe. Every fifth one is held out, so trained
# and evaluated problems never share an object (the limits are shared: they are the rule).
_OBJECT_LIST = """
    stone river apple cloud tiger plant house lamp bread chair glass coin drum ocean paper
    crown radio sugar table bell well zebra forest flame grape heart kettle knife lemon
    mouse candle horse bridge garden window pencil mirror ladder blanket clock feather
    island jacket key mountain needle orange pillow rabbit boat shell tower violin wagon
    basket cactus dolphin engine fountain guitar hammer lantern map nest owl piano rope
    spoon tent umbrella desert whale bicycle castle door eagle fence helmet kite leaf moon
    notebook oven parrot road ship train volcano wheel book bottle camera dragon envelope
    flower goat harbor igloo jar lake
"""
OBJECTS: tuple[str, ...] = tuple(_OBJECT_LIST.split())
PARTS: tuple[str, ...] = ("train", "heldout")
# Limits from 10 to 14 words: at 12 the embedded model passes about a quarter of its retries,
# inside the 20-50 % band where GRPO groups carry signal (docs/learnability.md).
MIN_WORDS, MAX_WORDS = 10, 14
_ORDER_SEED = 0  # the fixed shuffle of each part's problems
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
MAX_SCANNED_CHARS = 4000  # a response is hostile input: bound the work on it


def objects(part: str) -> list[str]:
    """The objects of one part: every fifth object is held out."""
    if part not in PARTS:
        raise ValueError(f"unknown brief part {part!r}; expected one of {PARTS}")
    held = part == "heldout"
    return [o for i, o in enumerate(OBJECTS) if (i % 5 == 4) == held]


def problems(part: str) -> list[dict[str, Any]]:
    """Every (object, limit) problem of a part, in a fixed shuffled order."""
    rows = [
        {"object": o, "max_words": n}
        for o in objects(part)
        for n in range(MIN_WORDS, MAX_WORDS + 1)
    ]
    random.Random(_ORDER_SEED).shuffle(rows)
    return rows


def user_prompt(row: Row) -> str:
    article = "an" if row["object"][0] in "aeiou" else "a"
    return f"Describe {article} {row['object']} in at most {row['max_words']} words."


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


class BriefTask(Task):
    name: ClassVar[str] = "brief"
    error_categories: ClassVar[tuple[str, ...]] = ("empty", "too_long")

    def read_source(self, source: str, split: str) -> Iterable[Mapping[str, Any]] | None:
        prefix, _, part = source.partition(":")
        if prefix != self.name or not part:
            return None
        return problems(part)

    def validate_row(self, raw: Mapping[str, Any]) -> Row:
        obj, limit = require(raw, "object"), require(raw, "max_words")
        if not isinstance(obj, str) or not obj.strip() or len(obj) > 64:
            raise RowError("bad_value:object", repr(obj)[:80])
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
            raise RowError("bad_value:max_words", repr(limit)[:80])
        return {"object": obj.strip().lower(), "max_words": limit}

    def first_messages(self, row: Row) -> list[Message]:
        return [message("user", user_prompt(row))]

    def reflection_message(self, row: Row) -> Message:
        # In the paper's style (section 4.2: say that it failed, ask what went wrong), plus the
        # request for a better answer that the retry then repeats.
        return message(
            "user",
            "Your answer was too long. Reflect on what went wrong, then write a better answer "
            f"of at most {row['max_words']} words.",
        )

    def retry_messages(self, row: Row) -> list[Message]:
        return [
            message(
                "user",
                f"Now write your better answer of at most {row['max_words']} words again, "
                "and nothing else.",
            )
        ]

    def verify(self, row: Row, response: str) -> Verdict:
        if len(response) > MAX_SCANNED_CHARS:  # far past any limit; never scan it all
            return Verdict.fail("too_long", f"{len(response)} characters")
        n = count_words(response)
        if n == 0:
            return Verdict.fail("empty", "no words")
        if n > row["max_words"]:
            return Verdict.fail("too_long", f"{n} words > {row['max_words']}")
        return Verdict.ok(detail=f"{n} words")

    def row_key(self, row: Row) -> str:
        return f"brief:{row['object']}:{row['max_words']}"
