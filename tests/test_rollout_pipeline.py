"""Rollouts ahead of the learner (rrr/driver/rollout_pipeline.py, issue 22): the staleness bound
under a slow learner and a slow fleet, one version per batch, no push during a rollout, and
max_staleness=0 as the sequential loop. The driver's loop order is replayed here with sleeps
standing in for generation and learning; tests/test_train_real.py runs it with real actors."""

from __future__ import annotations

import math
import threading
import time

import pytest

from rrr.core.timing import both_busy_share
from rrr.driver.rollout_pipeline import (
    RolloutAbandoned,
    RolloutPipeline,
    VersionMixError,
    overlap_s,
)


class Stamps(list):
    """A batch's sample versions, as rrr.core.episodes.EpisodeBatch.versions() reports them."""

    def versions(self) -> set[int]:
        return set(self)


class Fleet:
    """Records what it did and when; its weights are a version number."""

    def __init__(self, gen_s: float) -> None:
        self.gen_s, self.version = gen_s, 0
        self.log: list[tuple[str, int, float, float]] = []  # (what, step/version, start, end)
        self.busy = threading.Lock()
        self.cursor = 0

    def produce(self, step: int):
        assert self.busy.acquire(blocking=False), "two rollouts at once"
        t0 = time.perf_counter()
        version = self.version
        time.sleep(self.gen_s)
        assert self.version == version, "weights changed during a rollout"
        self.cursor += 1
        self.log.append(("rollout", step, t0, time.perf_counter()))
        self.busy.release()
        # a group's episodes carry the version they were sampled with
        return Stamps([version] * 4), {}, {"consumed": self.cursor}

    def push(self, version: int) -> None:
        assert self.busy.acquire(blocking=False), "push during a rollout"
        t0 = time.perf_counter()
        self.version = version
        self.log.append(("push", version, t0, time.perf_counter()))
        self.busy.release()


def drive(n: int, gen_s: float, learn_s: float, every: int = 1, steps: int = 6):
    """The train loop's order (rrr/driver/train.py): take, start ahead, learn, idle, push."""
    fleet = Fleet(gen_s)
    pipe = RolloutPipeline(fleet.produce, n)
    taken, learning = [], []
    for step in range(1, steps + 1):
        r = pipe.take(step)
        taken.append(r)
        if step < steps:
            pipe.start_ahead(step + 1)
        t0 = time.perf_counter()
        time.sleep(learn_s)
        learning.append((t0, time.perf_counter()))
        if step % every == 0:
            pipe.idle()
            fleet.push(step)
            pipe.pushed(step)
    pipe.close()
    return taken, learning, fleet


@pytest.mark.parametrize(("gen_s", "learn_s"), [(0.05, 0.01), (0.01, 0.05)])
@pytest.mark.parametrize("n", [1, 2])
def test_staleness_bound_holds_under_a_slow_learner_or_a_slow_fleet(n, gen_s, learn_s):
    taken, learning, _ = drive(n, gen_s, learn_s)
    assert [r.step for r in taken] == list(range(1, 7))
    assert all(0 <= r.staleness() <= n for r in taken)
    assert [r.staleness() for r in taken] == [0] + [1] * 5  # one rollout in flight at a time
    for r in taken:  # one version per batch, the one it is stamped with
        assert set(r.episodes) == {r.version}
    # generation overlapped learning: rollout s+1 ran during step s's learning
    shared = sum(overlap_s((r.started, r.finished), learning[r.step - 2]) for r in taken[1:])
    assert shared > 0.5 * 5 * min(gen_s, learn_s)


def test_zero_is_the_sequential_loop():
    taken, learning, fleet = drive(0, 0.01, 0.01)
    assert [r.staleness() for r in taken] == [0] * 6
    kinds = [(what, k) for what, k, _, _ in fleet.log]
    expected = [x for s in range(1, 7) for x in (("rollout", s), ("push", s))]
    assert kinds == expected
    for r, (l0, _) in zip(taken, learning):
        assert r.finished <= l0  # nothing generated while the learner works


def test_bound_counts_the_sync_interval():
    # pushes every 2 steps: a batch started ahead at an odd step would be 2 updates stale
    taken, _, _ = drive(1, 0.01, 0.01, every=2)
    assert max(r.staleness() for r in taken) <= 1
    taken, _, _ = drive(2, 0.01, 0.01, every=2)
    assert max(r.staleness() for r in taken) == 2


def test_checkpoint_cursor_is_the_trained_batchs_and_errors_surface_in_take():
    taken, _, _ = drive(1, 0.01, 0.01, steps=3)
    assert [r.cursor["consumed"] for r in taken] == [1, 2, 3]

    def broken(step):
        raise RuntimeError("engine died")

    pipe = RolloutPipeline(broken, 1)
    assert pipe.start_ahead(1) is True
    with pytest.raises(RuntimeError, match="engine died"):
        pipe.take(1)
    pipe.close()
    pipe = RolloutPipeline(lambda s: (Stamps(), {}, {"consumed": 0}), 1)
    pipe.start_ahead(2)
    with pytest.raises(RuntimeError, match="taken at step 3"):
        pipe.take(3)
    with pytest.raises(ValueError, match=">= 0"):
        RolloutPipeline(broken, -1)


def test_a_batch_that_mixes_versions_is_refused():
    pipe = RolloutPipeline(lambda s: (Stamps([0, 0, 1]), {}, {"consumed": 1}), 0)
    with pytest.raises(VersionMixError, match=r"versions \[0, 1\]"):
        pipe.take(1)
    pipe = RolloutPipeline(lambda s: (Stamps([1, 1]), {}, {"consumed": 1}), 0)
    with pytest.raises(VersionMixError, match="version 0 alone"):
        pipe.take(1)  # the fleet holds version 0 by the driver's count: the stamps disagree


