"""Train with GRPO on reflection tokens (the Ray job entrypoint, and the only place that wires
rollout, verification, learning and sync).

Connects to the Ray cluster it was submitted to (`ray job submit ... -- rrr train ...`) or
starts a local Ray; starts the rollout workers, the verifier pool and the learner group; then
loops: failures -> reflect x G -> retry -> verify -> group advantages -> learner step -> weight
sync -> metrics -> checkpoint. Restarted with the same logging.output_dir, it resumes from the
newest valid checkpoint (same step, same data order). Ctrl-C / SIGTERM / `ray job stop` finish
the current step, write a checkpoint and release the actors.

  rrr train --config configs/smoke-cpu.yaml
  rrr train --config configs/smoke-cpu.yaml learner.max_steps=30 logging.output_dir=runs/s30

Outputs in logging.output_dir: config.yaml, failures/ (when built here), metrics.jsonl,
tb/ (TensorBoard), checkpoints/step_XXXXXXXX; `rrr report DIR` draws the curves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from rrr.core.config import Config, ConfigError, check_training, save_config
from rrr.core.data_cursor import EpochSampler
from rrr.core.episodes import Failure
from rrr.core.metrics import MetricsLogger, format_step_line, merge_metrics, under
from rrr.core.timing import Span, both_busy_s, both_busy_share, timed
from rrr.driver.draw import producer
from rrr.driver.rollout_pipeline import Rollout, RolloutAbandoned, RolloutPipeline

if TYPE_CHECKING:
    from rrr.core.train_batch import TrainBatch

log = logging.getLogger("rrr.train")


class StopRequested:
    """SIGINT / SIGTERM (Ctrl-C, `ray job stop`) ask the loop to stop after the current step,
    write a checkpoint and release the actors; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        log.warning("signal %d: finishing this step, then checkpoint and exit", signum)
        self.requested = True

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def train(cfg: Config) -> dict[str, Any]:
    from rrr.driver.stack import generation_stack
    from rrr.learner.group import LearnerLost
    from rrr.learner.weight_sync import SyncError

    check_training(cfg)
    check_model(cfg)
    run_dir = Path(cfg.logging.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.episode.first_attempt == "online" or not cfg.data.failures:
        check_data(cfg)  # a dataset of bad rows stops here, before any engine starts
    save_config(cfg, run_dir / "config.yaml")
    with generation_stack(cfg) as stack:
        failures = load_failures(cfg, stack, run_dir)
        restarts = 0
        while True:  # the rollout fleet and the verifier pool outlive a lost learner group
            try:
                return learn(cfg, stack, failures, run_dir, restarts)
            except SyncError as exc:
                # A peer alive but silent past sync.timeout_s (a hung engine, a partition), in
                # a push or while a new learner group connects: a further group would wait on
                # the same peer, so the job stops here, every wait having been bounded.
                raise SyncError(with_resume_hint(exc, run_dir)) from exc
            except LearnerLost as exc:
                if restarts >= cfg.learner.max_restarts:
                    raise LearnerLost(with_resume_hint(exc, run_dir)) from exc
                restarts += 1
                log.warning(
                    "%s: a new learner group resumes from the last checkpoint (restart %d of "
                    "learner.max_restarts=%d)", exc, restarts, cfg.learner.max_restarts,
                )  # fmt: skip


def with_resume_hint(exc: BaseException, run_dir: Path) -> str:
    """The error that stops the job, then what it leaves to resume from, and how."""
    from rrr.learner import checkpoint as ckpt

    latest = ckpt.latest_valid(run_dir / "checkpoints")
    if latest is None:
        hint = f"No checkpoint in {run_dir} yet: `rrr train` there starts over"
    else:
        hint = (f"The newest complete checkpoint is {latest}: `rrr train` with "
                f"logging.output_dir={run_dir} resumes from it")  # fmt: skip
    return f"{str(exc).rstrip('.')}. {hint}"


def learn(
    cfg: Config, stack: Any, failures: list[Any], run_dir: Path, restarts: int
) -> dict[str, Any]:
    """Start a learner group, resume from the newest valid checkpoint (if any), loop to
    learner.max_steps. `restarts`: learner groups lost before this one in this job."""
    # Released in reverse order on any exit, a failure during start-up or resume included
    # (a learner group left behind would hold its placement group from the next one).
    with contextlib.ExitStack() as cleanup:
        run = start_run(cfg, stack, failures, run_dir, restarts, cleanup)
        step = run.start
        try:
            if run.start == 0 and eval_due(cfg, 0) and not restarts:
                run.metrics_log.log(0, periodic_eval(cfg, stack, run_dir, 0))  # the vanilla model
            for step in range(run.start + 1, cfg.learner.max_steps + 1):
                metrics, cursor = train_step(run, step)
                record_step(run, step, metrics, cursor)  # log, checkpoint, held-out eval
                if run.stop.requested:
                    break
        finally:
            if run.rollouts.in_flight:  # its failures are drawn again on resume
                log.info("dropped %d rollout(s) started ahead of a step that will not run",
                         run.rollouts.in_flight)  # fmt: skip
        return run.summary(step)


@dataclass
class Run:
    """One learner group's stretch of training: what `start_run` sets up and every step uses."""

    cfg: Config
    stack: Any
    run_dir: Path
    restarts: int  # learner groups lost before this one in this job
    start: int  # the step resumed from (0: the base model)
    learners: Any
    link: Any  # WeightLink: the learner group -> the rollout fleet
    rollouts: RolloutPipeline
    metrics_log: MetricsLogger
    stop: StopRequested
    bar: Any  # tqdm
    staleness: list[float] = field(default_factory=list)  # of each trained batch

    def summary(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_dir": str(self.run_dir), "start_step": self.start, "end_step": step,
            "metrics": str(self.run_dir / "metrics.jsonl"),
            "checkpoints": str(self.run_dir / "checkpoints"),
            "learner_restarts": self.restarts, "stopped": self.stop.requested,
        }  # fmt: skip
        if self.rollouts.in_flight:
            out["dropped_in_flight"] = self.rollouts.in_flight
        if self.staleness:
            out.update(staleness_mean=sum(self.staleness) / len(self.staleness),
                       staleness_max=max(self.staleness))  # fmt: skip
        return out


def train_step(run: Run, step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """One step, a named timer per stage: take the rollout (start the next one ahead), learn on
    its batch, let the fleet go idle, push the weights. Returns the step's metrics and the data
    cursor a checkpoint of this step records."""
    cfg, fleet, rollouts = run.cfg, run.stack.fleet, run.rollouts
    timings: dict[str, float] = {}
    t_step = time.perf_counter()
    with timed("rollout", timings):  # waiting for it, if it was started ahead
        rollout = rollouts.take(step)
    if step < cfg.learner.max_steps:
        rollouts.start_ahead(step + 1)  # max_staleness > 0: runs while we learn
    batch, learn, sync_t, spans = learn_and_sync(run, step, rollout, timings)
    window = (t_step, time.perf_counter())
    metrics = step_metrics(
        rollout, batch, learn, sync_t, timings, window,
        busy=(rollouts.background_spans(since=t_step), spans),
        faults={"worker_restarts": float(fleet.restarts),
                "abandoned": float(rollouts.abandoned),
                "verifier_retries": float(run.stack.verifier.counters["retried"])},
        learner_restarts=run.restarts,
    )  # fmt: skip
    return metrics, rollout.cursor


def learn_and_sync(
    run: Run, step: int, rollout: Rollout, timings: dict[str, float]
) -> tuple[TrainBatch, dict[str, float], Any, list[Span]]:
    """The learner's step on the rollout's batch, then the push when it is due (timers "learn",
    "wait_rollout", "sync"). Returns the batch, the learner's metrics, the push's timings (None:
    no push) and the learner's busy spans.

    cluster.colocate: the fleet sleeps while the learner steps and wakes before the push, and
    on every other way out of here too (issue 32): after a LearnerLost the new learner group
    pushes its weights at once, and a sleeping engine would take them into unmapped memory
    (vLLM does not guard collective_rpc while it sleeps; a level-1 sleep also pauses its
    scheduler)."""
    cfg, fleet, learners, rollouts = run.cfg, run.stack.fleet, run.learners, run.rollouts
    asleep = False
    try:
        with timed("learn", timings):
            learn_start = time.perf_counter()
            if cfg.cluster.colocate:
                asleep = True  # before the call: a sleep that fails part-way is undone too
                fleet.sleep()
            batch = train_batch(cfg, rollout, step)
            learn = learners.step(batch)
            learn_span = (learn_start, time.perf_counter())
        sync_t = None
        if sync_due(cfg, step):
            with timed("wait_rollout", timings):  # weights change only between rollouts
                rollouts.idle()
        with timed("sync", timings):
            sync_start = time.perf_counter()
            if asleep:
                learners.release_memory()  # vLLM wakes into what the learner cached
                asleep = False  # one wake-up: one that fails is not tried again below
                fleet.wake_up()
            if sync_due(cfg, step):
                sync_t = run.link.push()
                rollouts.pushed(learners.version)
            sync_span = (sync_start, time.perf_counter())
    except BaseException as exc:
        if asleep:
            wake_after_failure(fleet, learners, exc)
        raise
    return batch, learn, sync_t, [learn_span, sync_span]


def wake_after_failure(fleet: Any, learners: Any, exc: BaseException) -> None:
    """Wake the colocated fleet after the learner's step failed. A lost group's survivors are
    stopped first (what `stop_survivors` would do a moment later): they may sit in a collective
    with the dead rank, holding the memory the engine wakes into. A wake-up that fails raises,
    chained to `exc`: the job then ends instead of restarting into a sleeping engine."""
    from rrr.learner.group import LearnerLost

    log.warning("%s during a colocated learner step: waking the rollout fleet",
                type(exc).__name__)  # fmt: skip
    try:
        if isinstance(exc, LearnerLost):
            learners.shutdown()
    finally:
        fleet.wake_up()


def train_batch(cfg: Config, rollout: Rollout, step: int) -> TrainBatch:
    """The rollout's episodes as the learner's batch: tokens, reflection masks, group
    advantages (paper 3.2: rewards on the reflection tokens only)."""
    from rrr.core.train_batch import batch_from_episodes

    return batch_from_episodes(
        rollout.episodes.trained(),  # with backfill: the signal groups it chose
        scale_rewards=cfg.learner.scale_rewards,
        drop_zero_std_groups=cfg.learner.drop_zero_std_groups,
        shuffle_seed=hash((cfg.learner.seed, step)) if cfg.learner.shuffle_rewards else None,
    )


def record_step(run: Run, step: int, metrics: dict[str, float], cursor: dict[str, Any]) -> None:
    """Log the step (metrics.jsonl + sinks, progress bar, a line every logging.log_every), then
    the checkpoint and the held-out evaluation when they are due."""
    cfg = run.cfg
    run.staleness.append(metrics["rollout/staleness"])
    run.metrics_log.log(step, metrics)
    run.bar.update(1)
    run.bar.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}",
                        step_s=f"{metrics['timing/step_s']:.0f}")  # fmt: skip
    if step % cfg.logging.log_every == 0:
        log.info(format_step_line(step, cfg.learner.max_steps, metrics))
    last = step == cfg.learner.max_steps or run.stop.requested
    if step % cfg.logging.checkpoint_every == 0 or last:
        path = run.learners.save_checkpoint(
            run.run_dir / "checkpoints",
            step,
            {"cursor": cursor},  # not a batch started ahead
            keep=cfg.logging.keep_checkpoints,
        )
        log.info("checkpoint %s", path)
    if eval_due(cfg, step):
        run.metrics_log.log(step, periodic_eval(cfg, run.stack, run.run_dir, step))


