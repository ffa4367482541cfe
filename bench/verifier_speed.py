"""Throughput of the safe verifiers against the naive ones public reward functions use.

Usage: python bench/verifier_speed.py [--seconds N]

Builds a realistic workload from the bundled samples (a few hundred characters of reasoning, then
the answer; about half correct, the rest wrong numbers / missed target / malformed), pins the
process to one core, and measures verifications per second for:

* countdown: ``rrr.verifiers.countdown.verify`` vs a TinyZero-style checker (regex-extract the last
  ``<answer>``/``\\boxed{}``, ``re.findall`` the numbers, ``eval`` with ``__builtins__=None``);
* apigen: ``rrr.verifiers.apigen.verify`` vs ``json.loads`` of each call plus ``==`` against the
gold
  list. The naive side gets the gold already parsed (its best case); ours gets the JSON string as
  it comes from the data.

Goals: ours >= 0.5x naive for both, and countdown >= 20,000 verifications/s.
Data: the bundled samples in ``<repo>/data`` (sources in data/SOURCES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, without installing the package

from rrr.core.tasks.countdown_gen import solve  # noqa: E402
from rrr.verifiers import apigen, countdown  # noqa: E402

COUNTDOWN_GOAL_PER_S = 20_000
RATIO_GOAL = 0.5


def sample_data() -> Path:
    return ROOT / "data"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pin_to_one_core() -> str:
    """Pin this process to one core so the numbers are single-core numbers."""
    if not hasattr(os, "sched_setaffinity"):
        return "affinity not supported; single process"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


# --- naive baselines, written the way public reward functions do it --------------------------


def naive_countdown(response: str, nums: Sequence[int], target: int) -> bool:
    """TinyZero's ``countdown.compute_score`` logic, extended to ``\\boxed{}`` like its forks."""
    matches = re.findall(r"<answer>(.*?)</answer>", response, re.DOTALL)
    if not matches:
        matches = re.findall(r"\\boxed\{(.*?)\}", response, re.DOTALL)
    if not matches:
        return False
    equation = matches[-1].strip()
    try:
        used = [int(n) for n in re.findall(r"\d+", equation)]
        if sorted(used) != sorted(nums):
            return False
        if not re.match(r"^[\d+\-*/().\s]+$", equation):
            return False
        result = eval(equation, {"__builtins__": None}, {})  # the unsafe part, on purpose
        return abs(float(result) - target) < 1e-5
    except Exception:
        return False


def naive_apigen(response: str, gold: list[dict[str, Any]], template: str) -> bool:
    """Regex the calls out, ``json.loads`` them, compare the list to the gold with ``==``."""
    try:
        if template == "qwen":
            blocks = re.findall(r"<tool_call>(.*?)</tool_call>", response, re.DOTALL)
            calls = [json.loads(block) for block in blocks]
        else:
            parsed = json.loads(response)
            calls = parsed if isinstance(parsed, list) else [parsed]
            calls = [{"name": c["name"], "arguments": c["parameters"]} for c in calls]
        return calls == gold
    except Exception:
        return False


# --- workloads -------------------------------------------------------------------------------


def reasoning(nums: Sequence[int], target: int, rng: random.Random) -> str:
    """A few hundred characters of plausible step-by-step text."""
    a, b = rng.sample(list(nums), 2)
    return (
        f"<think>We have the numbers {list(nums)} and need to reach {target}. "
        f"Let me try {a} + {b} = {a + b} first; that is {'above' if a + b > target else 'below'} "
        f"the target. What about {a} * {b} = {a * b}? Too far. Subtracting: {a} - {b} = {a - b}. "
        f"Combining with the remaining numbers should work, so let me check each step carefully "
        f"before writing the final equation.</think>\n"
    )


def countdown_workload(rng: random.Random) -> list[tuple[str, list[int], int]]:
    """About half correct; the rest wrong numbers, missed target or malformed."""
    cases = []
    for row in read_jsonl(sample_data() / "countdown_sample.jsonl"):
        nums, target = row["nums"], row["target"]
        equation = solve(nums, target)
        if equation is None:
            continue
        variants = [
            equation,
            equation,
            equation.replace("+", "-", 1) if "+" in equation else equation + " + 1",
            equation.replace(str(nums[0]), str(nums[0] + 1), 1),
            equation.replace("(", "", 1),
        ]
        for answer in variants:
            wrap = rng.choice(("<answer>{}</answer>", "The answer is \\boxed{{{}}}."))
            cases.append((reasoning(nums, target, rng) + wrap.format(answer), nums, target))
    rng.shuffle(cases)
    return cases


def render_calls(calls: list[dict[str, Any]], template: str) -> str:
    if template == "qwen":
        blocks = "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)
        return f"<think>The user asks for this; I will call the right tools.</think>\n{blocks}"
    objects = [{"name": c["name"], "parameters": c["arguments"]} for c in calls]
    return json.dumps(objects[0] if len(objects) == 1 else objects)


