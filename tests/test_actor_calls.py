"""rrr/core/actor_calls.py on real Ray actors: results in order, the first dead actor raises at once
(while a survivor is still blocked, as in a collective), a bound on the wait, typed errors; a
survivor's error is blamed on the peer that died; the calls a failure leaves behind are
collected (no "Unhandled error" from Ray later); leaving a sync group waits under one
deadline."""

from __future__ import annotations

import gc
import time

import pytest

from rrr.core.actor_calls import ACTOR_GONE, DEATH_REPORT_S, first_line, wait_all


class Lost(RuntimeError):
    pass


@pytest.fixture(scope="module")
def peer_cls(ray_local):
    @ray_local.remote(num_cpus=0)
    class Peer:
        def echo(self, x: int, delay_s: float = 0.0) -> int:
            time.sleep(delay_s)
            return x

        def block(self) -> None:
            time.sleep(3600)  # a rank stuck in a collective with a dead peer

        def crash(self) -> None:
            import os

            os._exit(1)  # the process dies: the actor is gone, not an exception of its code

        def fail(self) -> None:
            raise ValueError("the actor's own bug")

        def crash_after(self, delay_s: float) -> None:
            time.sleep(delay_s)
            self.crash()

        def fail_after(self, delay_s: float) -> None:
            time.sleep(delay_s)  # a survivor's collective, failing when its peer went away
            raise RuntimeError("Connection closed by peer")

    return Peer


def test_results_come_back_in_the_order_of_the_refs(ray_local, peer_cls):
    peers = [peer_cls.remote() for _ in range(3)]
    try:
        # the last finishes first: the order is the refs', not the arrivals'
        refs = [p.echo.remote(i, 0.3 - 0.1 * i) for i, p in enumerate(peers)]
        assert wait_all(refs, timeout_s=60) == [0, 1, 2]
    finally:
        for p in peers:
            ray_local.kill(p)


def test_the_first_dead_actor_raises_at_once_while_a_survivor_blocks(ray_local, peer_cls):
    survivor, dying = peer_cls.remote(), peer_cls.remote()
    try:
        t0 = time.monotonic()
        with pytest.raises(Lost, match=r"rank 1 died: .+") as info:
            wait_all(
                [survivor.block.remote(), dying.crash.remote()],
                on_gone=lambda rank, exc: Lost(f"rank {rank} died: {first_line(exc)}"),
            )
        assert time.monotonic() - t0 < 60  # not the survivor's hour
        assert isinstance(info.value.__cause__, ACTOR_GONE)
        with pytest.raises(ACTOR_GONE):  # without on_gone: Ray's own error
            wait_all([dying.echo.remote(1)])
    finally:
        ray_local.kill(survivor)
        ray_local.kill(dying)


def test_a_peer_that_never_answers_is_a_typed_time_out(ray_local, peer_cls):
    fast, stuck = peer_cls.remote(), peer_cls.remote()
    try:
        ray_local.get([fast.echo.remote(0), stuck.echo.remote(0)])  # both up: only the block waits
        t0 = time.monotonic()
        with pytest.raises(Lost, match="1 pending"):
            wait_all([fast.echo.remote(1), stuck.block.remote()], timeout_s=2,
                     on_timeout=lambda pending: Lost(f"{pending} pending"))  # fmt: skip
        assert 2 <= time.monotonic() - t0 < 30
        with pytest.raises(TimeoutError):
            wait_all([stuck.echo.remote(2)], timeout_s=0.5)  # queued behind the block
    finally:
        ray_local.kill(fast)
        ray_local.kill(stuck)


def test_an_error_of_the_actors_own_code_is_not_a_lost_actor(ray_local, peer_cls):
    peer = peer_cls.remote()
    try:
        with pytest.raises(ValueError, match="own bug"):
            wait_all([peer.fail.remote()], on_gone=lambda rank, exc: Lost("wrong mapping"))
        assert wait_all([peer.echo.remote(7)]) == [7]  # and the actor lives on
    finally:
        ray_local.kill(peer)