def start_run(
    cfg: Config,
    stack: Any,
    failures: list[Any],
    run_dir: Path,
    restarts: int,
    cleanup: contextlib.ExitStack,
) -> Run:
    """The learner group, the weight link, the resumed step and data cursor, the rollout
    pipeline (with what a replaced rollout worker needs), the metrics log, the stop handler and
    the progress bar; each registered with `cleanup`."""
    from rrr.learner import checkpoint as ckpt
    from rrr.learner.group import LearnerGroup
    from rrr.learner.weight_sync import WeightLink

    learners = LearnerGroup(
        cfg.learner,
        stack.model_path,
        placement_group=stack.placement_group,  # colocate: beside rollout worker i
        total_steps=cfg.learner.max_steps,
        max_tokens_norm=cfg.episode.max_reflection_tokens,
        # The reflections' sampling temperature: old (vLLM, processed) and new log-probs
        # are then of the same distribution.
        temperature=cfg.episode.temperature,
        trust_remote_code=cfg.model.trust_remote_code,
        # One step off, the rollout generates beside each learner step: no cores to spare.
        share_cores=cfg.rollout.max_staleness == 0,
    )
    cleanup.callback(learners.shutdown)
    link = WeightLink(cfg.sync, learners, stack.fleet)
    cleanup.callback(link.close)
    cleanup.push(stop_survivors(learners))  # runs before link.close
    resumed = ckpt.latest_valid(run_dir / "checkpoints")
    state = learners.load_checkpoint(resumed) if resumed else {"step": 0}
    start = int(state["step"])
    extra = state.get("extra_state") or {}
    sampler = EpochSampler(
        failures, cfg.data.shuffle_seed, EpochSampler.cursor_from(extra.get("cursor"))
    )

    produce = producer(cfg, stack, sampler)

    def resync() -> int:
        """After an abandoned rollout: the replacement has the base model's weights
        unless a push since has reached the whole fleet (it then holds the learner's)."""
        if learners.version != rollouts.fleet_version:
            link.push()
        return learners.version

    rollouts = RolloutPipeline(produce, cfg.rollout.max_staleness, fleet_version=start,
                               resync=resync, cancel=stack.fleet.cancel)  # fmt: skip
    cleanup.callback(rollouts.close)

    def on_restart(replaced: list[int]) -> None:
        """A rollout worker was replaced mid-rollout (rrr/driver/rollout_pipeline.py)."""
        if rollouts.running_ahead or learners.version != rollouts.fleet_version:
            raise RolloutAbandoned(
                f"rollout worker(s) {replaced} replaced while the learner's weights are "
                "newer than the rollout's"
            )
        link.heal()  # the same version as the fleet's: the lost shard is re-sent

    stack.fleet.on_restart = on_restart
    if resumed or restarts:
        log.info("resumed from %s at step %d", resumed or "the base model", start)
        link.push()  # the workers start from the base model: give ours
    # A restart re-logs the steps after its checkpoint: their old lines go, none twice.
    metrics_log = MetricsLogger(
        run_dir, cfg, resume_step=start + 1 if resumed or restarts else None
    )
    cleanup.callback(metrics_log.close)
    # Installed once the actors are up: a signal during start-up needs no checkpoint, and
    # the default handler lets Ray release what the driver owned.
    stop = StopRequested()
    cleanup.callback(stop.restore)
    bar = tqdm(
        total=cfg.learner.max_steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not (cfg.logging.progress and sys.stderr.isatty()),
    )
    cleanup.callback(bar.close)
    return Run(cfg, stack, run_dir, restarts, start, learners, link, rollouts, metrics_log,
               stop, bar)  # fmt: skip


