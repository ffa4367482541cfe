"""Cross-node placement and transport on a simulated two-node Ray cluster
(`ray.cluster_utils.Cluster`, run in its own process by tests/two_node_sync.py: a process
joins one Ray cluster, and the test session already has one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack  # a two-node Ray cluster in a subprocess: no fixture shows it
ROOT = Path(__file__).resolve().parents[1]


def test_learners_on_one_node_sync_a_rollout_worker_on_another(tiny_model_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a throwaway cluster of this process's own
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "two_node_sync.py"), tiny_model_path],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["nodes"] == 2 and seen["cross_node"]
    assert seen["auto"]["transport"] == "gloo"  # the collective backend, across nodes
    assert seen["object_store"]["transport"] == "object"  # Ray's object transfer between nodes
    for backend in ("auto", "object_store"):
        assert seen[backend]["max_logprob_gap"] < 2e-3, seen
