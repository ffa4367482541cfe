"""Per-step training metrics: one `MetricsLogger.log(step, metrics)` call fans out to sinks.

Sinks (each a small class with `write` and `close`; the logger holds a list of them):

- `JsonlSink`: `<run_dir>/metrics.jsonl`, one JSON object per line
  (`{"step": 12, "time": 1.7e9, "rollout/reward_mean": 0.4, ...}`), flushed and fsynced every
  call so a crash loses nothing. `rrr report` reads it. A step may appear on several lines
  (the driver logs periodic evaluation as a second call for the same step); readers merge them.
  Keys sit in NAMESPACES; the logger refuses any other, and a key logged twice in one step.
- `TensorBoardSink`: event files under `<run_dir>/tb` (`logging.tensorboard`).
- `RayGaugeSink`: one `ray.util.metrics.Gauge` per metric (`logging.ray_metrics`), named
  `rrr_<sanitized name>`; Prometheus sees `ray_rrr_<name>` (dashboard Metrics tab, Grafana).
  Silent until Ray is initialized in this process.
- `WandbSink`: Weights & Biases (`logging.wandb_project`); the run id is kept in the run
  directory so a resumed run continues the same W&B run.

Resuming: `MetricsLogger(run_dir, cfg, resume_step=N)` (N = the first step the resumed run
will log) rewrites metrics.jsonl without lines whose step >= N, and TensorBoard purges events
at steps >= N, so curves never show the abandoned tail twice. `resume_step=None` is a fresh
run: an existing metrics.jsonl is moved aside (`metrics.jsonl.<unix time>.old`), not mixed in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rrr.core.config import Config, LoggingConfig

log = logging.getLogger("rrr.metrics")

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id.txt"
RAY_METRIC_PREFIX = "rrr_"

# Every step metric sits under the namespace of the stage that measured it, so four producers
# filling one dict cannot overwrite each other unseen (the learner's step_s was lost that way).
NAMESPACES: dict[str, str] = {
    "rollout/": "the rollout and its episodes: rewards, lengths, drops, pace, staleness, faults",
    "batch/": "the train batch made of them: group statistics, what was kept",
    "learner/": "the learner group's optimizer step: loss, KL, grad norm, its own pace, restarts",
    "sync/": "the weight push from the learner to the rollout fleet",
    "timing/": "wall-clock seconds of the driver's stages, and of the whole step",
    "eval/": "the periodic held-out evaluation",
}

# Step metrics before they had namespaces -> their names now. `read_jsonl_records` renames
# them, so `rrr report` and bench/async.py still read a run logged by an older rrr.
LEGACY_NAMES: dict[str, str] = {
    **{k: f"rollout/{k}" for k in (
        "episodes", "failures", "reward_mean", "second_try_success", "first_try_success",
        "reflection_tokens_mean", "reflection_truncated_frac", "generated_tokens",
        "tokens_per_s", "failures_consumed", "verifier_errors", "verifier_retries",
        "dropped_context_overflow", "dropped_solved_before_reward", "dropped_verifier_error",
        "skipped_first_context_overflow", "skipped_first_verifier_error",
    )},
    "rollout_worker_restarts": "rollout/worker_restarts",
    **{k: f"batch/{k}" for k in (
        "reward_std", "frac_zero_std", "train_seqs", "dropped_seqs", "groups_under_2",
    )},
    **{k: f"learner/{k}" for k in (
        "loss", "policy_loss", "kl", "clip_frac", "ratio_mean", "grad_norm", "lr", "global_step",
        "num_tokens", "seq_tokens", "forward_tokens", "seqs", "tis_weight_mean",
        "tis_weight_max", "tis_clip_frac",
    )},
    "learner_restarts": "learner/restarts",
    "reflection_tokens": "learner/num_tokens",
    "step_s": "timing/step_s",
    "sync_s": "timing/sync_s",
}  # fmt: skip


class MetricNameError(ValueError):
    """A step metric outside the namespaces, or one key written twice in one step."""


def under(namespace: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """`metrics` with every key put under `namespace` (one of NAMESPACES)."""
    if namespace not in NAMESPACES:
        raise MetricNameError(f"{namespace!r} is not a metric namespace ({', '.join(NAMESPACES)})")
    return {namespace + k: float(v) for k, v in metrics.items()}


def merge_metrics(*parts: Mapping[str, float]) -> dict[str, float]:
    """One dict of the producers' metrics. A key that two of them give is an error: which one
    the step would log depended on the order of `update` calls."""
    out: dict[str, float] = {}
    for part in parts:
        twice = out.keys() & part.keys()
        if twice:
            raise MetricNameError(f"metric(s) given by two producers: {sorted(twice)}")
        out.update(part)
    return out


def check_metric_names(names: Iterable[str]) -> None:
    """Refuse a step metric outside NAMESPACES (with the namespaces, in the error)."""
    bad = sorted(n for n in names if not n.startswith(tuple(NAMESPACES)))
    if bad:
        raise MetricNameError(
            f"step metric(s) {bad} are in no namespace; use one of {', '.join(NAMESPACES)}"
        )


class MetricsSink(Protocol):
    """Where one step's metrics go. `metrics` holds finite or non-finite floats only."""

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- jsonl