def stop_survivors(learners: Any) -> Callable[..., bool]:
    """An exit callback: on LearnerLost, kill the surviving ranks first. They may sit in a
    collective with the dead one, and the weight sync's group, left next, would wait for them
    until its timeout."""
    from rrr.learner.group import LearnerLost

    def on_exit(exc_type: type[BaseException] | None, *_: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, LearnerLost):
            learners.shutdown()
        return False  # the exception goes on

    return on_exit


def check_model(cfg: Config) -> None:
    """What the model must be for training, checked before any actor starts: a full model (an
    adapter directory is served by `rrr eval`, but a run starts from its merged export), with
    every linear layer that learner.lora.target_modules names."""
    from rrr.core.lora import is_adapter_dir
    from rrr.core.models import resolve_model
    from rrr.learner.lora import check_target_modules

    if is_adapter_dir(cfg.model.name_or_path):
        raise ConfigError(
            f"model.name_or_path: {cfg.model.name_or_path} is a LoRA adapter; a run starts from "
            "a full model (`rrr export RUN --out DIR` writes the merged one)"
        )
    path = resolve_model(cfg.model.name_or_path)
    check_target_modules(path, cfg.learner.lora, cfg.model.trust_remote_code)


def check_data(cfg: Config) -> None:
    """Load and validate the queries (counts malformed rows by reason; DataError when none is
    usable), cheaply, before minutes of engine start-up are spent."""
    from rrr.core.tasks.loading import load_rows
    from rrr.driver.stack import load_task

    log.info(load_rows(load_task(cfg), cfg.data.source, split=cfg.data.split,
                       limit=cfg.data.limit).summary())  # fmt: skip


