"""The learnability task's pure logic (rrr/core/tasks/brief.py): rows, parts, prompts, verifier."""

from __future__ import annotations

import pytest

from rrr.core.tasks.base import RowError, check_task_class
from rrr.core.tasks.brief import MAX_SCANNED_CHARS, BriefTask, count_words, objects, problems
from rrr.core.tasks.registry import installed_tasks


def test_registered_like_any_plugin_and_meets_the_protocol() -> None:
    assert "brief" in installed_tasks()
    assert check_task_class(BriefTask) is None


def test_parts_are_disjoint_and_hold_every_pair_once() -> None:
    train, held = objects("train"), objects("heldout")
    assert not set(train) & set(held)
    assert len(held) * 4 == len(train)
    for part in ("train", "heldout"):
        rows = problems(part)
        keys = [BriefTask().row_key(r) for r in rows]
        assert len(keys) == len(set(keys)) == len(objects(part)) * 5
        assert problems(part) == rows  # a fixed order
        # the fixed shuffle spreads limits over the first rows (data.limit takes a prefix)
        assert len({r["max_words"] for r in rows[:10]}) >= 3
    with pytest.raises(ValueError, match="unknown brief part"):
        problems("test")


def test_read_source_routes_only_its_own_sources() -> None:
    task = BriefTask()
    assert task.read_source("brief:heldout", "train") == problems("heldout")
    assert task.read_source("gen:countdown?n=3", "train") is None
    assert task.read_source("brief", "train") is None


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("A lamp glows.", 3),
        ("It's a well-lit, warm lamp!", 5),
        ("  \n ", 0),
        ("12 words? no: 3.", 4),
    ],
)
def test_count_words(text: str, n: int) -> None:
    assert count_words(text) == n


def test_verify_counts_against_the_rows_limit() -> None:
    task = BriefTask()
    row = task.validate_row({"object": "Lantern", "max_words": 4})
    assert row == {"object": "lantern", "max_words": 4}
    assert task.verify(row, "A small glowing lantern.").correct
    long = task.verify(row, "A small glowing lantern on the porch.")
    assert (long.correct, long.error) == (False, "too_long")
    assert task.verify(row, "...").error == "empty"
    huge = task.verify(row, "a" * (MAX_SCANNED_CHARS + 1))  # hostile: not scanned at all
    assert huge.error == "too_long"


def test_prompts_state_the_limit_and_the_retry_asks_for_the_reflections_answer() -> None:
    task = BriefTask()
    row = {"object": "owl", "max_words": 12}
    (first,) = task.first_messages(row)
    assert first["content"] == "Describe an owl in at most 12 words."
    assert "better answer of at most 12 words" in task.reflection_message(row)["content"]
    (retry,) = task.retry_messages(row)
    assert "better answer" in retry["content"] and "12 words" in retry["content"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"max_words": 3}, "missing_field:object"),
        ({"object": "owl"}, "missing_field:max_words"),
        ({"object": "", "max_words": 3}, "bad_value:object"),
        ({"object": "owl", "max_words": True}, "bad_value:max_words"),
        ({"object": "owl", "max_words": 0}, "bad_value:max_words"),
        ({"object": "owl", "max_words": "5"}, "bad_value:max_words"),
    ],
)
def test_bad_rows_name_the_field(raw: dict, reason: str) -> None:
    with pytest.raises(RowError) as err:
        BriefTask().validate_row(raw)
    assert err.value.reason == reason
