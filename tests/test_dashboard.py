"""A local `rrr train` starts the Ray dashboard and exports the rrr metrics: the dashboard
answers HTTP at the URL the driver logs, and `ray_rrr_*` series appear at the Prometheus
endpoint it logs while steps run (what the dashboard's Metrics tab and Grafana read)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.stack  # `rrr train` in a subprocess (its own Ray): no fixture shows it
ROOT = Path(__file__).resolve().parents[1]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode(errors="replace")


def _wait_for(pattern: str, log: Path, proc: subprocess.Popen, timeout_s: float) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(1)
    raise AssertionError(f"no {pattern!r} within {timeout_s} s:\n{log.read_text()[-4000:]}")


def test_local_run_serves_dashboard_and_rrr_metrics(tiny_model_path, sample_data, tmp_path):
    dash, metrics_port = free_port(), free_port()
    run = tmp_path / "run"
    args = [
        sys.executable, "-m", "rrr.driver.cli", "train", "--config", "configs/smoke-cpu.yaml",
        f"model.name_or_path={tiny_model_path}", "model.max_model_len=1024",
        f"data.source={sample_data / 'countdown_sample.jsonl'}", "data.limit=2",
        "failures.samples_per_query=2", "failures.max_tokens=8", "episode.num_reflections=2",
        "episode.max_reflection_tokens=8", "episode.max_retry_tokens=8",
        "learner.failures_per_step=2", "learner.max_steps=400",
        "rollout.kv_cache_gib=0.25", "rollout.in_process_engine=true",
        "cluster.address=local", f"cluster.dashboard_port={dash}",
        f"cluster.metrics_export_port={metrics_port}",
        f"logging.output_dir={run}", "logging.progress=false", "logging.checkpoint_every=1000",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Workers report metrics every 10 s by default; a shorter interval only shortens the wait
    # below for the first export, the series and the endpoint are the same.
    env["RAY_metrics_report_interval_ms"] = "2000"
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = _wait_for(r"Ray dashboard: (http://\S+)", log, proc, 300)[1]
        assert url == f"http://127.0.0.1:{dash}"
        token = Path.home() / ".ray" / "auth_token"  # Ray's token auth (on by default)
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
        status, body = _get(f"{url}/api/version", headers)
        assert status == 200 and '"ray_version"' in body
        pattern = r"Prometheus metrics \(ray_rrr_\*\): (http://\S+)"
        metrics_url = _wait_for(pattern, log, proc, 30)[1]
        assert metrics_url.endswith(f":{metrics_port}/metrics")
        _wait_for(r"step\s+1/400", log, proc, 600)
        # Ray's metrics agent exports on an interval (10 s by default).
        deadline, series = time.monotonic() + 120, set()
        wanted = {"ray_rrr_step", "ray_rrr_rollout_reward_mean"}
        while time.monotonic() < deadline and not wanted <= series:
            series = set(re.findall(r"^(ray_rrr_\w+)", _get(metrics_url)[1], re.M))
            time.sleep(2)
        assert wanted <= series, sorted(series)
        # Every series the shipped Grafana dashboard plots exists, but those of other modes:
        # held-out eval (logging.eval_every) and first-try success (episode.first_attempt=online;
        # this dataset-mode run measures no first try).
        plotted = set(re.findall(r"ray_rrr_\w+", (ROOT / "cluster/grafana-rrr.json").read_text()))
        other_modes = ("ray_rrr_eval_", "ray_rrr_rollout_first_try_success")
        missing = {s for s in plotted - series if not s.startswith(other_modes)}
        assert not missing, f"grafana-rrr.json plots series rrr never exports: {sorted(missing)}"
    finally:
        proc.send_signal(signal.SIGTERM)  # finish the step, checkpoint, release the actors
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-4000:]