def test_a_survivors_error_is_blamed_on_the_peer_that_died(ray_local, peer_cls):
    """The survivor's collective fails at once; Ray reports its peer's death later: the death
    is the error (the owner's typed one), not the survivor's gloo message."""
    survivor, dying = peer_cls.remote(), peer_cls.remote()
    try:
        with pytest.raises(Lost, match="rank 1 died") as info:
            wait_all([survivor.fail_after.remote(0.0), dying.crash_after.remote(0.5)],
                     on_gone=lambda rank, exc: Lost(f"rank {rank} died"))  # fmt: skip
        assert isinstance(info.value.__cause__, ray_local.exceptions.RayTaskError)
        # Nobody died: the actor's own error, once the others had DEATH_REPORT_S to report.
        alive = peer_cls.remote()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="closed by peer"):
            wait_all([alive.fail_after.remote(0.0), survivor.block.remote()],
                     on_gone=lambda rank, exc: Lost("wrong blame"))  # fmt: skip
        assert DEATH_REPORT_S <= time.monotonic() - t0 < DEATH_REPORT_S + 30
        ray_local.kill(alive)
    finally:
        ray_local.kill(survivor)
        ray_local.kill(dying)


def _unhandled(ray_local, monkeypatch) -> list[str]:
    """What Ray reports as "Unhandled error" (an error no one `ray.get`), as it happens."""
    seen: list[str] = []
    monkeypatch.setattr(ray_local._private.worker, "_unhandled_error_handler",
                        lambda e: seen.append(first_line(e)))  # fmt: skip
    return seen


def _wait_for(seen: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not seen and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.5)


def test_the_calls_a_failure_leaves_behind_are_collected(ray_local, peer_cls, monkeypatch):
    """A rank died; the survivor's call fails later (its collective lost the peer). Nobody
    gathers that call again: wait_all collects it, so Ray prints no "Unhandled error"."""
    seen = _unhandled(ray_local, monkeypatch)
    # The control: the same calls, gathered as before (the first death raised, the rest left).
    survivor, dying = peer_cls.remote(), peer_cls.remote()
    refs = [survivor.fail_after.remote(1.0), dying.crash.remote()]
    with pytest.raises(ACTOR_GONE):
        ray_local.get(refs[1])
    time.sleep(3)  # the survivor's call fails meanwhile (a `ray.wait` on it would count as
    del refs  # collecting it)
    _wait_for(seen, 30)
    assert seen, "the control left an error uncollected: Ray must have reported it"
    seen.clear()
    ray_local.kill(survivor)

    survivor, dying = peer_cls.remote(), peer_cls.remote()
    try:
        with pytest.raises(Lost):
            wait_all([survivor.fail_after.remote(1.0), dying.crash.remote()],
                     on_gone=lambda rank, exc: Lost(f"rank {rank} died"))  # fmt: skip
        _wait_for(seen, 8)
        assert not seen, seen
    finally:
        ray_local.kill(survivor)
        ray_local.kill(dying)


def test_leaving_waits_for_every_member_under_one_deadline(ray_local, peer_cls):
    """Two members stuck in their leave (as an NCCL `shutdown()` would block) and a dead one:
    leaving returns after one timeout, not one per member, and counts those left behind."""
    from rrr.learner.weight_sync import leave_all

    peers = [peer_cls.remote() for _ in range(4)]
    try:
        # Members that are up, as a sync group's are: the deadline is for leaving, not for four
        # actor processes to start (seconds each on a busy core).
        ray_local.get([p.echo.remote(0) for p in peers])
        refs = [peers[0].echo.remote(0), peers[1].block.remote(), peers[2].block.remote(),
                peers[3].crash.remote()]  # fmt: skip
        t0 = time.monotonic()
        assert leave_all(refs, timeout_s=3.0) == 2
        assert 3.0 <= time.monotonic() - t0 < 3.0 + 20
    finally:
        for p in peers:
            ray_local.kill(p)
