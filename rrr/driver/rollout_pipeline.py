"""Rollouts ahead of the learner, with bounded staleness (issue 22; rollout.max_staleness).

With max_staleness = 0 this is today's loop exactly: each step's rollout is produced when the
step asks for it, from the weights the learner last pushed. With N >= 1 the rollout of step s+1
starts, in one background thread, as soon as step s has its batch, so the fleet generates while
the learner trains (verl's one-step-off, OpenRLHF's async training).

Versions: the policy version of a batch is the number of learner updates in the weights that
sampled it; the learner trains step s at version s-1, so a batch's staleness is s-1-version.
A rollout is started early only when its staleness at training time stays <= N; one rollout is
in flight at a time (the fleet is one pipeline; generating two batches at once would only split
it), and the fleet's weights change only between rollouts (`idle` before every push), so every
batch, and every group in it, is sampled by one version. The samples carry the version the
engine that drew them held (rrr.core.generation.Sample.version); `take` checks every part of every
episode against the version the batch should have, and refuses a batch that mixes versions.

A rollout worker that dies mid-rollout is replaced by the fleet. When the learner's weights are
still the fleet's version, the replacement is given them and the lost shard is re-sent (the
fleet's on_restart, as in a sequential run). Otherwise (the learner is training beside a rollout
started ahead, or has stepped since the last push) giving the replacement the learner's weights
would mix versions inside the batch, so on_restart raises RolloutAbandoned instead: the rollout
is dropped (its draw is put back, `abandoned` counts it), and `take` syncs the whole fleet
(`resync`) and makes the step's rollout again, from the learner's weights (staleness 0).

Resume: a rollout records the data cursor right after its draw. A checkpoint saves the cursor of
the batch it trained, so a prefetched batch still in flight is drawn again after a resume:
nothing is skipped, nothing is trained twice (its episodes are sampled anew; `dropped_in_flight`
counts it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from rrr.core.errors import RRRError

log = logging.getLogger(__name__)


class RolloutAbandoned(RRRError, RuntimeError):
    """A replaced rollout worker cannot be given the rollout's weights: make the rollout again."""


class VersionMixError(RRRError, RuntimeError):
    """A batch holds samples of another policy version than it should (a bug, never trained)."""


class Stamped(Protocol):
    def versions(self) -> set[int]:
        """The policy versions that sampled the batch's parts (rrr.core.episodes.EpisodeBatch)."""
        ...


@dataclass
class Rollout:
    """One step's episodes and where they came from."""

    step: int  # the learner step that trains it
    version: int  # learner updates in the weights that sampled it (checked on every sample)
    episodes: Stamped  # rrr.core.episodes.EpisodeBatch
    draw_metrics: dict[str, float]  # rrr.driver.draw.step_rollout's
    cursor: dict[str, Any]  # the data cursor right after this rollout's draw
    started: float  # time.perf_counter() at start and end
    finished: float

    def staleness(self) -> int:
        return self.step - 1 - self.version


# produce(step) -> (episodes, the draw's metrics, cursor after the draw); runs in one thread.
# A produce that raises RolloutAbandoned must put its draw back first.
Produce = Callable[[int], tuple[Stamped, dict[str, float], dict[str, Any]]]


