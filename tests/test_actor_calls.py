"""rrr/core/actor_calls.py on real Ray actors: results in order, the first dead actor raises at once
(while a survivor is still blocked, as in a collective), a bound on the wait, typed errors."""

from __future__ import annotations

import time

import pytest

from rrr.core.actor_calls import ACTOR_GONE, first_line, wait_all


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