def read_jsonl_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse metrics.jsonl: (records with an integer "step", count of malformed lines).

    A malformed line (not JSON, not an object, no integer step) is typically the half-written
    last line of a crashed run; it is counted, never fatal.
    """
    records: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            step = obj.get("step") if isinstance(obj, dict) else None
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step):
                bad += 1
                continue
            obj["step"] = int(step)
            for legacy, name in LEGACY_NAMES.items():  # a run logged before the namespaces
                if legacy in obj and name not in obj:
                    obj[name] = obj.pop(legacy)
            records.append(obj)
    return records, bad


class JsonlSink:
    """Append-only metrics.jsonl; each line is flushed and fsynced before `write` returns."""

    def __init__(self, path: Path, resume_step: int | None = None, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            if resume_step is None:
                # A fresh run in a used directory: keep the old curve, but out of this file.
                aside = path.with_name(f"{path.name}.{int(time.time())}.old")
                os.replace(path, aside)
                log.warning("fresh run: moved the previous %s to %s", path.name, aside.name)
            else:
                self._truncate(resume_step)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (held open for the run)

    def _truncate(self, resume_step: int) -> None:
        """Rewrite the file without lines at steps >= resume_step (and without broken lines):
        those steps are about to be logged again by the resumed run."""
        records, bad = read_jsonl_records(self.path)
        kept = [r for r in records if r["step"] < resume_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # atomic: a crash here leaves the old or the new file
        log.info(
            "resuming at step %d: kept %d metric lines, dropped %d later and %d malformed",
            resume_step,
            len(kept),
            len(records) - len(kept),
            bad,
        )

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        # JSON has no NaN/inf; null keeps the line valid for strict readers (jq, pandas).
        row: dict[str, Any] = {"step": step, "time": round(wall_time, 3)}
        row.update({k: (v if math.isfinite(v) else None) for k, v in metrics.items()})
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# ---------------------------------------------------------------- TensorBoard


class TensorBoardSink:
    """Scalars under <run_dir>/tb; the metric name is the tag ("timing/rollout_s" groups)."""

    def __init__(self, log_dir: Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError(
                "logging.tensorboard is true but TensorBoard is not importable "
                f"({exc}); install `tensorboard` or set logging.tensorboard=false"
            ) from exc
        # purge_step makes TensorBoard drop earlier events at steps >= it: the abandoned tail
        # when resuming, everything from a previous run when a fresh run reuses the directory.
        if resume_step is None and any(log_dir.glob("events.out.tfevents.*")):
            resume_step = 0
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_step)

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=step, walltime=wall_time)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


# ---------------------------------------------------------------- Ray metrics


def sanitize_metric_name(name: str, prefix: str = RAY_METRIC_PREFIX) -> str:
    """A Prometheus-safe name: prefix + name with every run of characters outside
    [a-zA-Z0-9_] replaced by one '_' ("timing/rollout_s" -> "rrr_timing_rollout_s")."""
    body = re.sub(r"[^a-zA-Z0-9_]+", "_", name).strip("_")
    return prefix + (body or "unnamed")


class RayGaugeSink:
    """One Gauge per metric, tagged with the run name so runs sharing a cluster stay apart.

    Ray is looked up in sys.modules, never imported here: if the driver has not imported it,
    it cannot be initialized, and importing it would cost seconds for nothing.
    """

    def __init__(self, run_name: str, tag_key: str = "run") -> None:
        self.tags = {tag_key: run_name}
        self.tag_keys = (tag_key,)
        self.gauges: dict[str, Any] = {}
        self._failed = False

    def _ray_initialized(self) -> bool:
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized()

    def _gauge(self, key: str, description: str) -> Any:
        from ray.util.metrics import Gauge

        gauge = self.gauges.get(key)
        if gauge is None:
            gauge = Gauge(key, description=description, tag_keys=self.tag_keys)
            gauge.set_default_tags(self.tags)
            self.gauges[key] = gauge
        return gauge

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        if self._failed or not self._ray_initialized():
            return
        try:
            for name, value in metrics.items():
                if math.isfinite(value):
                    self._gauge(sanitize_metric_name(name), f"rrr metric {name}").set(value)
            self._gauge(RAY_METRIC_PREFIX + "step", "last logged step").set(float(step))
        except Exception:  # a dashboard problem must never stop training
            self._failed = True
            log.exception("Ray metrics export failed; disabling it for this run")

    def close(self) -> None:
        self.gauges.clear()


# ---------------------------------------------------------------- Weights & Biases


class WandbSink:
    """wandb.log(metrics, step=step); the run id is stored in the run directory so a resumed
    training job continues the same W&B run instead of starting a second one."""

    def __init__(
        self,
        project: str,
        run_dir: Path,
        run_name: str,
        config: dict[str, Any] | None,
        resume: bool,
    ) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError(
                f"logging.wandb_project is set ({project!r}) but the `wandb` package is not "
                "installed: `pip install wandb`, or set logging.wandb_project='' to disable it"
            ) from exc
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.exists() else None
        if run_id is None:
            run_id = wandb.util.generate_id()
            id_file.write_text(run_id + "\n")
        self._wandb = wandb
        self._run = wandb.init(
            project=project,
            name=run_name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config,
        )

    def write(self, step: int, metrics: Mapping[str, float], wall_time: float) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        self._run.finish()


# ---------------------------------------------------------------- the logger


def _as_float(value: Any) -> float | None:
    """float() of numbers, bools, numpy scalars and 0-d tensors; None for anything else."""
    if isinstance(value, str):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class MetricsLogger:
    """Fans each step's metrics out to the configured sinks.

    Args:
        run_dir: the run directory (`logging.output_dir`); metrics.jsonl and tb/ go there.
        cfg: the run's Config (its `logging` section picks the sinks; the whole config is sent
            to W&B) or just a LoggingConfig. None = LoggingConfig defaults.
        resume_step: first step a resumed run will log; later lines are dropped (see module
            doc). None = a fresh run.
        run_name: tag for Ray gauges and the W&B run name; default: the run directory's name.
        sinks: replace the configured sinks entirely (tests, custom back-ends).
    """

    def __init__(
        self,
        run_dir: str | Path,
        cfg: Config | LoggingConfig | None = None,
        *,
        resume_step: int | None = None,
        run_name: str | None = None,
        sinks: Sequence[MetricsSink] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self.run_name = run_name or self.run_dir.resolve().name
        self._warned: set[str] = set()
        self._step: int | None = None  # the step being logged, and its keys so far
        self._logged: set[str] = set()
        if sinks is not None:
            self.sinks: list[MetricsSink] = list(sinks)
            return
        log_cfg = cfg.logging if isinstance(cfg, Config) else (cfg or LoggingConfig())
        self.sinks = [JsonlSink(self.path, resume_step)]
        try:
            if log_cfg.tensorboard:
                self.sinks.append(TensorBoardSink(self.run_dir / "tb", resume_step))
            if log_cfg.ray_metrics:
                self.sinks.append(RayGaugeSink(self.run_name))
            if log_cfg.wandb_project:
                config = cfg.to_dict() if isinstance(cfg, Config) else None
                self.sinks.append(
                    WandbSink(
                        log_cfg.wandb_project,
                        self.run_dir,
                        self.run_name,
                        config,
                        resume=resume_step is not None,
                    )
                )
        except BaseException:
            self.close()  # do not leak the open jsonl / event files on a config error
            raise

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record `metrics` for `step` in every sink. Values that are not numbers are dropped
        (with one warning per key) rather than failing a long training run. A step may be
        logged in several calls (the step, then its evaluation), but no key twice in one step,
        and every key in one of NAMESPACES: both raise MetricNameError."""
        check_metric_names(metrics)
        if step != self._step:
            self._step, self._logged = step, set()
        twice = self._logged & metrics.keys()
        if twice:
            raise MetricNameError(f"step {step}: metric(s) {sorted(twice)} logged twice")
        self._logged |= metrics.keys()
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            number = _as_float(value)
            if number is None:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("metric %r has a non-numeric value %r; not logged", name, value)
                continue
            clean[str(name)] = number
        wall_time = time.time()
        for sink in self.sinks:
            sink.write(int(step), clean, wall_time)

    def close(self) -> None:
        """Close every sink; safe to call twice."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing metrics sink %s failed", type(sink).__name__)
        self.sinks = []

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- console line

# (metric key, label, format): the fixed order of the per-step console line.
STEP_LINE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("rollout/reward_mean", "reward", "{:.3f}"),
    ("rollout/first_try_success", "1st", "{:.3f}"),
    ("rollout/second_try_success", "2nd", "{:.3f}"),
    ("rollout/reflection_tokens_mean", "refl_tok", "{:.0f}"),
    ("learner/kl", "kl", "{:.2e}"),
    ("rollout/tokens_per_s", "tok/s", "{:,.0f}"),
    ("timing/sync_s", "sync", "{:.1f}s"),
    ("timing/step_s", "time", "{:.1f}s"),
)


# Fields that only some modes measure: left out of the line when the metric is absent, rather
# than shown as '-'. First-try success exists only in online mode; in dataset mode every drawn
# query is a stored failure, so it would read 0.000 by construction (issue 15).
OPTIONAL_STEP_FIELDS = frozenset({"rollout/first_try_success"})


def format_step_line(step: int, max_steps: int, metrics: Mapping[str, Any]) -> str:
    """One compact line per step, fields always in the same order, '-' for a missing value
    (optional fields, OPTIONAL_STEP_FIELDS, are left out when missing):

    step   12/1750 | reward 0.375 | 1st 0.250 | 2nd 0.375 | refl_tok 142 | kl 1.23e-03 |
    tok/s 2,345 | sync 1.2s | time 34.5s      (on one line; online mode)
    """
    width = len(str(max_steps))
    parts = [f"step {step:>{width}}/{max_steps}"]
    for key, label, fmt in STEP_LINE_FIELDS:
        if key in OPTIONAL_STEP_FIELDS and metrics.get(key) is None:
            continue
        value = _as_float(metrics.get(key))
        if value is None:
            text = "-"
        elif not math.isfinite(value):
            text = str(value)  # nan / inf: say so rather than hide it
        else:
            text = fmt.format(value)
        parts.append(f"{label} {text}")
    return " | ".join(parts)
