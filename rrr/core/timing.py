"""Named stage timers (as verl's `marked_timer`): each stage of a step is timed by name and
reported with its throughput, so a slow step says which stage made it slow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Add the wall time of the block to timings[name] (seconds; accumulates on re-entry)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
