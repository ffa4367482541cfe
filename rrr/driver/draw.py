"""What one training step rolls out: the failures it draws (stored failed first attempts, or
online first tries that failed, paper section 3) and their episodes; with
learner.backfill_max_draws, further draws that replace the groups without a signal
(rrr/core/backfill.py). `rrr train`'s rollout pipeline calls `producer`'s `produce` once
per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rrr.core.backfill import backfilled_rollout
from rrr.core.config import Config
from rrr.core.data_cursor import EpochSampler
from rrr.core.episodes import EpisodeBatch, Failure, OnlineFirstAttempts
from rrr.core.errors import RRRError
from rrr.driver.rollout_pipeline import RolloutAbandoned

MAX_ONLINE_DRAWS = 8  # online mode: draws per step before a model that fails nothing stops


class NoFailuresLeft(RRRError, RuntimeError):
    """Online mode found no failure to reflect on; `first`: the first tries it judged."""

    def __init__(self, message: str, first: OnlineFirstAttempts) -> None:
        super().__init__(message)
        self.first = first


def producer(
    cfg: Config, stack: Any, sampler: EpochSampler
) -> Callable[[int], tuple[EpisodeBatch, dict[str, float], dict[str, Any]]]:
    """The rollout pipeline's `produce(step)`: the step's rollout, its metrics, and the data
    cursor after its draws (what a checkpoint of the step records). The fleet is seeded by
    (rollout.seed, step), so a step made again samples the same stream. A rollout abandoned in
    any round (a worker replaced mid-rollout, RolloutAbandoned) puts every round's draw back:
    the rollout made in its place draws them again."""

    def produce(step: int) -> tuple[EpisodeBatch, dict[str, float], dict[str, Any]]:
        drawn_from = sampler.state()
        stack.fleet.begin_step(hash((cfg.rollout.seed, step)))
        try:
            episodes, metrics = step_rollout(cfg, stack, sampler)
        except RolloutAbandoned:
            sampler.restore(drawn_from)
            raise
        return episodes, metrics, sampler.state()

    return produce


def step_rollout(
    cfg: Config, stack: Any, sampler: EpochSampler
) -> tuple[EpisodeBatch, dict[str, float]]:
    """One step's episodes (every backfill round's, the trained groups chosen) and the draw's
    metrics: online first tries over every draw of the step, the backfill's counts. A draw
    after the first that finds no failure (online mode) ends the backfill; the first one raises
    NoFailuresLeft."""
    online: list[OnlineFirstAttempts] = []

    def draw(count: int) -> list[Failure]:
        try:
            failures, first = next_failures(cfg, stack, sampler, count)
        except NoFailuresLeft as exc:
            if not online:
                raise
            online.append(exc.first)  # its first tries count, though none failed
            return []
        if first is not None:
            online.append(first)
        return failures

    episodes, metrics = backfilled_rollout(
        cfg.learner.failures_per_step, cfg.learner.backfill_max_draws, draw, stack.engine.run
    )
    if online:
        metrics.update(sum(online[1:], online[0]).metrics())
    return episodes, metrics


def next_failures(
    cfg: Config, stack: Any, sampler: EpochSampler, count: int
) -> tuple[list[Failure], OnlineFirstAttempts | None]:
    """`count` failures, and the first-try phase that found them where one was run.

    Dataset mode draws stored failed first attempts: no first try is measured (its success
    rate would be 0 by construction, so none is reported). Online mode samples a first attempt
    for each of `count` queries and keeps the failures (paper section 3); queries that cannot
    be judged are skipped and counted. A draw with no failure at all is followed by another, so
    every step has something to learn from, up to MAX_ONLINE_DRAWS draws.
    """
    if cfg.episode.first_attempt == "dataset":
        return sampler.take(count), None
    total: OnlineFirstAttempts | None = None
    for _ in range(MAX_ONLINE_DRAWS):
        online = stack.engine.online_first_attempts(sampler.take(count))
        total = online if total is None else total + online
        if total.failures:
            return total.failures, total
    assert total is not None
    raise NoFailuresLeft(
        f"online mode: {MAX_ONLINE_DRAWS} draws of {count} queries gave no failed first "
        f"attempt ({total.solved} solved, {sum(total.skipped.values())} skipped): nothing to "
        "reflect on; use harder data (data.source) or episode.first_attempt=dataset",
        total,
    )
