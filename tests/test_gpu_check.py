"""scripts/gpu-check.sh starts with an environment probe (rrr/driver/gpu_probe.py) that stops a
machine that cannot run the GPU path, with the reason, before anything heavy runs. Its steps end
for sure (SIGKILL after a grace), and one that leaves the GPU held stops the script, naming the
processes (issue 32): both read here from the script and run against a stand-in nvidia-smi."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrr.driver.gpu_probe import Check, driver_check, driver_cuda_version, report, shm_check

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/gpu-check.sh"
SMI_HEADER = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_the_driver_must_support_torchs_cuda() -> None:
    assert driver_cuda_version(SMI_HEADER) == (12, 8)
    old = {c.name: c for c in driver_check(SMI_HEADER, "13.0")}
    versions = old["driver vs torch"]
    assert not versions.ok and versions.fatal
    assert "CUDA 12.8" in versions.detail and "update" in versions.detail
    assert old["nvidia-smi"].ok and "570.86.15" in old["nvidia-smi"].detail
    assert all(c.ok for c in driver_check(SMI_HEADER, "12.8"))
    assert all(c.ok for c in driver_check(SMI_HEADER.replace("12.8", "13.1"), "13.0"))


def test_a_cpu_torch_or_no_driver_stops_with_the_fix() -> None:
    cpu_torch = {c.name: c for c in driver_check(SMI_HEADER, None)}
    assert not cpu_torch["driver vs torch"].ok and "gpu,test" in cpu_torch["driver vs torch"].detail
    (none,) = driver_check(None, "13.0")
    assert not none.ok and none.fatal and none.name == "nvidia-smi"


def test_a_small_shm_warns_and_never_stops() -> None:
    small = shm_check(64 << 20)
    assert not small.ok and not small.fatal and "--shm-size" in small.detail
    assert shm_check(16 << 30).ok
    _, stop = report([small, Check("nvcc", False, "not on PATH", fatal=False)])
    assert stop == []
    table, stop = report([small, Check("torch.cuda", False, "torch.cuda.is_available() is False")])
    assert stop == ["torch.cuda: torch.cuda.is_available() is False"] and "warn" in table


def test_gpu_check_stops_at_its_probe_on_a_machine_without_a_gpu(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: its probe passes and the whole check runs")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu-check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - t0 < 60  # seconds, not the minutes of the later steps
    summary = (tmp_path / "summary.md").read_text()
    assert "stopped at the probe" in summary and "torch.cuda.is_available() is False" in summary
    assert "## 2." not in summary and not (tmp_path / "smoke.log").exists()  # nothing else ran


def script_commands() -> list[str]:
    """The script's commands, comments dropped and continued lines joined."""
    code = re.sub(r"(^|\s)#.*$", "", SCRIPT.read_text(), flags=re.M)
    return [c.strip() for c in code.replace("\\\n", " ").splitlines() if c.strip()]


def test_every_timeout_kills_after_a_grace() -> None:
    """`rrr train` catches SIGTERM and finishes its step: a bare `timeout` cannot stop it."""
    calls = [c[m.end() :] for c in script_commands() for m in re.finditer(r"\btimeout\b", c)]
    assert len(calls) >= 3, calls  # the pytest steps, the smoke run, the MFU bench
    for rest in calls:
        assert shlex.split(rest)[:2] == ["-k", "$grace_s"], rest


def test_the_smoke_run_is_eager_and_its_overrides_load() -> None:
    from rrr.core.config import check_training, load_config

    (train,) = [c for c in script_commands() if "rrr.driver.cli train" in c]
    words = shlex.split(train.split(">")[0])
    config = words[words.index("--config") + 1]
    gen = re.search(r"^gen='(.*)'$", SCRIPT.read_text(), flags=re.M).group(1)
    overrides = [
        w.replace("$gen", gen).replace("$out", "runs/gpu-check") for w in words if "=" in w
    ]
    assert "rollout.enforce_eager=true" in overrides  # no cold compile or graph capture
    cfg = load_config(ROOT / config, overrides)
    assert cfg.rollout.enforce_eager is True and cfg.cluster.colocate
    check_training(cfg)


FAKE_SMI = """#!/usr/bin/env bash
# nvidia-smi on a GPU that pid 77 held before the checks; pid 4242 holds 20 GiB for the first
# $FAKE_HELD process queries.
polls="$FAKE_DIR/polls"
case "$*" in
  *query-compute-apps*)
    n=$(( $(cat "$polls" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$polls"
    echo "77, 300 MiB"
    if [ "$n" -le "$FAKE_HELD" ]; then echo "4242, 20480 MiB"; fi ;;
  *memory.used*)
    if [ "$(cat "$polls")" -le "$FAKE_HELD" ]; then echo "21000"; else echo "500"; fi ;;
esac
"""


def settle(tmp_path: Path, held_polls: int, rc: int) -> tuple[subprocess.CompletedProcess, str]:
    """The script's `settle` after a step that exited with `rc`, on the fake GPU."""
    # Sourced, the script defines its helpers and returns before it runs anything.
    assert '[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0' in SCRIPT.read_text()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path),
           "FAKE_HELD": str(held_polls), "GPU_CHECK_RELEASE_S": "3"}  # fmt: skip
    res = tmp_path / "summary.md"
    run = (f"source {shlex.quote(str(SCRIPT))}; res={shlex.quote(str(res))}; "
           f'idle_pids="77 "; idle_mib=400; settle "step 4" {rc}; echo settled')  # fmt: skip
    done = subprocess.run(["bash", "-c", run], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return done, res.read_text() if res.exists() else ""


def test_a_gpu_left_held_after_a_killed_step_stops_the_check_naming_the_pids(tmp_path) -> None:
    t0 = time.monotonic()
    done, summary = settle(tmp_path, held_polls=10**6, rc=137)
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.monotonic() - t0 < 30  # GPU_CHECK_RELEASE_S bounds the wait
    assert "SIGKILLed 30 s after its SIGTERM" in summary
    assert "STOPPED: the GPU is still held 3 s after step 4 (exit 137)" in summary
    assert "pid 4242 holds 20480 MiB" in summary and "21000 MiB in use" in summary
    assert "pid 77 " not in summary  # there before the checks: not the step's


def test_a_gpu_freed_within_the_bound_lets_the_checks_go_on(tmp_path) -> None:
    done, summary = settle(tmp_path, held_polls=1, rc=124)  # freed by the second look
    assert done.returncode == 0 and done.stdout.strip() == "settled", done.stdout + done.stderr
    assert "out of time; it exited within 30 s of its SIGTERM" in summary
    assert "STOPPED" not in summary
