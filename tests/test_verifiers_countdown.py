"""Countdown verifier: every sample row solved and accepted; systematic corruptions rejected."""

from __future__ import annotations

import dataclasses
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from rrr.core.tasks.countdown_gen import solve
from rrr.verifiers import Verdict
from rrr.verifiers.countdown import INVALID_EQUATION, MISSED_TARGET, WRONG_NUMBERS, verify

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "data"  # the bundled samples (data/SOURCES.md); never outside the repo

Row = tuple[tuple[int, ...], int]


@lru_cache(maxsize=1)
def rows() -> list[Row]:
    """The bundled sample as (nums, target) tuples."""
    with open(SAMPLE_DATA / "countdown_sample.jsonl", encoding="utf-8") as handle:
        data = [json.loads(line) for line in handle if line.strip()]
    return [(tuple(row["nums"]), row["target"]) for row in data]


@lru_cache(maxsize=1)
def solved() -> list[tuple[tuple[int, ...], int, str]]:
    """Every sample row with the solver's equation (solved once for the whole module)."""
    out = []
    for nums, target in rows():
        equation = solve(list(nums), target)
        assert equation is not None, f"no solution for {nums} -> {target}"
        out.append((nums, target, equation))
    return out


REASONING = (
    "<think>I need to combine the numbers. Let me try a few options: 3 + 4 = 7, no. "
    "Maybe multiply first and then subtract. That gets close; adjust the last step.</think>\n"
)


def render_boxed(equation: str) -> str:
    return f"{REASONING}The final equation is \\boxed{{{equation}}}."


def render_answer(equation: str) -> str:
    return f"{REASONING}<answer> {equation} </answer>"


def render_line(equation: str, target: int) -> str:
    return f"{REASONING}So the answer is:\n{equation} = {target}\n"


def failures(responses: list[tuple[str, tuple[int, ...], int]], expected: str | None) -> list:
    """The (response, verdict) pairs whose error differs from ``expected``."""
    out = []
    for response, nums, target in responses:
        verdict = verify(response, list(nums), target)
        if verdict.error != expected or verdict.correct != (expected is None):
            out.append((response[-80:], nums, target, verdict))
    return out


# --- the whole sample, rendered correctly -------------------------------------------------------


def test_sample_is_large_and_every_row_is_solvable() -> None:
    assert len(rows()) == 300
    assert len(solved()) == 300


@pytest.mark.parametrize("style", ["boxed", "answer", "line"])
def test_every_sample_row_verifies_when_rendered_correctly(style: str) -> None:
    responses = []
    for nums, target, equation in solved():
        if style == "boxed":
            response = render_boxed(equation)
        elif style == "answer":
            response = render_answer(equation)
        else:
            response = render_line(equation, target)
        responses.append((response, nums, target))
    assert failures(responses, None) == []


def test_solver_solutions_use_each_number_once() -> None:
    for nums, _, equation in solved():
        assert sorted(int(n) for n in re.findall(r"[0-9]+", equation)) == sorted(nums)


# --- corruptions ---------------------------------------------------------------------------------


def _first_literal(equation: str) -> re.Match[str]:
    match = re.search(r"[0-9]+", equation)
    assert match is not None
    return match


def test_reused_number_is_wrong_numbers() -> None:
    responses = []
    for nums, target, equation in solved():
        first = _first_literal(equation)
        others = [n for n in nums if n != int(first.group())]
        if not others:
            continue
        # Replace one literal by another given number: that number is now used twice.
        corrupted = equation[: first.start()] + str(others[0]) + equation[first.end() :]
        responses.append((render_boxed(corrupted), nums, target))
    assert len(responses) > 250
    assert failures(responses, WRONG_NUMBERS) == []


def test_missing_number_is_wrong_numbers() -> None:
    responses = []
    for nums, target, _ in solved():
        responses.append((render_boxed(" + ".join(map(str, nums[:-1]))), nums, target))
    assert failures(responses, WRONG_NUMBERS) == []