def load_failures(cfg: Config, stack: Any, run_dir: Path) -> list[Any]:
    """What the sampler draws from: failed first attempts (the failure dataset, given in
    data.failures or built now from data.source, paper 4.3), or, in online mode, the queries."""
    from rrr.core.failure_data import read_failures
    from rrr.core.tasks.loading import load_rows
    from rrr.driver.build_failures import build_failures

    if cfg.episode.first_attempt == "online":
        loaded = load_rows(stack.task, cfg.data.source, split=cfg.data.split, limit=cfg.data.limit)
        log.info(loaded.summary())
        return loaded.rows
    path = Path(cfg.data.failures) if cfg.data.failures else run_dir / "failures"
    if not cfg.data.failures:
        log.info("no data.failures given: building them from %s into %s", cfg.data.source, path)
        log.info("build-failures: %s", build_failures(cfg, path, stack=stack))
    records, manifest = read_failures(path)
    if manifest.get("model") != cfg.model.name_or_path:
        log.warning(
            "failures in %s were sampled from %s, training %s",
            path,
            manifest.get("model"),
            cfg.model.name_or_path,
        )
    if not records:
        raise RuntimeError(f"{path} holds no failures: the model solved every query")
    log.info("%d failures from %s", len(records), path)
    return [Failure(r.row, r.failed_token_ids, r.failed_response) for r in records]


