"""Dynamic sampling with backfill (rrr/core/backfill.py, rrr/driver/draw.py): a step trains on
learner.failures_per_step groups with a reward spread, drawing further failures within a bound.
Stand-ins for the episode engine (no Ray); the real stack runs it in tests/test_train_real.py."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from rrr.core.backfill import backfilled_rollout
from rrr.core.config import ConfigError, load_config
from rrr.core.data_cursor import EpochSampler
from rrr.core.episodes import Episode, EpisodeBatch, Failure, OnlineFirstAttempts
from rrr.core.train_batch import batch_from_episodes
from rrr.driver.draw import NoFailuresLeft, producer, step_rollout
from rrr.driver.rollout_pipeline import RolloutAbandoned
from rrr.verifiers import Verdict

G = 4


def _episode(i: int, g: int, reward: float, drop: str | None = None) -> Episode:
    verdict = Verdict(True, None) if reward else Verdict(False, "wrong")
    return Episode(i, g, [1, 2, 3, 4], (2, 4), [-0.5, -0.5], "r", False,
                   verdicts=[verdict], drop_reason=drop)  # fmt: skip


class Roll:
    """Stands in for EpisodeEngine.run: a failure whose row says "signal" gets rewards
    1,0,0,0 (a spread), any other all 0. Records each call's failures."""

    def __init__(self) -> None:
        self.calls: list[list[Failure]] = []

    def __call__(self, failures: list[Failure]) -> EpisodeBatch:
        self.calls.append(failures)
        episodes = [_episode(i, g, float(f.row["signal"] and g == 0))
                    for i, f in enumerate(failures) for g in range(G)]  # fmt: skip
        return EpisodeBatch(failures, episodes, G, {"reflect_s": 1.0}, 10 * len(failures),
                            Counter({"verifier_error": 1}))  # fmt: skip


def _rows(pattern: str, n: int) -> list[dict]:
    """n rows; row k has a signal where pattern[k % len(pattern)] is 'x'."""
    return [{"id": k, "signal": pattern[k % len(pattern)] == "x"} for k in range(n)]


def _drawer(rows: list[dict]):
    sampler = EpochSampler(rows, 0)
    return sampler, lambda n: [Failure(r, [9], "a") for r in sampler.take(n)]


@pytest.fixture(autouse=True)
def _in_order(monkeypatch):
    """The sampler's order is its rows' order, so that patterns of signal are exact."""
    monkeypatch.setattr(EpochSampler, "_permutation", lambda self, _: list(range(len(self.items))))


def test_off_is_one_round_that_trains_every_group() -> None:
    roll = Roll()
    _, draw = _drawer(_rows("x..", 30))
    batch, metrics = backfilled_rollout(6, 0, draw, roll)
    assert len(roll.calls) == 1 and len(batch.failures) == 6 and metrics == {}
    assert batch.trained() is batch


def test_backfill_trains_exactly_the_wanted_signal_groups_within_the_bound() -> None:
    roll = Roll()
    # 3 of 10 groups have a signal, the replication preset's 70 % zero spread
    sampler, draw = _drawer(_rows("x.x..x....", 200))
    batch, metrics = backfilled_rollout(10, 40, draw, roll)
    drawn = len(batch.failures)
    assert sum(len(c) for c in roll.calls) == drawn == sampler.state()["consumed"]
    assert 10 < drawn <= 50
    assert metrics["groups_signal"] == 10 and metrics["backfill_short"] == 0
    assert metrics["backfill_rounds"] == len(roll.calls) - 1 >= 1
    signal = [g for g in range(drawn) if batch.has_signal(g)]
    assert metrics["groups_dropped"] == drawn - len(signal)
    assert metrics["groups_unused"] == len(signal) - 10
    assert batch.trained_groups == signal[:10]
    # rounds of at most want: 7 missing / (3/10) -> 24, capped at 10; the last round smaller
    assert [len(c) for c in roll.calls[:2]] == [10, 10]
    assert all(len(c) <= 10 for c in roll.calls) and len(roll.calls[-1]) < 10
    # the whole rollout's costs and metrics; the trained part holds the chosen groups alone
    assert batch.generated_tokens == 10 * drawn and batch.timings["reflect_s"] == len(roll.calls)
    assert batch.counters["verifier_error"] == len(roll.calls)
    assert batch.metrics()["failures"] == drawn
    trained = batch.trained()
    assert [f.row["id"] for f in trained.failures] == [batch.failures[g].row["id"]
                                                      for g in signal[:10]]  # fmt: skip
    assert [e.failure_index for e in trained.episodes] == [i for i in range(10) for _ in range(G)]
    assert all(trained.has_signal(g) for g in range(10))
    train = batch_from_episodes(trained, drop_zero_std_groups=True)
    assert train.metrics["frac_zero_std"] == 0 and train.size == 10 * G


