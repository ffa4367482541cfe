"""Done-when checks of issue 16 on the real stack (local Ray, vLLM's CPU engine, verifier
actors, a learner): a third-party task installed with pip trains a step without touching rrr;
the code task trains a step on the smoke model, is evaluated on HumanEval rows, and the
code-trained model is evaluated on Countdown (cross-task) into the report's transfer table."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rrr.driver.cli import main
from tests.test_plugins import example_copy

ROOT = Path(__file__).resolve().parents[1]

# Everything cut to the smallest run that still builds failures, reflects, retries and steps.
TINY = [
    "data.limit=4", "failures.samples_per_query=2", "episode.num_reflections=2",
    "episode.max_reflection_tokens=16", "learner.failures_per_step=2",
    "learner.micro_batch_size=2", "learner.max_steps=1", "logging.checkpoint_every=1",
    "rollout.kv_cache_gib=0.25", "rollout.in_process_engine=true", "logging.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory):
    """Installed into this environment with pip, as its README says, and removed afterwards.
    Not editable: Ray's worker processes that are already running then find it in
    site-packages like any package installed after they started."""
    pip = [sys.executable, "-m", "pip", "-q"]
    source = example_copy(tmp_path_factory)
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--no-build-isolation",
                    str(source)], check=True, capture_output=True)  # fmt: skip
    importlib.invalidate_caches()
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "rrr-reverse-task"], check=True)
        importlib.invalidate_caches()


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_third_party_task_trains_a_step(example_installed, ray_local, tiny_model_path, tmp_path,
                                        capsys):  # fmt: skip
    run = tmp_path / "run"
    args = [
        "train", "--config", str(ROOT / "configs/smoke-cpu.yaml"),
        f"model.name_or_path={tiny_model_path}", "model.max_model_len=1024",
        "data.task=reverse", "data.source=reverse-words", "data.fewshot=0",
        "failures.max_tokens=12", "episode.max_retry_tokens=12", *TINY,
        f"logging.output_dir={run}",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.split("run directory:")[0])
    assert summary["end_step"] == 1
    (step,) = [m for m in _metrics(run) if m["step"] == 1]
    assert step["rollout/reflection_tokens_mean"] > 0 and "learner/loss" in step
    # the plugin's verifier judged every retry in the pool
    assert step["rollout/verifier_errors"] == 0
    assert "task: reverse" in (run / "config.yaml").read_text()


def test_code_task_trains_a_step_then_evaluates_on_humaneval_and_countdown(
    ray_local, smollm2_path, sample_data, tmp_path, capsys
):
    run = tmp_path / "code-run"
    args = [
        "train", "--config", str(ROOT / "configs/code-smoke-cpu.yaml"),
        f"data.source={sample_data / 'code_sample.jsonl'}", "failures.max_tokens=96",
        "episode.max_retry_tokens=96", *TINY,
        "rollout.kv_cache_gib=0.5",  # SmolLM2's 46 KiB a token: ~11k tokens of code prompts
        # The trained model on HumanEval rows, at the end of the step (the held-out set).
        f"data.eval_source={sample_data / 'humaneval_sample.jsonl'}", "logging.eval_every=1",
        "data.eval_limit=2", "eval.max_tokens=96", "eval.max_reflection_tokens=16",
        f"logging.output_dir={run}",
    ]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    (step,) = [m for m in _metrics(run) if m["step"] == 1 and "learner/loss" in m]
    assert step["rollout/reflection_tokens_mean"] > 0
    assert step["rollout/verifier_errors"] == 0  # every retry ran in the sandbox inside the pool
    held_out = json.loads((run / "eval" / "step_00000001" / "results.json").read_text())
    assert held_out["task"] == "code" and len(held_out["per_query"]) == 2
    assert held_out["per_query"][0]["key"].startswith("code:")
    errors = set(held_out["first_try_errors"])
    assert errors <= {"format", "syntax", "runtime", "wrong_answer", "timeout"}, errors

    # Cross-task: the code-trained model on Countdown, then the report's transfer table.
    export = tmp_path / "export"
    assert main(["export", str(run), "--out", str(export)]) == 0
    out = tmp_path / "code-on-countdown"
    assert main([
        "eval", "--config", str(ROOT / "configs/smoke-cpu.yaml"),
        f"model.name_or_path={export}", "data.eval_limit=2", "eval.max_tokens=16",
        "eval.max_reflection_tokens=8",
        "rollout.kv_cache_gib=0.25", "rollout.in_process_engine=true", "--out", str(out),
    ]) == 0  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "countdown" and result["trained"]["task"] == "code"
    capsys.readouterr()
    assert main(["paper-report", str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    transfer = md.split("## Transfer")[1].split("\n## ")[0]
    assert "| trained on code | " in transfer and "(n=2)" in transfer
