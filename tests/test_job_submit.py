"""`ray job submit` of the smoke run to a local Ray head (`ray start --head`) succeeds: the
same path a cluster user takes (cluster/README.md), with the dashboard's job API. The stop
drill's run also carries the dashboard and metrics checks (tests/test_dashboard.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.test_dashboard import check_dashboard_and_series

pytestmark = pytest.mark.stack  # its own Ray head and `rrr train` jobs: no fixture shows them
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_ray_job_submit_smoke_run(tiny_model_path, sample_data, tmp_path):
    gcs, dash = free_port(), free_port()
    # Every fixed default port of a head gets a free one: the test session's own Ray (and any
    # other Ray on the machine) already holds the defaults, and the job agent then never
    # comes up ("No available agent to submit job").
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
        "object-manager-port")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A throwaway loopback head: token auth (Ray's default) would need the token plumbed into
    # the submitting client; the cluster recipe in cluster/README.md keeps auth on.
    env["RAY_AUTH_MODE"] = "disabled"
    # Workers report metrics every 10 s by default; a shorter interval only shortens the wait
    # for the first export in check_dashboard_and_series (the series are the same).
    env["RAY_metrics_report_interval_ms"] = "2000"
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=8",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--disable-usage-stats", *agent_ports],
        check=True, env=env, capture_output=True, timeout=180,
    )  # fmt: skip
    try:
        _working_dir_imports_itself(dash, env)
        run = tmp_path / "run"
        entrypoint = (
            f"{sys.executable} -m rrr.driver.cli train --config configs/smoke-cpu.yaml "
            f"model.name_or_path={tiny_model_path} model.max_model_len=1024 "
            f"data.source={sample_data / 'countdown_sample.jsonl'} data.limit=2 "
            "failures.samples_per_query=2 failures.max_tokens=8 episode.num_reflections=2 "
            "episode.max_reflection_tokens=8 episode.max_retry_tokens=8 "
            "learner.failures_per_step=2 learner.max_steps=1 rollout.kv_cache_gib=0.25 "
            "rollout.in_process_engine=true "
            f"logging.output_dir={run} logging.progress=false"
        )
        t0 = time.time()
        cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
               "--working-dir", str(ROOT), "--", *entrypoint.split()]  # fmt: skip
        submit = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        logs = submit.stdout + submit.stderr
        assert submit.returncode == 0, logs[-4000:]
        assert "succeeded" in logs.lower(), logs[-4000:]
        assert (run / "checkpoints" / "step_00000001").is_dir()
        assert (run / "metrics.jsonl").read_text().count('"step": 1') == 1
        print(f"ray job submit smoke run: {time.time() - t0:.0f} s")
        _stop_drill(dash, env, entrypoint, run, tmp_path / "stopped")
    finally:
        _stop_head(gcs)


# Where a job's rrr, rrr.actors, rrr.learner and rrr.verifiers come from, and whether a
# vLLM-style child process (a fresh interpreter started by the job, as vLLM starts its workers)
# resolves the worker extension by its dotted name to the same copy.
_WHERE = (
    "import json, subprocess, sys, rrr.actors, rrr.learner, rrr.verifiers; "
    "child = subprocess.run([sys.executable, '-c', 'import rrr.actors.worker_extension as w; "
    "print(w.__file__)'], capture_output=True, text=True).stdout.strip(); "
    "print('WHERE' + json.dumps({'rrr': rrr.__file__, 'actors': rrr.actors.__file__, "
    "'learner': rrr.learner.__file__, 'verifiers': rrr.verifiers.__file__, 'child': child}))"
)


def _working_dir_imports_itself(dash: int, env: dict) -> None:
    """Import flow (c) of tests/test_import_flows.py, for real: Ray unpacks the working_dir
    elsewhere and runs the job there; every rrr module comes from that copy, not from this
    checkout (installed editable in the same venv)."""
    import json

    cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
           "--working-dir", str(ROOT), "--", str(BIN / "python"), "-c", _WHERE]  # fmt: skip
    for _ in range(30):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent" not in done.stderr + done.stdout:  # right after `ray start`
            break
        time.sleep(2)
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    found = re.search(r"^WHERE(\{.*\})$", logs, re.M)  # the job's line, not the echoed command
    assert found, logs[-3000:]
    where = json.loads(found[1])
    copy = Path(where["rrr"]).parents[1]
    assert copy != ROOT and "working_dir_files" in str(copy), where
    for name in ("actors", "learner", "verifiers"):
        assert Path(where[name]) == copy / name / "__init__.py", where
    assert Path(where["child"]) == copy / "actors" / "worker_extension.py", where


def _stop_drill(dash: int, env: dict, entrypoint: str, first: Path, run: Path) -> None:
    """`ray job stop` during a 400-step run (about 0.8 s a step): the driver gets SIGTERM,
    finishes its step, writes a final checkpoint and releases its actors within
    RAY_JOB_STOP_WAIT_TIME_S (the variable cluster/runtime_env.yaml sets; Ray's default of 3 s
    is too short for a checkpoint)."""
    import json

    from rrr.learner import checkpoint as ckpt

    address = f"http://127.0.0.1:{dash}"
    entrypoint = (
        entrypoint.replace(f"logging.output_dir={first}", f"logging.output_dir={run}")
        .replace("learner.max_steps=1", "learner.max_steps=400")
        + f" data.failures={first / 'failures'}"
    )
    runtime_env = json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "300"}})
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait",
         "--working-dir", str(ROOT), "--runtime-env-json", runtime_env, "--",
         *entrypoint.split()],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submit.stdout + submit.stderr)[0]
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert time.time() < deadline, "the job never logged a step"
        time.sleep(1)

    def job_logs() -> str:
        cmd = [str(BIN / "ray"), "job", "logs", "--address", address, job_id]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60).stdout

    # One run for both: the dashboard and the rrr series, watched while this job steps.
    check_dashboard_and_series(job_logs, headers={})  # auth is off on this head
    subprocess.run([str(BIN / "ray"), "job", "stop", "--address", address, job_id],
                   env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    status = ""
    # Ray's job supervisor marks a job STOPPED whenever the stop request reached it, even
    # when the driver then exits 0 (ours does, after its final checkpoint); SUCCEEDED would
    # mean the job ended by itself before the stop, which is not what this drill tests.
    while time.time() < deadline and not re.search(r"succeeded|stopped|failed", status):
        status = subprocess.run(
            [str(BIN / "ray"), "job", "status", "--address", address, job_id],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        status = (status.stdout + status.stderr).lower()
        time.sleep(2)
    logs = job_logs()
    assert re.search(r"\bstopped\b", status) and "succeeded" not in status, (status + logs)[-4000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) < 400
    latest = ckpt.latest_valid(run / "checkpoints")
    assert latest is not None and latest.name == f"step_{steps[-1]:08d}", logs[-3000:]
    ckpt.verify(latest)
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert "finishing this step, then checkpoint and exit" in logs
    print(f"ray job stop: stopped after step {steps[-1]} with its checkpoint")


def _stop_head(gcs_port: int) -> None:
    """Stop only the head this test started: `ray stop` would also kill the test session's
    own local Ray. Its workers share fate with their raylet."""
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if f":{gcs_port}" in cmd or f"--gcs_server_port={gcs_port}" in cmd:
            procs.append(p)
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        p.kill()
    # As `ray stop` does: a stale address file would make later ray.init() calls try to join.
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)
