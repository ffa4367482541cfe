"""The verifier pool on real Ray actors: correct scoring, and crashes / hangs scored as
`verifier_error` without stalling the batch."""

from __future__ import annotations

import time

import pytest

from actors.verifier_pool import VERIFIER_ERROR, VerifierPool
from rrr.tasks.countdown import CountdownTask

pytestmark = pytest.mark.slow


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