def test_a_bound_reached_trains_what_it_has_and_says_so() -> None:
    roll = Roll()
    _, draw = _drawer(_rows("x" + "." * 99, 100))  # one signal group, at the start
    batch, metrics = backfilled_rollout(4, 12, draw, roll)
    assert len(batch.failures) == 16  # want + the bound, not one more
    assert [len(c) for c in roll.calls] == [4, 4, 4, 4]  # rounds of at most want
    assert metrics == {"groups_signal": 1.0, "groups_dropped": 15.0, "groups_unused": 0.0,
                       "backfill_rounds": 3.0, "backfill_short": 1.0}  # fmt: skip
    assert batch.trained_groups == [0]


def test_rounds_draw_what_is_missing_over_the_share_seen_never_more_than_want() -> None:
    roll = Roll()
    _, draw = _drawer(_rows("." * 8 + "x" * 100, 108))
    batch, metrics = backfilled_rollout(8, 20, draw, roll)
    assert [len(c) for c in roll.calls] == [8, 8]  # 8 / (1/8) = 64, capped at want
    assert metrics["groups_signal"] == 8 and metrics["groups_unused"] == 0
    assert batch.trained_groups == list(range(8, 16))
    roll = Roll()
    _, draw = _drawer(_rows("x.", 100))  # half of the groups: 2 missing / (3/6) -> 4
    batch, metrics = backfilled_rollout(5, 20, draw, roll)
    assert [len(c) for c in roll.calls] == [5, 4]
    assert metrics["groups_signal"] == 5 and metrics["groups_unused"] == 0


def test_an_empty_draw_ends_the_backfill() -> None:
    roll = Roll()
    draws = iter([[Failure({"signal": False}, [1], "a")] * 3, []])
    batch, metrics = backfilled_rollout(3, 10, lambda n: next(draws), roll)
    assert len(roll.calls) == 1 and metrics["backfill_short"] == 1
    assert metrics["groups_signal"] == 0 and batch.trained().episodes == []


def test_a_group_needs_two_valid_members_with_different_rewards() -> None:
    f = Failure({}, [1], "a")
    groups = [
        [1, 0, 0, 0],  # a spread
        [0, 0, 0, 0],
        [1, 1, 1, 1],
    ]
    episodes = [_episode(i, g, r) for i, rs in enumerate(groups) for g, r in enumerate(rs)]
    # the spread only through members whose reward is unknown
    episodes += [_episode(3, 0, 1.0), _episode(3, 1, 0.0, "verifier_error"),
                 _episode(3, 2, 0.0, "verifier_error"),
                 _episode(3, 3, 0.0, "context_overflow")]  # fmt: skip
    batch = EpisodeBatch([f] * 4, episodes, G, {}, 0, Counter())
    assert [batch.has_signal(g) for g in range(4)] == [True, False, False, False]
    # the learner agrees: only group 0 has a non-zero advantage
    train = batch_from_episodes(batch)
    assert train.advantages.abs().gt(0).tolist() == [True] * 4 + [False] * (train.size - 4)


def test_concat_renumbers_and_refuses_what_it_cannot_join() -> None:
    roll = Roll()
    a = roll([Failure({"signal": True}, [1], "a")])
    b = roll([Failure({"signal": False}, [1], "b")] * 2)
    both = EpisodeBatch.concat([a, b])
    assert [e.failure_index for e in both.episodes] == [0] * G + [1] * G + [2] * G
    assert len(both.failures) == 3 and both.generated_tokens == 30
    with pytest.raises(ValueError, match="one group size"):
        EpisodeBatch.concat([a, EpisodeBatch([], [], 2, {}, 0, Counter())])
    a.trained_groups = [0]
    with pytest.raises(ValueError, match="whole rollouts"):
        EpisodeBatch.concat([a, b])