def test_a_rollout_abandoned_ahead_is_made_again_from_the_synced_fleet():
    """A worker replaced while the rollout ran ahead (the train loop's on_restart raises
    RolloutAbandoned): take() resyncs the fleet and rolls out again, at staleness 0, with the
    same draw; the version stamps then agree."""
    state = {"version": 0, "cursor": 0, "resyncs": 0, "lose_worker": True}

    def produce(step):
        drawn_from = state["cursor"]
        state["cursor"] += 1  # this step's draw
        if state["lose_worker"]:
            state["lose_worker"] = False
            state["cursor"] = drawn_from  # put the draw back, as train.produce does
            raise RolloutAbandoned("worker 1 replaced")
        return Stamps([state["version"]] * 4), {}, {"consumed": state["cursor"]}

    def resync():
        state["resyncs"] += 1
        state["version"] = 1  # the learner trained step 1
        return 1

    pipe = RolloutPipeline(produce, 1, resync=resync)
    state["lose_worker"] = False
    first = pipe.take(1)
    state["lose_worker"] = True  # the ahead rollout loses a worker while step 1 trains
    assert pipe.start_ahead(2)
    pipe.idle()
    second = pipe.take(2)
    assert (second.version, second.staleness(), second.episodes.versions()) == (1, 0, {1})
    assert [first.cursor["consumed"], second.cursor["consumed"]] == [1, 2]  # nothing skipped
    assert (pipe.abandoned, state["resyncs"]) == (1, 1)
    pipe.close()
    without = RolloutPipeline(lambda s: (_ for _ in ()).throw(RolloutAbandoned("x")), 0)
    with pytest.raises(RolloutAbandoned):
        without.take(1)  # no resync given: the caller sees it


def test_running_ahead_is_true_only_while_the_ahead_rollout_generates():
    gate = threading.Event()
    seen = []

    def produce(step):
        gate.wait(5)
        return Stamps([0]), {}, {"consumed": step}

    pipe = RolloutPipeline(produce, 1)
    seen.append(pipe.running_ahead)
    pipe.start_ahead(2)
    seen.append(pipe.running_ahead)
    gate.set()
    pipe.idle()
    seen.append(pipe.running_ahead)
    pipe.take(2)
    pipe.close()
    assert seen == [False, True, False]


def test_background_spans_give_each_step_its_own_overlap_share():
    """rollout/overlap_frac as the train loop computes it (rrr/driver/train.py train_step):
    within each step's own window, the background rollout's spans against the learner's. Every
    step's share is in [0, 1]; a step that starts a rollout ahead overlaps, the last one (none
    ahead) does not; an abandoned rollout (a replaced worker) counts for the time it ran."""
    lose, fleet = {"worker": False}, {"version": 0}

    def produce(step):
        version = fleet["version"]
        time.sleep(0.03)
        if lose["worker"]:
            lose["worker"] = False
            raise RolloutAbandoned("worker 1 replaced")
        return Stamps([version] * 4), {}, {"consumed": step}

    pipe = RolloutPipeline(produce, 1, resync=lambda: fleet["version"])
    shares, ahead = [], []
    for step in range(1, 4):
        t_step = time.perf_counter()
        pipe.take(step)
        lose["worker"] = step == 2  # step 3's rollout loses its worker while step 2 learns
        if step < 3:
            pipe.start_ahead(step + 1)
        learn_start = time.perf_counter()
        time.sleep(0.05)
        learn_span = (learn_start, time.perf_counter())
        pipe.idle()
        fleet["version"] = step  # the push
        pipe.pushed(step)
        window = (t_step, time.perf_counter())
        spans = pipe.background_spans(since=t_step)
        ahead.append(spans)
        shares.append(both_busy_share(window, spans, [learn_span]))
    pipe.close()
    assert pipe.abandoned == 1
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert shares[0] > 0 and shares[1] > 0 and shares[2] == 0
    # idle() waited for each before the step ended: one finite span in steps 1 and 2 (step 2's
    # the abandoned one), none in step 3 (its rollout was made again in take: waited for)
    assert [len(spans) for spans in ahead] == [1, 1, 0]
    assert all(end < math.inf for spans in ahead for _, end in spans)


def test_close_stops_a_rollout_ahead_at_its_next_generate_call():
    """A run that ends (a lost learner rank, a signal) drops the rollout started ahead: close
    waits only for the generate call in progress, the next one is refused, and the fleet
    generates again for whoever uses it next."""
    from rrr.actors.rollout_worker import GenerateCancelled

    cancel, calls, started = threading.Event(), [], threading.Event()

    def generate() -> None:  # RolloutFleet.generate's check, then a call that takes 0.2 s
        if cancel.is_set():
            raise GenerateCancelled("refused")
        started.set()
        time.sleep(0.2)
        calls.append(1)

    def produce(step):
        for _ in range(20):  # a rollout of 20 phases: 4 s if run to its end
            generate()
        return Stamps([0]), {}, {"consumed": step}

    pipe = RolloutPipeline(produce, 1, cancel=cancel)
    pipe.take(1)
    calls.clear()
    pipe.start_ahead(2)
    started.wait(5)
    t0 = time.perf_counter()
    pipe.close()
    assert time.perf_counter() - t0 < 1.0, "close must not wait for the whole rollout"
    assert 1 <= len(calls) < 20 and not cancel.is_set()
    generate()  # the next run generates
