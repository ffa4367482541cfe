"""The run-level test over training seeds (`rrr seeds`, rrr/driver/seeds.py; issue 29): each
run's effect against one vanilla evaluation, Student's t over runs, the between-seed SD net of
evaluation noise, Welch's test against the controls, the first-k re-analysis. Synthetic
results.json files; pure logic."""

from __future__ import annotations

import json
import math
import random

import pytest

from rrr.core.config import ConfigError
from rrr.core.stats import run_level, t_test, welch_test
from rrr.driver.cli import main
from rrr.driver.seeds import analyse, first_k

N, K = 200, 4


def _results(rates: tuple[float, float], seed: int, *, model: str, eval_seed: int = 0) -> dict:
    """N problems x K keyed samples, outcome j of problem i a coin with the given (first,
    second) success rates, drawn from (seed, i, j)."""
    per_query = []
    for i in range(N):
        rng = random.Random(f"{seed}:{i}")
        first = [int(rng.random() < rates[0]) for _ in range(K)]
        second = [max(f, int(rng.random() < rates[1])) for f in first]
        per_query.append({"key": f"p{i}", "first_outcomes": first, "second_outcomes": second})
    return {"model": model, "samples_per_problem": K, "noise": "keyed", "eval_seed": eval_seed,
            "temperature": 0.7, "per_query": per_query}  # fmt: skip


def _rate(results: dict, attempt: str) -> float:
    rates = [sum(q[f"{attempt}_outcomes"]) / len(q[f"{attempt}_outcomes"])
             for q in results["per_query"]]  # fmt: skip
    return sum(rates) / len(rates)


def test_the_run_level_test_is_t_over_the_runs_effects() -> None:
    vanilla = _results((0.6, 0.65), 0, model="vanilla")
    trained = [_results((0.6 + d, 0.65 + d), s, model=f"s{s}")
               for s, d in [(1, 0.02), (2, 0.05), (3, -0.01), (4, 0.03)]]  # fmt: skip
    result = analyse(vanilla, trained, [], [])
    for attempt in ("first", "second"):
        want = [_rate(t, attempt) - _rate(vanilla, attempt) for t in trained]
        got = [r["effect"] for r in result[attempt]["trained"]]
        assert got == pytest.approx(want)
        test = t_test(want)
        level = result[attempt]["run_level"]
        assert (level["mean"], level["p_value"], level["runs"]) == pytest.approx(
            (test.mean, test.p_value, 4)
        )
        # each run's SE is its paired test's: sd of the per-problem differences / sqrt(N)
        for r in result[attempt]["trained"]:
            assert 0 < r["se"] < 0.1 and r["problems"] == N
        se = math.sqrt(sum(r["se"] ** 2 for r in result[attempt]["trained"]) / 4)
        assert result[attempt]["eval_se"] == pytest.approx(se)
        assert result[attempt]["between_seed_sd"] == pytest.approx(
            math.sqrt(max(test.sd**2 - se**2, 0))
        )


def test_between_seed_sd_is_what_is_left_after_evaluation_noise() -> None:
    assert run_level([0.01, 0.03, 0.02, 0.04], [0.0] * 4).between_seed_sd == pytest.approx(
        t_test([0.01, 0.03, 0.02, 0.04]).sd
    )
    # effects no more spread than their evaluation noise: no seed variance left
    assert run_level([0.01, 0.012], [0.05, 0.05]).between_seed_sd == 0.0


def test_welch_matches_a_reference_value() -> None:
    # scipy.stats.ttest_ind([1.2, 2.5, 0.3, 1.9], [0.1, -0.4], equal_var=False)
    w = welch_test([1.2, 2.5, 0.3, 1.9], [0.1, -0.4])
    assert w.p_value == pytest.approx(0.03881873179858814, rel=1e-6)
    assert w.interval == pytest.approx((0.1358268335608841, 3.114173166439116), rel=1e-6)
    with pytest.raises(ValueError, match=">= 2 values"):
        welch_test([1.0], [2.0, 3.0])


def test_controls_and_the_mechanism_are_reported_beside_the_trained_runs() -> None:
    vanilla = _results((0.6, 0.65), 0, model="vanilla")
    trained = [_results((0.6, 0.70), s, model=f"s{s}") for s in (1, 2, 3)]
    controls = [_results((0.6, 0.65), s, model=f"c{s}") for s in (7, 8)]
    result = analyse(vanilla, trained, controls, trained[:2])
    part = result["second"]
    assert [r["model"] for r in part["controls"]] == ["c7", "c8"]
    welch = welch_test([r["effect"] for r in part["trained"]],
                       [r["effect"] for r in part["controls"]])  # fmt: skip
    assert part["trained_minus_control"]["p_value"] == pytest.approx(welch.p_value)
    assert part["trained_minus_control"]["mean"] > 0
    assert result["mechanism"]["run_level"]["runs"] == 2


def test_first_k_is_what_an_evaluation_of_k_samples_would_have_given() -> None:
    full = _results((0.5, 0.6), 3, model="m")
    cut = first_k(full, 2)
    assert cut["samples_per_problem"] == 2
    for q, c in zip(full["per_query"], cut["per_query"]):
        assert c["first_outcomes"] == q["first_outcomes"][:2]
        assert c["second_outcomes"] == q["second_outcomes"][:2]
    assert full["per_query"][0]["first_outcomes"] != []  # the original is untouched
    with pytest.raises(ConfigError, match="--k 8"):
        first_k(full, 8)


def test_runs_without_the_vanilla_evaluations_noise_are_refused() -> None:
    vanilla = _results((0.6, 0.65), 0, model="vanilla")
    other = _results((0.6, 0.65), 1, model="x", eval_seed=1)
    with pytest.raises(ConfigError, match="keyed noise"):
        analyse(vanilla, [other, other], [], [])
    with pytest.raises(ConfigError, match=">= 2 runs"):
        analyse(vanilla, [vanilla], [], [])


def test_the_command_writes_its_tables(tmp_path, capsys) -> None:
    paths = {}
    for name, rates, seed in [("v", (0.6, 0.65), 0), ("a", (0.62, 0.7), 1),
                              ("b", (0.61, 0.68), 2), ("c", (0.6, 0.65), 3),
                              ("d", (0.6, 0.66), 4)]:  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_results(rates, seed, model=name)))
        paths[name] = str(d)
    out = tmp_path / "seeds"
    args = ["seeds", "--vanilla", paths["v"], "--trained", paths["a"], paths["b"],
            "--control", paths["c"], paths["d"], "--k", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "seeds.json").read_text())
    assert set(result) == {"all", "first_2"}
    assert result["first_2"]["samples_per_problem"] == 2
    md = (out / "seeds.md").read_text()
    assert "Run-level (t over 2 runs, df 1)" in md and "Trained - control (Welch)" in md
    assert "The first 2 samples only" in capsys.readouterr().out
