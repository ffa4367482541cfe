"""bench/learner_check.py (issue 32 item 5), the learner check for a machine with CUDA torch and
nothing else, run here in its reduced mode. It runs as a script from outside the repository,
in a clean environment, the way a bare GPU machine would run it. Every check must pass (the
DeepSpeed ones are skipped in reduced mode), one summary file must hold them, and neither Ray
nor vLLM may be imported, though both are installed here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "learner_check.py"
CHECKS = ("learner_step", "shared_prefix", "adamw", "mfu")


@pytest.mark.model  # builds and trains random-init models in its subprocess
def test_learner_check_reduced_mode_passes_without_ray_or_vllm(tmp_path: Path) -> None:
    summary = tmp_path / "out" / "summary.md"
    # PATH and HOME only: no PYTHONPATH, no Ray or vLLM settings, no GPU.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary", str(summary), "--budget-s", "120"],
        cwd=tmp_path,  # not the repository: the script puts its source tree on sys.path
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = summary.read_text()
    assert "- mode: reduced" in text and "- device: cpu" in text
    assert f"- rrr: source tree {ROOT}" in text
    assert "- result: PASS (4 passed, 0 failed, 2 skipped)" in text
    for name in CHECKS:
        assert re.search(rf"^\| {name} \| PASS \|", text, re.M), name
    for name in ("deepspeed_step", "deepspeed_mfu"):
        assert re.search(rf"^\| {name} \| SKIP \| [0-9.]+ \| reduced mode \|", text, re.M), name
    # The numbers each check reports are in the file.
    for key in (
        "log-prob max abs diff",
        "grad max abs diff",
        "grad cosine",
        "peak_mib shared",
        "fused step s",
        "max abs diff fused vs foreach",
        "MFU",
        "tokens/s",
    ):
        assert f"- {key}: " in text, key
    assert "- implementation: fused=True on cpu" in text
    assert "- ray/vllm modules imported: none" in text
    wall = float(re.search(r"^- wall: ([0-9.]+) s$", text, re.M).group(1))
    assert wall < 120


def test_learner_check_writes_json_and_fails_on_a_bad_check(tmp_path: Path, monkeypatch) -> None:
    """In process, with the checks replaced by stubs: a failed check gives exit status 1 and
    FAIL in the summary, its error recorded; a .json summary path writes JSON."""
    spec = importlib.util.spec_from_file_location("bench_learner_check", SCRIPT)
    learner_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, learner_check)  # its dataclasses look it up
    spec.loader.exec_module(learner_check)

    def ok(ctx, res):
        res.line = "fine"

    def broken(ctx, res):
        raise RuntimeError("no kernel")

    stubs = [(name, ok) for name, _ in learner_check.CHECKS]
    stubs[1] = ("shared_prefix", broken)
    monkeypatch.setattr(learner_check, "CHECKS", stubs)
    out = tmp_path / "summary.json"
    assert learner_check.main(["--summary", str(out), "--device", "cpu"]) == 1
    data = json.loads(out.read_text())
    assert data["result"] == "FAIL" and data["mode"] == "reduced"
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status == {
        "learner_step": "PASS",
        "shared_prefix": "FAIL",
        "adamw": "PASS",
        "mfu": "PASS",
        "deepspeed_step": "SKIP",
        "deepspeed_mfu": "SKIP",
    }
    assert "RuntimeError: no kernel" in data["checks"][1]["notes"][0]