def apigen_workload(rng: random.Random) -> list[tuple[str, str, list[dict[str, Any]], str, str]]:
    """(response, gold JSON, gold parsed, tools JSON, template); about half correct."""
    cases = []
    for row in read_jsonl(sample_data() / "xlam_sample.jsonl"):
        gold = json.loads(row["answers"])
        wrong_name = [{**gold[0], "name": gold[0]["name"] + "_x"}, *gold[1:]]
        wrong_args = [{**gold[0], "arguments": {**gold[0]["arguments"], "extra": 1}}, *gold[1:]]
        for template in apigen.TEMPLATES:
            good = render_calls(gold, template)
            for response in (
                good,
                good,
                render_calls(wrong_name, template),
                render_calls(wrong_args, template),
                good[: len(good) // 2],
            ):
                cases.append((response, row["answers"], gold, row["tools"], template))
    rng.shuffle(cases)
    return cases


# --- measurement -----------------------------------------------------------------------------


def rates(ours: Callable[[], int], naive: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Best verifications per CPU-second of each, over alternating whole-workload passes.

    Passes are timed with ``time.process_time`` (this process's CPU time), so time spent
    descheduled on a busy machine does not count; alternating passes share whatever cache and
    frequency effects remain, and the best pass (as ``timeit`` reports the minimum) is the least
    disturbed estimate of each one's own cost.
    """
    ours(), naive()  # warm caches (gold JSON cache, regex compilation) before timing
    best = [0.0, 0.0]
    deadline = time.perf_counter() + 2 * seconds
    while time.perf_counter() < deadline:
        for index, run_all in enumerate((ours, naive)):
            start = time.process_time()
            done = run_all()
            best[index] = max(best[index], done / max(time.process_time() - start, 1e-9))
    return best[0], best[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="seconds per verifier (ours and naive alike)"
    )
    args = parser.parse_args(argv)
    print(pin_to_one_core())
    rng = random.Random(0)
    cd_cases = countdown_workload(rng)
    api_cases = apigen_workload(rng)

    def ours_cd() -> int:
        for response, nums, target in cd_cases:
            countdown.verify(response, nums, target)
        return len(cd_cases)

    def naive_cd() -> int:
        for response, nums, target in cd_cases:
            naive_countdown(response, nums, target)
        return len(cd_cases)

    def ours_api() -> int:
        for response, answers, _, tools, template in api_cases:
            apigen.verify(response, answers, tools, template)
        return len(api_cases)

    def naive_api() -> int:
        for response, _, gold, _, template in api_cases:
            naive_apigen(response, gold, template)
        return len(api_cases)

    report_agreement(cd_cases, api_cases)
    rows = [
        ("countdown", *rates(ours_cd, naive_cd, args.seconds), True),
        ("apigen", *rates(ours_api, naive_api, args.seconds), False),
    ]
    ok = print_table(rows)
    report_hostile()
    return 0 if ok else 1


def report_agreement(cd_cases: list, api_cases: list) -> None:
    """How often ours and naive agree, and the workload's share of correct responses."""
    results = {
        "countdown": (
            cd_cases,
            [countdown.verify(r, n, t).correct for r, n, t in cd_cases],
            [naive_countdown(r, n, t) for r, n, t in cd_cases],
        ),
        "apigen": (
            api_cases,
            [apigen.verify(r, a, tl, tp).correct for r, a, _, tl, tp in api_cases],
            [naive_apigen(r, g, tp) for r, _, g, _, tp in api_cases],
        ),
    }
    for name, (cases, ours, naive) in results.items():
        agree = sum(o == n for o, n in zip(ours, naive))
        mean_length = sum(len(case[0]) for case in cases) // len(cases)
        print(
            f"{name}: {len(cases)} responses (mean {mean_length} chars), correct: "
            f"{sum(ours)} by ours, {sum(naive)} by naive; agreement {agree}/{len(cases)}"
        )


def print_table(rows: list[tuple[str, float, float, bool]]) -> bool:
    print("\nverifications per CPU-second, one core, best pass")
    print(f"{'verifier':<10} {'ours/s':>10} {'naive/s':>10} {'ours/naive':>11}  goals")
    all_ok = True
    for name, ours, naive, has_floor in rows:
        ratio = ours / naive
        ok = ratio >= RATIO_GOAL and (not has_floor or ours >= COUNTDOWN_GOAL_PER_S)
        goal = f">= {RATIO_GOAL}x naive"
        if has_floor:
            goal += f", >= {COUNTDOWN_GOAL_PER_S:,}/s"
        verdict = "PASS" if ok else "FAIL"
        print(f"{name:<10} {ours:>10,.0f} {naive:>10,.0f} {ratio:>10.2f}x  {verdict} ({goal})")
        all_ok &= ok
    return all_ok


def report_hostile() -> None:
    """One crafted input: the naive checker's eval runs a power tower; ours rejects it at once."""
    nums, response = [9, 9, 6], "<answer>9**9**6</answer>"
    start = time.perf_counter()
    countdown.verify(response, nums, 1)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    naive_countdown(response, nums, 1)
    naive = time.perf_counter() - start
    print(
        f"\nhostile {response!r}: ours {ours * 1e6:.0f} us, naive {naive * 1e3:.0f} ms "
        "(9**9**7 takes the naive one seconds, 9**9**9 would not finish)"
    )


if __name__ == "__main__":
    sys.exit(main())
