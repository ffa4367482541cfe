"""The Ray dashboard and the rrr metrics: a local run starts the dashboard, which answers HTTP
at the URL the driver logs, and `ray_rrr_*` series appear at the Prometheus endpoint it logs
while steps run (what the dashboard's Metrics tab and Grafana read). The run is shared with
tests/test_job_submit.py, whose stop drill calls check_dashboard_and_series."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.stack  # a local Ray in a subprocess: no fixture shows it
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


# What `rrr train` with cluster.address=local does before its first actor: init_ray() starts
# Ray with the dashboard and metrics ports of the config and logs where to watch.
_LOCAL_START = """
import logging, sys, time
from rrr.core.config import load_config
from rrr.driver.stack import init_ray
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
init_ray(load_config("configs/smoke-cpu.yaml", sys.argv[1:]))
print("READY", flush=True)
time.sleep(600)
"""


def test_local_ray_serves_the_dashboard_and_metrics_at_the_logged_urls(tmp_path):
    """A local run's start (cluster.address=local): the dashboard answers at the URL the driver
    logs, on cluster.dashboard_port, and the Prometheus endpoint it logs is on
    cluster.metrics_export_port. That ray_rrr_* series appear there while steps run, every
    one the shipped Grafana dashboard plots, is checked on the run of
    tests/test_job_submit.py (one run for both: `check_dashboard_and_series`)."""
    dash, metrics_port = free_port(), free_port()
    args = [sys.executable, "-c", _LOCAL_START, "cluster.address=local",
            f"cluster.dashboard_port={dash}",
            f"cluster.metrics_export_port={metrics_port}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(r"READY", log, proc, 300)
        url = _wait_for(r"Ray dashboard: (http://\S+)", log, proc, 5)[1]
        assert url == f"http://127.0.0.1:{dash}"
        token = Path.home() / ".ray" / "auth_token"  # Ray's token auth (on by default)
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
        status, body = _get(f"{url}/api/version", headers)
        assert status == 200 and '"ray_version"' in body
        metrics_url = _wait_for(r"Prometheus metrics \(ray_rrr_\*\): (http://\S+)", log, proc, 5)[1]
        assert metrics_url.endswith(f":{metrics_port}/metrics")
        assert _get(metrics_url)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)  # ray's atexit hook stops the local cluster
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def check_dashboard_and_series(logs: Callable[[], str], headers: dict[str, str]) -> None:
    """While a run steps: its driver logged the dashboard's URL, which answers, and the
    Prometheus endpoint it logged shows the ray_rrr_* series, every one the shipped Grafana
    dashboard plots (but those of other modes)."""
    text = logs()
    url = re.search(r"Ray dashboard: (http://\S+)", text)
    assert url, text[-4000:]
    status, body = _get(f"{url[1]}/api/version", headers)
    assert status == 200 and '"ray_version"' in body
    metrics_url = re.search(r"Prometheus metrics \(ray_rrr_\*\): (http://\S+)", text)
    assert metrics_url, text[-4000:]
    # Ray's metrics agent exports on an interval (RAY_metrics_report_interval_ms).
    deadline, series = time.monotonic() + 120, set()
    wanted = {"ray_rrr_step", "ray_rrr_rollout_reward_mean"}
    while time.monotonic() < deadline and not wanted <= series:
        series = set(re.findall(r"^(ray_rrr_\w+)", _get(metrics_url[1])[1], re.M))
        time.sleep(2)
    assert wanted <= series, sorted(series)
    # Held-out eval (logging.eval_every) and first-try success (episode.first_attempt=online;
    # a dataset-mode run measures no first try) are series of other modes.
    plotted = set(re.findall(r"ray_rrr_\w+", (ROOT / "cluster/grafana-rrr.json").read_text()))
    other_modes = ("ray_rrr_eval_", "ray_rrr_rollout_first_try_success")
    missing = {s for s in plotted - series if not s.startswith(other_modes)}
    assert not missing, f"grafana-rrr.json plots series rrr never exports: {sorted(missing)}"
