"""How much of a step the fleet and the learner were both busy (rrr/core/timing.py,
rollout/overlap_frac, issue 31): busy spans are clipped to the step's own window, so the share
stays in [0, 1] whatever the spans are (one begun in the step before, one ending after, one
longer than the step as a retried rollout of a killed worker, none at all). Pure: no Ray."""

from __future__ import annotations

import math
import random

import pytest

from rrr.core.timing import both_busy_s, both_busy_share

STEP = (10.0, 20.0)  # a step's window: 10 s


@pytest.mark.parametrize(
    ("fleet", "learner", "seconds"),
    [
        ([(10.0, 15.0)], [(12.0, 20.0)], 3.0),  # inside the step: [12, 15]
        ([(10.0, 20.0)], [(10.0, 20.0)], 10.0),  # both busy the whole step
        ([(10.0, 12.0)], [(12.0, 20.0)], 0.0),  # one after the other: touching, not shared
        ([(12.0, 14.0), (16.0, 18.0)], [(13.0, 17.0)], 2.0),  # [13, 14] and [16, 17]
        ([(11.0, 15.0), (13.0, 16.0)], [(10.0, 20.0)], 5.0),  # one side's spans union: [11, 16]
        ([(11.0, 14.0)], [(12.0, 13.0), (12.5, 16.0)], 2.0),  # [12, 14]
    ],
    ids=["inside", "whole-step", "sequential", "two-rollouts", "union-a", "union-b"],
)
def test_exact_values_for_simple_spans(fleet, learner, seconds):
    assert both_busy_s(STEP, fleet, learner) == pytest.approx(seconds)
    assert both_busy_s(STEP, learner, fleet) == pytest.approx(seconds)  # symmetric
    assert both_busy_share(STEP, fleet, learner) == pytest.approx(seconds / 10.0)


def test_a_span_that_starts_before_the_step_counts_from_the_step_start():
    # the rollout ran 8 s in the previous step; only [10, 14] is this step's
    assert both_busy_s(STEP, [(2.0, 14.0)], [(10.0, 20.0)]) == pytest.approx(4.0)
    assert both_busy_share(STEP, [(2.0, 14.0)], [(10.0, 20.0)]) == pytest.approx(0.4)


def test_a_span_that_ends_after_the_step_or_still_runs_counts_to_the_step_end():
    assert both_busy_share(STEP, [(15.0, 40.0)], [(10.0, 20.0)]) == pytest.approx(0.5)
    assert both_busy_share(STEP, [(15.0, math.inf)], [(10.0, 20.0)]) == pytest.approx(0.5)


def test_a_rollout_longer_than_the_step_gives_at_most_the_whole_step():
    """The killed-worker case: a rollout retried after its worker was replaced spans more than
    a step (here 40 s around a 10 s step), beside a learner busy the whole step."""
    assert both_busy_s(STEP, [(0.0, 40.0)], [(9.0, 21.0)]) == pytest.approx(10.0)
    assert both_busy_share(STEP, [(0.0, 40.0)], [(9.0, 21.0)]) == 1.0
    # and beside a learner busy part of it: the learner's part
    assert both_busy_share(STEP, [(0.0, 40.0)], [(11.0, 13.0)]) == pytest.approx(0.2)


def test_the_reported_cases_would_now_stay_within_one():
    """The previous definition divided the overlap with the previous step's learning by this
    step's time (0.86, 1.21, 0.99, 2.65 in one run). A 26.5 s learning beside a rollout in step
    s-1, then a 10 s step s: 2.65 then; now each step reports its own share."""
    previous, this = (0.0, 30.0), (30.0, 40.0)
    rollout, learn_before, learn_now = (2.0, 31.0), (3.0, 29.5), (31.0, 39.0)
    assert both_busy_share(previous, [rollout], [learn_before]) == pytest.approx(26.5 / 30.0)
    assert both_busy_share(this, [rollout], [learn_now]) == 0.0  # the rollout was done at 31


@pytest.mark.parametrize(
    ("window", "fleet", "learner"),
    [
        (STEP, [], [(10.0, 20.0)]),  # nothing started ahead (a sequential run, the last step)
        (STEP, [(10.0, 20.0)], []),
        (STEP, [(15.0, 15.0), (18.0, 17.0)], [(10.0, 20.0)]),  # empty and reversed spans
        (STEP, [(0.0, 5.0)], [(0.0, 30.0)]),  # before the step
        (STEP, [(25.0, math.inf)], [(0.0, 30.0)]),  # after it
        (STEP, [(math.nan, 15.0)], [(10.0, 20.0)]),  # a broken span is no span
        ((20.0, 20.0), [(0.0, 40.0)], [(0.0, 40.0)]),  # an empty window
        ((20.0, 10.0), [(0.0, 40.0)], [(0.0, 40.0)]),  # a reversed one
    ],
)
def test_nothing_shared_is_zero(window, fleet, learner):
    assert both_busy_s(window, fleet, learner) == 0.0
    assert both_busy_share(window, fleet, learner) == 0.0


def test_the_share_is_in_zero_one_for_any_spans():
    """Random spans of every kind (before, across, after the window, longer than it, empty,
    still running) on both sides: the seconds never exceed the window, the share is in [0, 1]
    and matches a fine sampling of the window."""
    rng = random.Random(31)
    for _ in range(300):
        window = (rng.uniform(0, 10), rng.uniform(10, 20))

        def spans() -> list[tuple[float, float]]:
            out = []
            for _ in range(rng.randrange(4)):
                start = rng.uniform(-10, 30)
                end = rng.choice([start + rng.uniform(-2, 40), math.inf])
                out.append((start, end))
            return out

        fleet, learner = spans(), spans()
        seconds = both_busy_s(window, fleet, learner)
        share = both_busy_share(window, fleet, learner)
        assert 0.0 <= seconds <= window[1] - window[0] + 1e-9
        assert 0.0 <= share <= 1.0
        n = 2000  # midpoints of n equal slices of the window
        width = (window[1] - window[0]) / n
        points = (window[0] + (k + 0.5) * width for k in range(n))

        def busy(t: float, side: list[tuple[float, float]]) -> bool:
            return any(s <= t < e for s, e in side)

        sampled = sum(busy(t, fleet) and busy(t, learner) for t in points) / n
        # each span edge inside the window can misplace at most one slice
        edges = 2 * (len(fleet) + len(learner))
        assert share == pytest.approx(sampled, abs=edges / n + 1e-9)
