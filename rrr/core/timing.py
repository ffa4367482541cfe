"""Named stage timers (as verl's `marked_timer`): each stage of a step is timed by name and
reported with its throughput, so a slow step says which stage made it slow; and how much of a
step two sides (the fleet and the learner) were busy at once."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Add the wall time of the block to timings[name] (seconds; accumulates on re-entry)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


Span = tuple[float, float]  # (start, end) in time.perf_counter() seconds; end may be math.inf


def _within(window: Span, spans: Iterable[Span]) -> list[Span]:
    """The spans clipped to the window, merged, in order: disjoint parts of the window. Empty
    (or NaN) spans are dropped; an end of math.inf (still running) ends at the window's end."""
    clipped = sorted(
        (max(start, window[0]), min(end, window[1]))
        for start, end in spans
        if max(start, window[0]) < min(end, window[1])
    )
    merged: list[list[float]] = []
    for start, end in clipped:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def both_busy_s(window: Span, a: Iterable[Span], b: Iterable[Span]) -> float:
    """Seconds of `window` during which something of `a` and something of `b` both ran.

    Each side is unioned first (two spans of one side at once count once) and every span is
    clipped to the window, so the result is at most the window's length however long the spans
    are: a rollout that began in the step before, a rollout that was retried and ran longer
    than a step, one still running at the window's end (end = math.inf) all count only for the
    part inside the window."""
    xs, ys = _within(window, a), _within(window, b)
    total, i, j = 0.0, 0, 0
    while i < len(xs) and j < len(ys):
        total += max(0.0, min(xs[i][1], ys[j][1]) - max(xs[i][0], ys[j][0]))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


def both_busy_share(window: Span, a: Iterable[Span], b: Iterable[Span]) -> float:
    """The share of `window` (a step's own wall-clock span) during which `a` and `b` were both
    busy: both_busy_s / the window's length, always in [0, 1] (0 for an empty window).

    Why a window: the numerator and the denominator must be measured over the same interval.
    Dividing the overlap of a rollout with the *previous* step's learning by *this* step's time
    (as rollout/overlap_frac once did) gave shares above 1 (2.65 in a one-step-off run with a
    killed rollout worker) whenever this step was shorter than the one before."""
    length = window[1] - window[0]
    if not length > 0:
        return 0.0
    return min(1.0, both_busy_s(window, a, b) / length)
