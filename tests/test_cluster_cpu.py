"""configs/cluster-cpu.yaml end to end: `rrr train` with 2 learner ranks (DeepSpeed ZeRO-3 over
gloo), 2 rollout workers and the collective weight sync, for 3 steps; its log names the ranks,
the workers, the backend and every push's timings. The tiny model stands in for SmolLM2 (the
preset's own model trains the same way, only slower)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rrr.driver.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_cpu_preset_trains_three_steps_with_collective_sync(
    ray_local, tiny_model_path, tmp_path, caplog
):
    run = tmp_path / "run"
    caplog.set_level(logging.INFO)
    code = main([
        "train", "--config", str(ROOT / "configs/cluster-cpu.yaml"),
        f"model.name_or_path={tiny_model_path}", "data.limit=8",
        "episode.max_reflection_tokens=16", "episode.max_retry_tokens=16",
        "failures.max_tokens=16", "learner.lr=1e-4", f"logging.output_dir={run}",
        "logging.progress=false", "rollout.kv_cache_gib=0.25", "rollout.in_process_engine=true",
    ])  # fmt: skip
    assert code == 0
    log = caplog.text
    assert "weight sync: collective over gloo" in log
    assert "2 learner rank(s) -> 2 rollout worker(s), 2 vLLM worker(s)" in log
    pushes = [line for line in log.splitlines() if "sync: collective/gloo" in line]
    assert len(pushes) == 3 and all("gather" in p and "load" in p for p in pushes), pushes
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2, 3]
    # a loss that is not NaN (NaN != NaN)
    assert all(m["sync/bytes"] > 0 and m["learner/loss"] == m["learner/loss"] for m in steps)
    state = json.loads((run / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert state["world_size"] == 2 and state["backend"] == "deepspeed"
