"""The statistics behind `rrr eval --compare` (vanilla vs trained on the same problems)."""

from __future__ import annotations

import math

import pytest

from rrr.core.stats import binomial_two_sided_p, mcnemar, wilson_interval
from rrr.driver.evaluate import paired_tests


def test_wilson_interval_matches_textbook_values() -> None:
    # Reference values from the closed form (Wilson 1927), e.g. R's prop.test(correct=FALSE).
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(300, 500)
    assert lo == pytest.approx(0.5565, abs=1e-4) and hi == pytest.approx(0.6420, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_binomial_p_is_exact_and_two_sided() -> None:
    assert binomial_two_sided_p(0, 5) == pytest.approx(2 / 32)
    assert binomial_two_sided_p(1, 10) == pytest.approx(2 * 11 / 1024)
    assert binomial_two_sided_p(9, 10) == binomial_two_sided_p(1, 10)  # symmetric
    assert binomial_two_sided_p(5, 10) == 1.0 and binomial_two_sided_p(0, 0) == 1.0
    # Large n stays finite (log-space): 2000 flips, 900 heads is about 4.5 sigma.
    p = binomial_two_sided_p(900, 2000)
    assert 0 < p < 1e-4 and math.isfinite(p)


def test_mcnemar_counts_only_discordant_pairs() -> None:
    a = [True] * 50 + [False] * 50
    b = [True] * 50 + [True] * 12 + [False] * 38  # B fixes 12, breaks none
    t = mcnemar(a, b)
    assert (t.only_a, t.only_b, t.n) == (0, 12, 100)
    assert t.p_value == pytest.approx(2 * 0.5**12)
    assert t.difference == pytest.approx(0.12)
    lo, hi = t.difference_interval()
    assert 0 < lo < 0.12 < hi
    # Swapping one fix for one break: no longer significant.
    b2 = list(b)
    b2[0] = False
    assert mcnemar(a, b2).p_value > mcnemar(a, b).p_value
    with pytest.raises(ValueError, match="length"):
        mcnemar(a, b[:-1])


def test_paired_tests_match_problems_by_key_and_occurrence() -> None:
    def run(outcomes: list[tuple[str, bool, bool]]) -> dict:
        return {"per_query": [{"key": k, "first": f, "second": s} for k, f, s in outcomes]}

    # "x" twice (a generated source can repeat a problem); B lists them in another order and
    # holds one problem A never saw.
    a = run([("x", False, False), ("y", False, True), ("x", True, True)])
    b = run([("y", False, True), ("x", True, True), ("x", True, True), ("z", True, True)])
    out = paired_tests(a, b)
    assert out["paired_queries"] == 3
    assert out["first"]["only_b"] == 1 and out["first"]["only_a"] == 0
    assert out["second"]["only_b"] == 1
    assert paired_tests({}, b) == {}


# ----------------------------------------------------------------------------- issue 23


def test_t_distribution_matches_tables() -> None:
    from rrr.core.stats import t_cdf, t_quantile, t_two_sided_p

    # Reference values: R's pt / qt.
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.07338803, abs=1e-7)
    assert t_cdf(-3.0, 5) == pytest.approx(0.01504962, abs=1e-7)
    assert t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)
    assert t_quantile(0.8, 29) == pytest.approx(0.8541986, abs=1e-5)
    assert t_two_sided_p(1.959964, 1e9) == pytest.approx(0.05, abs=1e-5)  # -> normal
    assert t_cdf(0.0, 3) == pytest.approx(0.5) and t_two_sided_p(0.0, 3) == 1.0


def test_t_test_over_problems_and_its_degenerate_cases() -> None:
    from rrr.core.stats import t_test

    t = t_test([0.5, 0.0, 1.0, 0.25, 0.75])
    assert t.mean == pytest.approx(0.5) and t.sd == pytest.approx(math.sqrt(0.15625))
    lo, hi = t.interval
    assert lo == pytest.approx(0.5 - 2.776445 * t.se, abs=1e-5) and hi > 0.5
    same = t_test([0.0] * 10)  # a model compared with itself under the same noise
    assert same.p_value == 1.0 and same.interval == (0.0, 0.0)
    assert t_test([0.1] * 10).p_value < 1e-10


