"""The verifier pool on real Ray actors: correct scoring; crashes / hangs scored as
`verifier_error` without stalling the batch; actors killed mid-batch (`ray.kill`, SIGKILL)
retried on the other actor, or scored `verifier_error` when the retry dies too."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray

from rrr.actors.verifier_pool import VERIFIER_ERROR, VerifierPool
from rrr.core.tasks.countdown import CountdownTask


class FaultyCountdown(CountdownTask):
    """Countdown whose verifier crashes on 'CRASH' and hangs on 'HANG' (a stand-in for a
    verifier bug or a pathological input)."""

    def verify(self, row, response):
        if "CRASH" in response:
            raise RuntimeError("boom")
        if "HANG" in response:
            time.sleep(60)
        return super().verify(row, response)


ROW = {"nums": [1, 2, 3], "target": 6}


def test_pool_scores_batches_in_order(ray_local):
    pool = VerifierPool(CountdownTask("qwen"), num_workers=2, batch_size=3, timeout_s=30)
    try:
        items = [(ROW, r"\boxed{1+2+3}"), (ROW, r"\boxed{1+2+2}"), (ROW, "no idea")] * 3
        verdicts = pool.verify(items)
        assert [v.correct for v in verdicts] == [True, False, False] * 3
        assert [v.error for v in verdicts[:3]] == [None, "wrong_numbers", "invalid_equation"]
        assert pool.counters["verified"] == 9 and pool.counters[VERIFIER_ERROR] == 0
    finally:
        pool.shutdown()


def test_crash_and_hang_score_verifier_error_and_do_not_stall(ray_local):
    pool = VerifierPool(FaultyCountdown("qwen"), num_workers=2, batch_size=2, timeout_s=3)
    try:
        items = [(ROW, r"\boxed{1+2+3}"), (ROW, "CRASH"),  # batch 0 -> actor 0
                 (ROW, "HANG"), (ROW, r"\boxed{1+2+3}"),  # batch 1 -> actor 1 (hangs)
                 (ROW, r"\boxed{3*2*1}"), (ROW, r"\boxed{6}")]  # batch 2 -> actor 0  # fmt: skip
        t0 = time.monotonic()
        verdicts = pool.verify(items)
        elapsed = time.monotonic() - t0
        assert elapsed < 20, elapsed  # bounded by the deadline, not the 60 s hang
        assert len(verdicts) == len(items)
        assert verdicts[0].correct and verdicts[4].correct
        assert verdicts[1].error == VERIFIER_ERROR and "boom" in verdicts[1].detail
        # The hung batch is scored as failed, both of its items.
        assert [v.error for v in verdicts[2:4]] == [VERIFIER_ERROR, VERIFIER_ERROR]
        assert verdicts[5].error == "wrong_numbers"
        assert pool.counters[VERIFIER_ERROR] == 3
        # The hung actor was restarted: the pool still works afterwards.
        assert [v.correct for v in pool.verify([(ROW, r"\boxed{1*2*3}")] * 4)] == [True] * 4
    finally:
        pool.shutdown()


# --- verifier actors killed from outside mid-batch ------------------------------------------

SLOW_S = 1.5


class SlowCountdown(CountdownTask):
    """Countdown whose verifier takes SLOW_S on 'SLOW' (so a kill lands mid-batch) and kills
    its own process on 'DIE' (a verifier that segfaults on some input: every actor that tries
    it dies)."""

    def verify(self, row, response):
        if "SLOW" in response:
            time.sleep(SLOW_S)
        if "DIE" in response:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().verify(row, response)


def _warm_pool(task, **kwargs) -> VerifierPool:
    pool = VerifierPool(task, **kwargs)
    ray.get([a.ping.remote() for a in pool.actors])  # started, so the kill timing is the batch's
    return pool


@pytest.mark.parametrize("how", ["ray_kill", "sigkill"])
def test_actor_killed_mid_batch_is_retried_on_the_other(ray_local, how):
    pool = _warm_pool(SlowCountdown("qwen"), num_workers=2, batch_size=2, timeout_s=30)
    try:
        victim = pool.actors[0]
        old_pid = ray.get(victim.pid.remote())

        def kill() -> None:
            if how == "ray_kill":
                ray.kill(victim, no_restart=False)
            else:
                os.kill(old_pid, signal.SIGKILL)

        # 4 batches: 0 and 2 on the victim (3 s of work), 1 and 3 on the other actor. The kill
        # lands while batch 0 sleeps and batch 2 waits in the victim's queue.
        items = [(ROW, r"SLOW \boxed{1+2+3}"), (ROW, r"\boxed{1+2+2}")] * 4
        killer = threading.Timer(SLOW_S / 3, kill)
        t0 = time.monotonic()
        killer.start()
        verdicts = pool.verify(items)
        elapsed = time.monotonic() - t0
        killer.join()

        # Every item has its real verdict: the victim's 4 items were re-verified elsewhere.
        assert [v.correct for v in verdicts] == [True, False] * 4
        assert [v.error for v in verdicts] == [None, "wrong_numbers"] * 4
        assert pool.counters["retried"] == 4, pool.counters
        assert pool.counters[VERIFIER_ERROR] == 0
        # Serial on the survivor: its 2 batches plus the 2 retried ones, 4 x SLOW_S.
        assert elapsed < 4 * SLOW_S + 10, elapsed
        # Ray restarted the victim (max_restarts=-1) in a new process; the pool still works.
        assert [v.correct for v in pool.verify([(ROW, r"\boxed{1*2*3}")] * 4)] == [True] * 4
        assert ray.get(victim.pid.remote(), timeout=30) != old_pid
        print(f"{how}: 8 verdicts in {elapsed:.1f}s, retried={pool.counters['retried']}")
    finally:
        pool.shutdown()


def test_item_that_kills_every_actor_scores_verifier_error(ray_local):
    pool = _warm_pool(SlowCountdown("qwen"), num_workers=2, batch_size=2, timeout_s=30)
    try:
        pids = ray.get([a.pid.remote() for a in pool.actors])
        # Batch 0 kills actor 0, then actor 1 on the retry; batch 1 is done before that.
        items = [
            (ROW, r"\boxed{1+2+3}"),
            (ROW, "DIE"),
            (ROW, r"\boxed{3+2+1}"),
            (ROW, r"\boxed{6}"),
        ]
        t0 = time.monotonic()
        verdicts = pool.verify(items)
        elapsed = time.monotonic() - t0
        # The poisoned batch failed on both actors: both of its items are verifier_error (the
        # good one too: a batch is the unit of retry), counted; the other batch is unaffected.
        errors = [v.error for v in verdicts]
        assert errors == [VERIFIER_ERROR, VERIFIER_ERROR, None, "wrong_numbers"], errors
        assert "failed" in verdicts[0].detail
        assert pool.counters["retried"] == 2 and pool.counters[VERIFIER_ERROR] == 2
        assert elapsed < 30, elapsed
        # Both actors came back in new processes and verify again.
        assert [v.correct for v in pool.verify([(ROW, r"\boxed{1*2*3}")] * 4)] == [True] * 4
        new_pids = ray.get([a.pid.remote() for a in pool.actors], timeout=30)
        assert set(new_pids).isdisjoint(pids), (pids, new_pids)
    finally:
        pool.shutdown()