def step_metrics(
    rollout: Rollout,
    batch: TrainBatch,
    learn: dict[str, float],
    sync_t: Any,
    timings: dict[str, float],
    window: Span,
    *,
    busy: tuple[list[Span], list[Span]],
    faults: dict[str, float],
    learner_restarts: int,
) -> dict[str, float]:
    """One step's metrics, each producer under its own namespace (rrr/core/metrics.py NAMESPACES);
    `merge_metrics` refuses a key that two of them give. `learn` is the learner group's
    (already under learner/), `faults` the fleet's and verifier pool's counters. `window` is
    the step's own (start, end); `busy` when the fleet generated in the background (rollouts
    started ahead) and when the learner worked (learning, sync)."""
    step_s = window[1] - window[0]
    return merge_metrics(
        under("rollout/", merge_metrics(rollout_metrics(rollout, window, *busy), faults)),
        under("batch/", batch.metrics),
        learn,
        {"learner/restarts": float(learner_restarts)},
        sync_t.as_metrics() if sync_t is not None else {},
        under("timing/", {
            **{f"{name}_s": seconds for name, seconds in timings.items()},
            **rollout.episodes.timings,  # the rollout's parts: attempt_s, reflect_s, ...
            "step_s": step_s,
        }),
    )  # fmt: skip