def test_minimum_detectable_effect_and_samples_for_it() -> None:
    from rrr.core.stats import (
        VarianceComponents,
        minimum_detectable_effect,
        samples_for_mde,
        variance_components,  # fmt: skip
    )

    # Issue 23's numbers: one sample a problem at discordance 0.42, 500 problems -> ~8 points.
    mde = minimum_detectable_effect(math.sqrt(0.42), 500)
    assert 0.079 < mde < 0.082
    # Halving the spread halves the MDE; four times the problems halve it too.
    assert minimum_detectable_effect(0.5, 500) == pytest.approx(mde * 0.5 / math.sqrt(0.42),
                                                                rel=1e-9)  # fmt: skip
    assert minimum_detectable_effect(1.0, 2000) < minimum_detectable_effect(1.0, 500) / 1.99
    # All within-problem noise: k samples divide it; a 3-point MDE over 517 problems at
    # discordance 0.42 needs k = 8, at a coupled 0.1 k = 2.
    assert samples_for_mde(0.03, 517, VarianceComponents(0.0, 0.42, 1)) == 8
    assert samples_for_mde(0.03, 517, VarianceComponents(0.0, 0.10, 1)) == 2
    assert samples_for_mde(0.03, 517, VarianceComponents(0.2, 0.1, 1)) is None  # between wins
    # Method of moments on simulated data recovers both components.
    import random

    rng = random.Random(0)
    diffs = []
    for _ in range(3000):
        effect = rng.gauss(0, 0.3)  # between-problem sd 0.3
        diffs.append([effect + rng.gauss(0, 0.5) for _ in range(4)])  # within sd 0.5
    c = variance_components(diffs)
    assert c.between == pytest.approx(0.09, abs=0.01) and c.within == pytest.approx(0.25, abs=0.01)


def test_discordance_pairs_samples_by_index() -> None:
    from rrr.core.stats import discordance

    assert discordance([[1, 0, 1], [0, 0]], [[1, 1, 1], [0, 1]]) == pytest.approx(2 / 5)
    assert discordance([], []) == 0.0


def test_placebo_false_positive_rate_is_near_alpha() -> None:
    """A model compared with itself (every problem's samples from one success rate): the
    paired t test over problems rejects about 5 % of the splits."""
    import random

    from rrr.core.stats import placebo

    rng = random.Random(1)
    pools = []
    for _ in range(400):
        p = rng.choice([0.0, 0.05, 0.3, 0.6, 0.9, 1.0])  # problem difficulty varies
        pools.append([int(rng.random() < p) for _ in range(8)])
    result = placebo(pools, k=4, splits=400, seed=2)
    assert 0.02 <= result.rate <= 0.09 and result.splits == 400 and result.n == 400
    with pytest.raises(ValueError, match="samples"):
        placebo([[1, 0]] * 5, k=2)


def test_paired_tests_on_k_samples_use_problems_as_the_unit() -> None:
    def run(outcomes: dict[str, list[int]], seed: int = 0) -> dict:
        return {
            "samples_per_problem": 4, "noise": "keyed", "eval_seed": seed, "temperature": 0.7,
            "per_query": [{"key": k, "first": sum(o), "second": sum(o), "first_outcomes": o,
                           "second_outcomes": o} for k, o in outcomes.items()],
        }  # fmt: skip

    a = run({"x": [1, 1, 0, 0], "y": [0, 0, 0, 0], "z": [1, 1, 1, 1]})
    b = run({"x": [1, 1, 1, 0], "y": [1, 0, 0, 0], "z": [1, 1, 1, 1]})
    out = paired_tests(a, b)
    assert out["coupling"] == "coupled" and out["paired_queries"] == 3
    first = out["first"]
    assert first["difference"] == pytest.approx((0.25 + 0.25 + 0) / 3)
    assert first["discordance"] == pytest.approx(2 / 12)
    assert (first["only_a"], first["only_b"]) == (0, 2)
    assert first["samples_for_target_mde"]["basis"] == "variance components"
    assert paired_tests(a, run({"x": [1, 1, 1, 0]}, seed=1))["coupling"] == "independent"
