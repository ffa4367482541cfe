"""MetricsLogger: jsonl per step (flushed, resume truncation), TensorBoard, Ray gauges, W&B,
and the one-line-per-step console format."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from rrr.core.config import Config, LoggingConfig
from rrr.core.metrics import (
    LEGACY_NAMES,
    METRICS_FILE,
    NAMESPACES,
    JsonlSink,
    MetricNameError,
    MetricsLogger,
    RayGaugeSink,
    format_step_line,
    merge_metrics,
    read_jsonl_records,
    sanitize_metric_name,
    under,
)

STEP = {
    "rollout/reward_mean": 0.375,
    "rollout/first_try_success": 0.0,
    "rollout/second_try_success": 0.375,
    "rollout/reflection_tokens_mean": 142.4,
    "learner/kl": 0.00123,
    "learner/loss": -0.02,
    "learner/lr": 5e-7,
    "learner/grad_norm": 0.8,
    "batch/frac_zero_std": 0.25,
    "rollout/tokens_per_s": 2345.6,
    "timing/step_s": 34.56,
    "timing/rollout_s": 20.0,
    "timing/verify_s": 1.0,
    "timing/learn_s": 12.0,
    "timing/sync_s": 1.23,
    "rollout/failures_consumed": 256.0,
    "rollout/verifier_errors": 0.0,
}


def jsonl_only(**kw: object) -> LoggingConfig:
    return LoggingConfig(tensorboard=False, ray_metrics=False, wandb_project="", **kw)


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / METRICS_FILE).read_text().splitlines()]


def test_jsonl_line_per_step_is_on_disk_before_close(tmp_path):
    logger = MetricsLogger(tmp_path, jsonl_only())
    logger.log(1, STEP)
    # Read while the logger is still open: a crash right now must lose nothing.
    (row,) = lines(tmp_path)
    assert row["step"] == 1 and row["rollout/reward_mean"] == 0.375
    assert row["timing/learn_s"] == 12.0
    assert abs(row["time"] - __import__("time").time()) < 60
    logger.log(2, {"rollout/reward_mean": 0.5})
    assert [r["step"] for r in lines(tmp_path)] == [1, 2]
    logger.close()
    logger.close()  # idempotent


def test_jsonl_coerces_numbers_and_drops_junk(tmp_path):
    import numpy as np
    import torch

    with MetricsLogger(tmp_path, jsonl_only()) as logger:
        logger.log(1, {"rollout/a": np.float32(0.5), "rollout/b": torch.tensor(2.0),
                       "rollout/c": True, "rollout/d": "text", "rollout/e": float("nan"),
                       "rollout/f": 3})  # fmt: skip
    (row,) = lines(tmp_path)
    assert row["rollout/a"] == 0.5 and row["rollout/b"] == 2.0 and row["rollout/c"] == 1.0
    assert row["rollout/f"] == 3.0 and "rollout/d" not in row
    assert row["rollout/e"] is None  # NaN has no JSON form; the line stays strict JSON


def test_resume_truncates_later_steps_and_broken_tail(tmp_path):
    with MetricsLogger(tmp_path, jsonl_only()) as logger:
        for step in range(1, 8):
            logger.log(step, {"rollout/reward_mean": step / 10})
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 8, "reward_me')  # the half-written line of a crash
    with MetricsLogger(tmp_path, jsonl_only(), resume_step=5) as logger:
        assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3, 4]
        logger.log(5, {"rollout/reward_mean": 0.55})
    rows = lines(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["rollout/reward_mean"] == 0.55


def test_fresh_run_moves_old_file_aside(tmp_path):
    with MetricsLogger(tmp_path, jsonl_only()) as logger:
        logger.log(1, {"rollout/reward_mean": 0.1})
    with MetricsLogger(tmp_path, jsonl_only()) as logger:
        logger.log(1, {"rollout/reward_mean": 0.9})
    assert [r["rollout/reward_mean"] for r in lines(tmp_path)] == [0.9]
    (old,) = tmp_path.glob(METRICS_FILE + ".*.old")
    assert json.loads(old.read_text())["rollout/reward_mean"] == 0.1


def test_read_jsonl_records_counts_malformed(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "x": 1}\nnot json\n[1, 2]\n{"x": 2}\n{"step": "a"}\n\n'
                    '{"step": 2.0, "x": 3}\n')  # fmt: skip
    records, bad = read_jsonl_records(path)
    assert [r["step"] for r in records] == [1, 2] and bad == 4


def test_tensorboard_event_file_holds_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = LoggingConfig(tensorboard=True, ray_metrics=False)
    with MetricsLogger(tmp_path, cfg) as logger:
        logger.log(1, STEP)
        logger.log(2, {**STEP, "rollout/reward_mean": 0.5})
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "timing/rollout_s" in acc.Tags()["scalars"]
    reward = [(e.step, e.value) for e in acc.Scalars("rollout/reward_mean")]
    assert reward == [(1, 0.375), (2, 0.5)]


def test_sinks_are_pluggable(tmp_path):
    seen = []

    class Capture:
        def write(self, step, metrics, wall_time):
            seen.append((step, dict(metrics)))

        def close(self):
            seen.append("closed")

    with MetricsLogger(tmp_path, sinks=[Capture()]) as logger:
        logger.log(3, {"learner/kl": 0.1})
    assert seen == [(3, {"learner/kl": 0.1}), "closed"]


def test_full_config_accepted(tmp_path):
    cfg = Config()
    cfg.logging.tensorboard = False
    cfg.logging.ray_metrics = False
    with MetricsLogger(tmp_path, cfg, resume_step=None) as logger:
        assert [type(s) for s in logger.sinks] == [JsonlSink]
        logger.log(1, {"learner/loss": 1.0})
    assert lines(tmp_path)[0]["learner/loss"] == 1.0


def test_sanitize_metric_name():
    assert sanitize_metric_name("rollout/reward_mean") == "rrr_rollout_reward_mean"
    assert sanitize_metric_name("timing/rollout_s") == "rrr_timing_rollout_s"
    assert sanitize_metric_name("eval/second-try acc.%") == "rrr_eval_second_try_acc"
    assert sanitize_metric_name("1st") == "rrr_1st"
    assert sanitize_metric_name("///") == "rrr_unnamed"


def test_ray_sink_is_silent_without_ray(tmp_path, monkeypatch):
    fake_ray = types.SimpleNamespace(is_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    sink = RayGaugeSink("run")
    sink.write(1, {"learner/kl": 0.1}, 0.0)
    assert sink.gauges == {}


@pytest.mark.slow
def test_ray_gauges_created_when_ray_is_up(tmp_path, ray_local):
    cfg = LoggingConfig(tensorboard=False, ray_metrics=True)
    with MetricsLogger(tmp_path, cfg, run_name="test-run") as logger:
        logger.log(1, STEP)
        logger.log(2, STEP)
        (ray_sink,) = [s for s in logger.sinks if isinstance(s, RayGaugeSink)]
        assert not ray_sink._failed
        wanted = {"rrr_rollout_reward_mean", "rrr_timing_rollout_s", "rrr_step"}
        assert wanted <= set(ray_sink.gauges)
        assert len(ray_sink.gauges) == len(STEP) + 1


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    cfg = LoggingConfig(tensorboard=False, ray_metrics=False, wandb_project="rrr")
    with pytest.raises(RuntimeError, match=r"logging\.wandb_project.*wandb"):
        MetricsLogger(tmp_path, cfg)


def test_wandb_logs_and_resumes_same_run(tmp_path, monkeypatch):
    calls: list = []

    class Run:
        def log(self, data, step):
            calls.append(("log", step, data))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        return Run()

    fake = types.SimpleNamespace(init=init, util=types.SimpleNamespace(generate_id=lambda: "abc"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = Config()
    cfg.logging.tensorboard, cfg.logging.ray_metrics = False, False
    cfg.logging.wandb_project = "rrr"
    with MetricsLogger(tmp_path, cfg) as logger:
        logger.log(1, {"learner/kl": 0.5})
    fake.util.generate_id = lambda: "other"
    with MetricsLogger(tmp_path, cfg, resume_step=2):
        pass
    inits = [c[1] for c in calls if c[0] == "init"]
    assert inits[0]["project"] == "rrr" and inits[0]["config"]["learner"]["kl_coef"] == 0.001
    assert [i["id"] for i in inits] == ["abc", "abc"]  # the resumed job continues the W&B run
    assert ("log", 1, {"learner/kl": 0.5}) in calls


def test_format_step_line_full():
    line = format_step_line(12, 1750, STEP)
    assert line == (
        "step   12/1750 | reward 0.375 | 1st 0.000 | 2nd 0.375 | refl_tok 142 | kl 1.23e-03 | "
        "tok/s 2,346 | sync 1.2s | time 34.6s"
    )


def test_format_step_line_missing_and_nan():
    line = format_step_line(3, 5, {"rollout/reward_mean": 0.25, "learner/kl": float("nan")})
    assert line == (
        "step 3/5 | reward 0.250 | 2nd - | refl_tok - | kl nan | tok/s - | sync - | time -"
    )


def test_format_step_line_without_first_try_in_dataset_mode():
    """Dataset mode measures no first try (every drawn query is a stored failure): the line
    must not print a '1st 0.000' that only reflects how the data was built."""
    dataset_mode = {k: v for k, v in STEP.items() if k != "rollout/first_try_success"}
    line = format_step_line(12, 1750, dataset_mode)
    assert "1st" not in line
    assert line.startswith("step   12/1750 | reward 0.375 | 2nd 0.375 | refl_tok 142 |")
    online = format_step_line(12, 1750, {**dataset_mode, "rollout/first_try_success": 0.25})
    assert "| 1st 0.250 | 2nd 0.375 |" in online


def test_a_key_outside_the_namespaces_or_logged_twice_in_a_step_is_refused(tmp_path):
    with MetricsLogger(tmp_path, jsonl_only()) as logger:
        with pytest.raises(MetricNameError, match=r"\['reward_mean'\].*no namespace"):
            logger.log(1, {"reward_mean": 0.5})
        logger.log(1, {"rollout/reward_mean": 0.5, "timing/step_s": 3.0})
        logger.log(1, {"eval/first_try_accuracy": 0.6, "timing/eval_s": 9.0})  # a 2nd call: ok
        with pytest.raises(MetricNameError, match=r"step 1.*'timing/step_s'.*twice"):
            logger.log(1, {"timing/step_s": 4.0})
        logger.log(2, {"rollout/reward_mean": 0.7, "timing/step_s": 3.0})  # a new step
    assert [(r["step"], r.get("rollout/reward_mean")) for r in lines(tmp_path)] == [
        (1, 0.5), (1, None), (2, 0.7)
    ]  # the refused calls wrote nothing


def test_merge_metrics_refuses_a_key_from_two_producers():
    assert merge_metrics(under("rollout/", {"a": 1}), under("learner/", {"a": 2})) == {
        "rollout/a": 1.0, "learner/a": 2.0
    }
    with pytest.raises(MetricNameError, match=r"two producers: \['learner/step_s'\]"):
        merge_metrics({"learner/step_s": 1.0}, {"learner/step_s": 2.0})
    with pytest.raises(MetricNameError, match="not a metric namespace"):
        under("misc/", {"a": 1})


def test_a_run_logged_before_the_namespaces_still_reads(tmp_path):
    """`rrr report` and bench/async.py read metrics.jsonl files of older runs: their flat keys
    come back under today's names (a key already namespaced is left alone)."""
    path = tmp_path / METRICS_FILE
    old = {"step": 1, "reward_mean": 0.2, "kl": 0.01, "step_s": 9.0, "reflection_tokens": 40,
           "timing/learn_s": 3.0}  # fmt: skip
    path.write_text(json.dumps(old) + "\n")
    (row,), bad = read_jsonl_records(path)
    assert bad == 0 and row == {"step": 1, "rollout/reward_mean": 0.2, "learner/kl": 0.01,
                                "timing/step_s": 9.0, "learner/num_tokens": 40,
                                "timing/learn_s": 3.0}  # fmt: skip
    assert all(n.startswith(tuple(NAMESPACES)) for n in LEGACY_NAMES.values())
