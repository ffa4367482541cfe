"""The statistics behind `rrr eval --compare` (vanilla vs trained on the same problems)."""

from __future__ import annotations

import math

import pytest

from rrr.driver.evaluate import paired_tests
from rrr.stats import binomial_two_sided_p, mcnemar, wilson_interval


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