def test_extra_number_is_wrong_numbers() -> None:
    responses = []
    for nums, target, equation in solved():
        responses.append((render_boxed(f"({equation}) * 1 + 0 * {nums[0]}"), nums, target))
        responses.append((render_boxed(f"{equation} + 0"), nums, target))
    assert failures(responses, WRONG_NUMBERS) == []


def test_right_numbers_wrong_target_is_missed_target() -> None:
    responses = [(render_boxed(eq), nums, target + 1) for nums, target, eq in solved()]
    assert failures(responses, MISSED_TARGET) == []


@pytest.mark.parametrize(
    "equation",
    [
        "abc",
        "x + 3",
        "(1 + 2",
        "1 + 2)",
        ")1 + 2(",
        "1 + + 2",
        "1 +",
        "",
        "()",
        "\\frac{1}{2}",
        "2^3",
        "9**9**9",
        "2(3+4)",
        "1 2",
        "2.5 * 2",
    ],
)
def test_garbage_is_invalid_equation(equation: str) -> None:
    verdict = verify(render_boxed(equation), [1, 2, 3], 6)
    assert verdict.error == INVALID_EQUATION
    assert not verdict.correct


def test_divide_by_zero_is_invalid_equation() -> None:
    assert verify("\\boxed{4 / (2 - 2)}", [4, 2, 2], 1).error == INVALID_EQUATION
    assert verify("\\boxed{(3 - 3) / 0 + 1}", [3, 3, 0, 1], 1).error == INVALID_EQUATION


def test_no_answer_at_all_is_invalid_equation() -> None:
    verdict = verify("I could not find a solution.", [1, 2, 3], 6)
    assert verdict == Verdict(False, INVALID_EQUATION, verdict.detail, None)
    assert verdict.detail


def test_corruption_errors_come_from_the_check_order() -> None:
    # Numbers are checked before the target: wrong numbers AND wrong value -> wrong_numbers.
    assert verify("\\boxed{1 + 1}", [1, 2], 100).error == WRONG_NUMBERS
    # Parse errors beat number errors.
    assert verify("\\boxed{1 + + 1}", [1, 2], 3).error == INVALID_EQUATION


# --- extraction and notation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{(4+73)-4+3 = 76}",
        "\\boxed{76 = (4+73)-4+3}",
        "\\boxed{(4+73)-4+3 = 77-4+3 = 76}",
        "$\\boxed{(4 + 73) - 4 + 3}$",
        "<answer>(4+73)-4+3</answer>",
        "<answer>$\\left(4 + 73\\right) − 4 + 3$</answer>",
        "Answer: (4 + 73) – 4 + 3 = 76.",
        "\\[ (4 + 73) - 4 + 3 = 76 \\]",
        "\\boxed{(4 + 73) - 4 + 3}.",
        "\\boxed{(4\u00a0+ 73) - 4 + 3}",
    ],
)
def test_accepted_notations(response: str) -> None:
    verdict = verify(response, [73, 4, 4, 3], 76)
    assert verdict.correct, verdict


@pytest.mark.parametrize(
    ("equation", "nums", "target"),
    [
        ("3 × 8 ÷ 1", [3, 8, 1], 24),
        ("3 \\times 8 \\div 1", [3, 8, 1], 24),
        ("3 \\cdot 8 - 1", [3, 8, 1], 23),
        ("3 · 8 − 1", [3, 8, 1], 23),
        ("007 + 1", [7, 1], 8),
        ("1 - 2 - 3", [1, 2, 3], -4),
        ("8 / 2 / 2", [8, 2, 2], 2),
        ("2 + 3 * 4", [2, 3, 4], 14),
        ("(2 + 3) * 4", [2, 3, 4], 20),
        ("8 / (3 - 8 / 3)", [3, 3, 8, 8], 24),
    ],
)
def test_operators_precedence_and_exact_arithmetic(equation: str, nums: list, target: int) -> None:
    assert verify(f"\\boxed{{{equation}}}", nums, target).correct


