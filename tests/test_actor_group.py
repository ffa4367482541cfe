"""rrr/core/actor_group.py on real Ray actors: spawn in a placement group's bundles, fan out,
gather with the owner's typed error, find the dead, replace within a budget (the key named),
a failed start with its cause, never a hang, and a group over adopted actors."""

from __future__ import annotations

import os
import time

import pytest

from rrr.core.actor_group import ActorGroup


class Lost(RuntimeError):
    pass


def _dead_after_kill(ray_local, group: ActorGroup, index: int) -> list[int]:
    """`ray.kill` returns before the actor is gone: a ping sent at once may still be answered
    (seen under load), so wait, boundedly, until the group sees the death."""
    ray_local.kill(group.actors[index])
    deadline = time.monotonic() + 60
    while (dead := group.dead()) != [index] and time.monotonic() < deadline:
        time.sleep(0.2)
    return dead


class StartFailed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def member_cls(ray_local):
    @ray_local.remote(num_cpus=0)
    class Member:
        def __init__(self, tag: str = "", fail: bool = False, slow_s: float = 0.0) -> None:
            if fail:
                raise ValueError(f"cannot start {tag}: no such model")
            time.sleep(slow_s)
            self.tag = tag

        def ping(self) -> bool:
            return True

        def who(self) -> tuple[str, int]:
            return self.tag, os.getpid()

        def in_placement_group(self) -> bool:
            import ray

            return ray.get_runtime_context().get_placement_group_id() is not None

        def crash(self) -> None:
            os._exit(1)

    return Member


def test_fan_out_gathers_in_slot_order_inside_a_placement_group(ray_local, member_cls):
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 0.01}] * 3)
    ray_local.get(pg.ready(), timeout=60)
    group = ActorGroup(member_cls, 2, name="member", kwargs={"tag": "t"}, placement_group=pg,
                       bundle_offset=1, error=Lost)  # fmt: skip
    try:
        group.wait_ready(timeout_s=60)
        got = group.run(lambda a: a.who.remote(), "a roll call")
        assert [tag for tag, _ in got] == ["t", "t"] and got[0][1] != got[1][1]
        assert group.run(lambda a: a.in_placement_group.remote(), "a check") == [True, True]
        assert group.dead() == [] and len(group) == 2
    finally:
        group.kill()
        remove_placement_group(pg)
    assert group.actors == []


def test_a_death_is_the_owners_error_then_replaced_within_the_budget(ray_local, member_cls):
    group = ActorGroup(member_cls, 2, name="member", error=Lost, max_restarts=1,
                       restarts_key="member.max_restarts")  # fmt: skip
    try:
        group.wait_ready(timeout_s=60)
        (_, pid0), (_, pid1) = group.run(lambda a: a.who.remote(), "a roll call")
        with pytest.raises(Lost, match=r"^member 1 died during a crash: .+"):
            group.gather([group.actors[0].ping.remote(), group.actors[1].crash.remote()],
                         "a crash")  # fmt: skip
        assert group.dead() == [1]
        old = group.actors[1]
        group.replace([1], timeout_s=60)
        assert group.actors[1] is not old and group.restarts == 1
        (_, new0), (_, new1) = group.run(lambda a: a.who.remote(), "a roll call")
        assert new0 == pid0 and new1 not in (pid0, pid1)  # the survivor kept its process
        assert _dead_after_kill(ray_local, group, 0) == [0]
        with pytest.raises(Lost, match=r"\[0\] died and 1 of member.max_restarts=1 restarts"):
            group.replace([0], timeout_s=60)
    finally:
        group.kill()


def test_a_failed_start_carries_its_cause_and_a_slow_one_times_out(ray_local, member_cls):
    group = ActorGroup(member_cls, 2, name="member", kwargs={"tag": "x", "fail": True},
                       error=Lost, start_error=StartFailed)  # fmt: skip
    with pytest.raises(StartFailed, match=r"(?s)member \d failed to start: .*no such model"):
        group.wait_ready(timeout_s=60)
    slow = ActorGroup(member_cls, 1, name="member", kwargs={"slow_s": 30.0},
                      start_error=StartFailed)  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(StartFailed, match=r"1 member\(s\) not ready after 1s"):
        slow.wait_ready(timeout_s=1)
    assert time.monotonic() - t0 < 20  # the bound, not the actor's 30 s


def test_a_gather_past_its_bound_is_the_owners_error(ray_local, member_cls):
    group = ActorGroup(member_cls, 1, name="member", error=Lost)
    try:
        group.wait_ready(timeout_s=60)
        def nap() -> None:
            time.sleep(30)

        slow = ray_local.remote(num_cpus=0)(nap).remote()
        with pytest.raises(Lost, match=r"1 member\(s\) did not answer a wait within 1s"):
            group.gather([slow], "a wait", timeout_s=1)
    finally:
        group.kill()


def test_adopted_actors_are_called_but_never_replaced(ray_local, member_cls):
    actors = [member_cls.remote(tag="a"), member_cls.remote(tag="b")]
    group = ActorGroup.adopt(actors, name="member", error=Lost)
    try:
        assert [t for t, _ in group.run(lambda a: a.who.remote(), "a roll call")] == ["a", "b"]
        assert _dead_after_kill(ray_local, group, 1) == [1]
        with pytest.raises(Lost, match=r"\[1\] died and 0 of max_restarts=0"):
            group.replace([1], timeout_s=60)
    finally:
        group.kill()


def test_no_actors_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one actor"):
        ActorGroup(object, 0, name="member")
    with pytest.raises(ValueError, match="at least one actor"):
        ActorGroup.adopt([], name="member")