def rollout_metrics(
    rollout: Rollout, window: Span, fleet_busy: list[Span], learner_busy: list[Span]
) -> dict[str, float]:
    """What the rollout made (episode_metrics), at what pace, how stale; and, within this
    step's own window, how long the fleet generated in the background (the next step's rollout,
    started ahead, an abandoned try included) while the learner learned or synced: overlap_s,
    and overlap_frac, its share of the step, in [0, 1] (rrr.core.timing.both_busy_share). Both
    are 0 in a sequential run and on the last step, which starts no rollout ahead."""
    episodes = rollout.episodes
    generate_s = rollout.finished - rollout.started
    return {
        **{k: v for k, v in episodes.metrics().items() if not k.startswith("count/")},
        **rollout.draw_metrics,  # online first tries; backfill's groups and rounds
        "verifier_errors": float(episodes.counters.get("verifier_error", 0)),
        "failures_consumed": float(rollout.cursor["consumed"]),
        # over the rollout's own generation time (a rollout started ahead is not waited for)
        "tokens_per_s": episodes.generated_tokens / max(generate_s, 1e-9),
        "staleness": float(rollout.staleness()),
        "generate_s": generate_s,
        "overlap_s": both_busy_s(window, fleet_busy, learner_busy),
        "overlap_frac": both_busy_share(window, fleet_busy, learner_busy),
    }


def eval_due(cfg: Config, step: int) -> bool:
    """Held-out evaluation every logging.eval_every steps, at the last step, and before the
    first (step 0, the vanilla model) when logging.eval_at_start."""
    every = cfg.logging.eval_every
    if not every:
        return False
    if step == 0:
        return cfg.logging.eval_at_start
    return step % every == 0 or step == cfg.learner.max_steps


def sync_due(cfg: Config, step: int) -> bool:
    """Push the weights after this step: every sync.every_n_steps steps, and before every
    periodic evaluation. With every_n_steps > 1 an evaluation on a step that would not sync
    would otherwise score stale rollout weights (the last step's included); syncing first
    (rather than evaluating only synced steps) keeps the evaluation schedule and always scores
    the learner's weights. The rollouts after it then use these fresher weights."""
    return step % cfg.sync.every_n_steps == 0 or eval_due(cfg, step)


def periodic_eval(cfg: Config, stack: Any, run_dir: Path, step: int) -> dict[str, float]:
    """Evaluate the current policy on the held-out problems, with the same procedure as a
    fresh `rrr eval` (rrr/driver/evaluate.py: distinct problems, k samples, noise keyed on
    eval.seed, not on the run's history); the full results (per-problem outcomes included) go
    to run_dir/eval/step_XXXXXXXX, so `rrr eval --compare` pairs any two steps. With
    eval.reuse_first_tries, steps after 0 reflect on step 0's failed first tries."""
    from rrr.driver.evaluate import evaluate, load_eval_rows, write_results

    rows, info = load_eval_rows(cfg, stack.task)
    reference = None
    if cfg.eval.reuse_first_tries and step > 0:
        reference = json.loads((run_dir / "eval" / f"step_{0:08d}" / "results.json").read_text())
    # KV cached by training prompts was computed in other batches; a fresh engine has none.
    stack.fleet.reset_prefix_cache()
    r = evaluate(cfg, stack.engine, rows, first_tries_from=reference)
    r.update(info)
    r["step"] = step
    write_results(r, run_dir / "eval" / f"step_{step:08d}")
    log.info(
        "held-out eval at step %d (%d problems x %d samples, %.0f s): 1st try %.1f%%%s, "
        "2nd try %.1f%%", step, r["num_queries"], r["samples_per_problem"], r["seconds"],
        100 * r["first_try_accuracy"], " (step 0's, reused)" if reference else "",
        100 * r["second_try_accuracy"],
    )  # fmt: skip
    return {
        "eval/first_try_accuracy": r["first_try_accuracy"],
        "eval/second_try_accuracy": r["second_try_accuracy"],
        "eval/avg_reflection_tokens": r["avg_reflection_tokens"],
        "timing/eval_s": r["seconds"],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # everything is configuration


def run(args: argparse.Namespace, cfg: Config) -> int:

    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {summary['run_dir']}  (curves: rrr report {summary['run_dir']})")
    return 0