def test_last_boxed_wins_and_boxed_beats_answer_and_lines() -> None:
    nums, target = [1, 2, 3], 6
    assert verify("\\boxed{1 + 2 * 3} then \\boxed{1 + 2 + 3}", nums, target).correct
    assert not verify("\\boxed{1 + 2 + 3} then \\boxed{1 + 2 * 3}", nums, target).correct
    assert verify("<answer>1 * 2 * 3</answer> \\boxed{1 + 2 + 3}", nums, target).correct
    assert not verify("\\boxed{1 * 2 + 3} <answer>1 + 2 + 3</answer>", nums, target).correct
    assert verify("1 + 2 * 3\n<answer>1 + 2 + 3</answer>\n", nums, target).correct
    assert verify("1 + 2 * 3 = 7\nthen\n1 + 2 + 3 = 6\nDone, that works.", nums, target).correct


def test_nested_braces_in_boxed_are_matched() -> None:
    verdict = verify("\\boxed{\\frac{6}{1}}", [6, 1], 6)
    assert verdict.error == INVALID_EQUATION
    assert verdict.extracted == "\\frac{6}{1}"
    assert verify("\\boxed{1 + 2 + 3", [1, 2, 3], 6).error == INVALID_EQUATION


def test_unary_minus_is_rejected() -> None:
    assert verify("\\boxed{-1 + 2 + 5}", [1, 2, 5], 6).error == INVALID_EQUATION
    assert verify("\\boxed{5 * (-1 + 2)}", [1, 2, 5], 5).error == INVALID_EQUATION
    assert verify("\\boxed{5 * (2 - 1)}", [1, 2, 5], 5).correct


@pytest.mark.parametrize("digits", ["１２ + 3", "١٢ + 3", "𝟏𝟐 + 3", "12 + ３"])
def test_unicode_digits_are_invalid(digits: str) -> None:
    assert int("١٢") == 12  # Python would accept them; the verifier must not
    assert verify(f"\\boxed{{{digits}}}", [12, 3], 15).error == INVALID_EQUATION


def test_unicode_digit_next_to_ascii_digits_is_not_skipped() -> None:
    # A tokenizer that silently dropped the fullwidth 2 would read "1" and accept this.
    assert verify("\\boxed{1２}", [1], 1).error == INVALID_EQUATION
    assert verify("\\boxed{7 + 1٣}", [7, 1], 8).error == INVALID_EQUATION


def test_digit_and_depth_caps() -> None:
    assert verify("\\boxed{1234567890123 + 1}", [1234567890123, 1], 1234567890124).error == (
        INVALID_EQUATION
    )
    assert verify("\\boxed{123456789012 + 1}", [123456789012, 1], 123456789013).correct
    deep = "(" * 65 + "1 + 2" + ")" * 65
    assert verify(f"\\boxed{{{deep}}}", [1, 2], 3).error == INVALID_EQUATION
    shallow = "(" * 64 + "1 + 2" + ")" * 64
    assert verify(f"\\boxed{{{shallow}}}", [1, 2], 3).correct


def test_only_the_tail_is_searched() -> None:
    response = "\\boxed{1 + 2 + 3}" + " " * 20_000
    assert verify(response, [1, 2, 3], 6).error == INVALID_EQUATION
    assert verify(" " * 20_000 + "\\boxed{1 + 2 + 3}", [1, 2, 3], 6).correct


# --- Verdict --------------------------------------------------------------------------------------


def test_verdict_invariant_and_caps() -> None:
    with pytest.raises(ValueError):
        Verdict(True, "missed_target")
    with pytest.raises(ValueError):
        Verdict(False, None)
    verdict = Verdict(False, "x", detail="d" * 1000, extracted="\ud800" + "e" * 5000)
    assert len(verdict.detail) <= 200
    assert verdict.extracted is not None and len(verdict.extracted) <= 1010
    verdict.extracted.encode("utf-8")  # lone surrogate was escaped
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.correct = True  # type: ignore[misc]
    # The fast constructors build exactly what the dataclass constructor builds.
    assert Verdict.ok("e" * 5000) == Verdict(True, None, "", "e" * 5000)
    assert Verdict.fail("x", "\ud800" * 300) == Verdict(False, "x", "\ud800" * 300)
    with pytest.raises(ValueError):
        Verdict.fail(None)  # type: ignore[arg-type]


def test_non_integer_problem_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        verify("\\boxed{1}", [1.5], 1)  # type: ignore[list-item]