def test_backfill_needs_dropped_zero_std_groups_and_a_group_of_two() -> None:
    with pytest.raises(ConfigError, match=r"learner\.backfill_max_draws: 8 .*drop_zero_std_groups"):
        load_config(None, ["learner.backfill_max_draws=8"])
    with pytest.raises(ConfigError, match=r"learner\.backfill_max_draws: a group of"):
        load_config(None, ["learner.backfill_max_draws=8", "learner.drop_zero_std_groups=true",
                           "episode.num_reflections=1"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"learner\.backfill_max_draws: must be >= 0"):
        load_config(None, ["learner.backfill_max_draws=-1"])
    cfg = load_config(None, ["learner.backfill_max_draws=8", "learner.drop_zero_std_groups=true"])
    assert cfg.learner.backfill_max_draws == 8


class _Online:
    """Stands in for the online first-attempt phase: the first call fails every query, later
    ones solve every query (so no backfill round finds a failure)."""

    def __init__(self) -> None:
        self.calls = 0
        self.run = Roll()

    def online_first_attempts(self, rows: list[dict]) -> OnlineFirstAttempts:
        self.calls += 1
        failures = [Failure(r, [1], "x") for r in rows] if self.calls == 1 else []
        solved = 0 if self.calls == 1 else len(rows)
        return OnlineFirstAttempts(failures, len(rows), solved, Counter({"context_overflow": 1}))


def _cfg(mode: str, want: int, extra: int) -> SimpleNamespace:
    learner = SimpleNamespace(failures_per_step=want, backfill_max_draws=extra)
    return SimpleNamespace(episode=SimpleNamespace(first_attempt=mode), learner=learner,
                           rollout=SimpleNamespace(seed=0))  # fmt: skip


def test_online_backfill_stops_when_no_failure_is_left_and_counts_every_first_try() -> None:
    engine = _Online()
    stack = SimpleNamespace(engine=engine)
    batch, metrics = step_rollout(_cfg("online", 4, 8), stack, EpochSampler(_rows(".", 100), 0))
    # round 0 found 4 failures without signal; round 1's draws (8 of 4 queries each, a round
    # is never more than failures_per_step) solved everything
    assert len(engine.run.calls) == 1 and metrics["backfill_short"] == 1
    assert engine.calls == 1 + 8  # MAX_ONLINE_DRAWS
    assert metrics["first_try_success"] == pytest.approx(8 * 4 / (4 + 8 * 4))
    assert metrics["skipped_first_context_overflow"] == 9
    assert len(batch.failures) == 4
    with pytest.raises(NoFailuresLeft):  # the first draw still refuses a model that fails nothing
        step_rollout(_cfg("online", 4, 8), stack, EpochSampler(_rows(".", 100), 0))


class _Fleet:
    def __init__(self) -> None:
        self.seeds: list[int] = []

    def begin_step(self, seed: int) -> None:
        self.seeds.append(seed)


def test_an_abandoned_backfill_round_puts_every_draw_back_and_the_step_draws_them_again() -> None:
    failures = [Failure(r, [9], "a") for r in _rows("x....", 100)]
    roll = Roll()
    abandon = {"call": 2}

    def run(failures: list[Failure]) -> EpisodeBatch:
        if len(roll.calls) + 1 == abandon["call"]:
            abandon["call"] = -1
            roll.calls.append(failures)
            raise RolloutAbandoned("a worker was replaced in round 1")
        return roll(failures)

    sampler = EpochSampler(failures, 0)
    stack = SimpleNamespace(engine=SimpleNamespace(run=run), fleet=_Fleet())
    produce = producer(_cfg("dataset", 5, 20), stack, sampler)
    with pytest.raises(RolloutAbandoned):
        produce(1)
    assert sampler.state()["consumed"] == 0
    abandoned_draws = [f.row["id"] for c in roll.calls for f in c]
    roll.calls.clear()
    batch, metrics, cursor = produce(1)
    again = [f.row["id"] for c in roll.calls for f in c]
    assert again[: len(abandoned_draws)] == abandoned_draws  # the same failures, the same order
    assert cursor == sampler.state() and cursor["consumed"] == len(batch.failures) == len(again)
    assert stack.fleet.seeds[0] == stack.fleet.seeds[1]  # the same sampling stream
    assert metrics["groups_signal"] == 5
    # the next step starts where this one's last round stopped
    _, _, after = produce(2)
    assert after["consumed"] > cursor["consumed"]