class RolloutPipeline:
    def __init__(
        self,
        produce: Produce,
        max_staleness: int,
        fleet_version: int = 0,
        resync: Callable[[], int] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """`resync()` pushes the learner's weights to the whole fleet and returns their
        version; it is called only after a rollout was abandoned. `cancel`: the fleet's
        (RolloutFleet.cancel), set while `close` drops a rollout, so that the rollout stops at
        its next generate call instead of running to its end."""
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.produce, self.max_staleness, self.resync = produce, max_staleness, resync
        self.cancel = cancel
        self.fleet_version = fleet_version  # learner updates in the fleet's weights
        self.abandoned = 0  # rollouts dropped because a worker was replaced mid-rollout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout")
        self._ahead: tuple[int, Future[Rollout]] | None = None
        # [start, end] of the rollouts run in the background (end = math.inf while one runs)
        self._spans: list[list[float]] = []

    def _run(self, step: int, version: int) -> Rollout:
        t0 = time.perf_counter()
        episodes, draw_metrics, cursor = self.produce(step)
        return Rollout(step, version, episodes, draw_metrics, cursor, t0, time.perf_counter())

    def _run_ahead(self, step: int, version: int, span: list[float]) -> Rollout:
        try:
            return self._run(step, version)
        finally:  # before the future is done, an abandoned rollout included
            span[1] = time.perf_counter()

    def take(self, step: int) -> Rollout:
        """The rollout step `step` trains: the one started ahead for it, else one made now;
        an abandoned one is made again after a resync. Its samples' versions are checked."""
        rollout = None
        if self._ahead is not None:
            ahead_step, future = self._ahead
            self._ahead = None
            if ahead_step != step:  # a bug in the caller, never a silent reorder
                raise RuntimeError(f"rollout for step {ahead_step} taken at step {step}")
            rollout = self._abandonable(future.result)
        if rollout is None:
            rollout = self._abandonable(lambda: self._run(step, self.fleet_version))
        if rollout is None:  # abandoned again: a second replaced worker; the fleet is in sync
            rollout = self._run(step, self.fleet_version)
        seen = rollout.episodes.versions()
        if seen - {rollout.version}:
            raise VersionMixError(
                f"step {step}'s batch holds samples of policy versions {sorted(seen)}; it was "
                f"to be sampled by version {rollout.version} alone"
            )
        return rollout

    def _abandonable(self, make: Callable[[], Rollout]) -> Rollout | None:
        try:
            return make()
        except RolloutAbandoned as exc:
            if self.resync is None:
                raise
            self.abandoned += 1
            log.warning("rollout abandoned (%s): syncing the fleet and rolling out again", exc)
            self.fleet_version = self.resync()
            return None

    def start_ahead(self, step: int) -> bool:
        """Start the rollout of `step` now, while the learner trains step-1, if its staleness
        when trained (step-1 - fleet version) stays within the bound. True if started."""
        if self.max_staleness == 0 or self._ahead is not None:
            return False
        if step - 1 - self.fleet_version > self.max_staleness:
            return False  # the fleet's weights are too old (e.g. sync.every_n_steps > 1)
        span = [time.perf_counter(), math.inf]
        self._spans.append(span)
        self._ahead = (step, self._pool.submit(self._run_ahead, step, self.fleet_version, span))
        return True

    def background_spans(self, since: float) -> list[tuple[float, float]]:
        """When the fleet generated beside the driver since `since` (time.perf_counter()):
        the (start, end) of each rollout started ahead that ran then, an abandoned one
        included; end is math.inf while it still runs. A rollout made in `take` is not one:
        the driver waits for it."""
        self._spans = [span for span in self._spans if span[1] >= since]
        return [(start, end) for start, end in self._spans]

    def idle(self) -> None:
        """Wait until no rollout is running (call before the fleet's weights change). The
        finished rollout stays queued for its step."""
        if self._ahead is not None:
            self._ahead[1].exception()  # waits; its error (if any) is raised by take()

    def pushed(self, version: int) -> None:
        self.fleet_version = version

    @property
    def in_flight(self) -> int:
        return 0 if self._ahead is None else 1

    @property
    def running_ahead(self) -> bool:
        """A rollout started ahead is generating now (so the learner may be training)."""
        return self._ahead is not None and not self._ahead[1].done()

    def close(self) -> None:
        """Stop: a rollout started ahead is dropped (its failures are drawn again after a
        resume, see the module docstring). It is waited for, since the fleet is then used again
        (a learner restart pushes to it), but only to the end of the generate call it is in:
        `cancel` makes its next call raise. A lost learner rank used to wait here for the whole
        rollout (37-50 s on configs/cluster-cpu.yaml, issue 32)."""
        if self.running_ahead and self.cancel is not None:
            self.cancel.set()
        try:
            self.idle()
        finally:
            if self.cancel is not None:
                self.cancel.clear()  # the next run's rollouts generate again
        self._ahead = None
        self._pool.shutdown(wait=True)


def overlap_s(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Seconds two [start, end] intervals share (the fleet busy while the learner is)."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
