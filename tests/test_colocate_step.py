"""cluster.colocate in the train loop (rrr/driver/train.py `learn_and_sync`, issue 32): the fleet
sleeps while the learner steps and is awake again on every way out of the step, so the new
learner group of a restart never pushes its weights into a sleeping engine. On CPU a sleep does
nothing, so the order of the calls is what is tested, with stand-ins for the fleet, the learner
group and the weight link (no Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rrr.core.config import load_config
from rrr.driver import train
from rrr.learner.group import LearnerLost


class Fleet:
    def __init__(self, calls: list[str]) -> None:
        self.calls, self.asleep = calls, False

    def sleep(self) -> None:
        self.calls.append("sleep")
        self.asleep = True

    def wake_up(self) -> None:
        self.calls.append("wake_up")
        self.asleep = False


class Link:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def push(self) -> None:
        assert not self.fleet.asleep, "weights pushed into a sleeping engine"
        self.fleet.calls.append("push")


class Learners:
    """`fail_in`: the call ("step" or "release_memory") that raises LearnerLost."""

    def __init__(self, calls: list[str], fail_in: str | None = None) -> None:
        self.calls, self.fail_in, self.version = calls, fail_in, 0

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_in:
            raise LearnerLost("learner rank 0 died during a step")

    def step(self, batch: object) -> dict[str, float]:
        self._call("step")
        self.version += 1
        return {"learner/loss": 0.0}

    def release_memory(self) -> None:
        self._call("release_memory")

    def shutdown(self) -> None:
        self.calls.append("shutdown")


class Rollouts:
    def idle(self) -> None:
        pass

    def pushed(self, version: int) -> None:
        pass


def stand_in_run(colocate: bool, fail_in: str | None = None) -> SimpleNamespace:
    cfg = load_config(None, [f"cluster.colocate={str(colocate).lower()}"])
    calls: list[str] = []
    fleet = Fleet(calls)
    learners, stack = Learners(calls, fail_in), SimpleNamespace(fleet=fleet)
    return SimpleNamespace(cfg=cfg, stack=stack, rollouts=Rollouts(), learners=learners,
                           link=Link(fleet), calls=calls)  # fmt: skip


@pytest.fixture(autouse=True)
def no_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "train_batch", lambda cfg, rollout, step: "batch")


def test_a_colocated_step_sleeps_learns_wakes_then_pushes() -> None:
    run = stand_in_run(colocate=True)
    timings: dict[str, float] = {}
    _, learn, _, spans = train.learn_and_sync(run, 1, None, timings)
    assert run.calls == ["sleep", "step", "release_memory", "wake_up", "push"]
    assert learn == {"learner/loss": 0.0} and len(spans) == 2
    assert {"learn", "wait_rollout", "sync"} <= set(timings)


@pytest.mark.parametrize("fail_in", ["step", "release_memory"])
def test_a_lost_learner_leaves_the_fleet_awake_for_the_restarts_push(fail_in: str) -> None:
    run = stand_in_run(colocate=True, fail_in=fail_in)
    with pytest.raises(LearnerLost):
        train.learn_and_sync(run, 1, None, {})
    lost = run.calls.index(fail_in)
    # The survivors stopped (their memory freed), then the engine woken: after the failed
    # call, before anything else the driver does.
    assert run.calls[lost + 1 :] == ["shutdown", "wake_up"]
    assert not run.stack.fleet.asleep
    # The restart (train.start_run): a new learner group pushes its weights at once, then
    # trains on; the stand-in link refuses a push into a sleeping engine.
    run.learners = Learners(run.calls)
    run.link.push()
    train.learn_and_sync(run, 2, None, {})
    assert run.calls[lost + 3 :] == ["push", "sleep", "step", "release_memory", "wake_up", "push"]


def test_without_colocation_the_fleet_never_sleeps() -> None:
    run = stand_in_run(colocate=False)
    train.learn_and_sync(run, 1, None, {})
    assert run.calls == ["step", "push"]
    run = stand_in_run(colocate=False, fail_in="step")
    with pytest.raises(LearnerLost):
        train.learn_and_sync(run, 1, None, {})
    assert run.calls == ["step"]  # nothing to wake; stop_survivors stops the group later
