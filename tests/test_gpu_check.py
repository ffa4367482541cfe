"""scripts/gpu-check.sh starts with an environment probe (rrr/driver/gpu_probe.py) that stops a
machine that cannot run the GPU path, with the reason, before anything heavy runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrr.driver.gpu_probe import Check, driver_check, driver_cuda_version, report, shm_check

ROOT = Path(__file__).resolve().parents[1]
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
