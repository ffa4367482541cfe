"""Is this machine ready for rrr's GPU path? The first step of scripts/gpu-check.sh: seconds of
probing that stop a run before it spends minutes failing in vLLM, Triton or NCCL.

  python -m rrr.driver.gpu_probe          # a table; exit 2 with the reasons if a check fails

Fatal (the run cannot work):
  nvidia-smi        the NVIDIA driver is installed and sees a GPU
  driver vs torch   the driver's CUDA version is at least the one torch was built with (an
                    older driver makes torch.cuda.is_available() False, with no reason given)
  torch.cuda        torch itself sees the GPU
  gcc, Python.h     Triton (vLLM's and torch's GPU kernels) compiles a small C launcher at its
                    first use with the system compiler against the Python headers
Warnings (the run works, slower or with a fallback):
  /dev/shm          under 1 GiB: NCCL's intra-node transport and Ray's object store run short,
                    and the object-store weight sync falls back from /dev/shm (rrr/core/shm.py)
Facts (nothing rrr needs since the optimizer is torch's own AdamW, learner/engines.py):
  ninja, nvcc, CUDA_HOME   what a DeepSpeed op build would need
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from rrr.core.shm import SHM_DIR, SHM_FIX, free_bytes

SHM_WARN_BYTES = 1 << 30
SMI_TIMEOUT_S = 30


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True  # False: a warning or a fact, never stops the run


def driver_cuda_version(smi_output: str) -> tuple[int, int] | None:
    """The highest CUDA version the driver supports, from `nvidia-smi`'s header."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", smi_output)
    return (int(found.group(1)), int(found.group(2))) if found else None


def parse_version(text: str | None) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def driver_check(smi_output: str | None, torch_cuda: str | None) -> list[Check]:
    """nvidia-smi and the driver against torch's CUDA build (pure: the text and the version)."""
    if smi_output is None:
        return [Check("nvidia-smi", False, "not found or failed: no NVIDIA driver or no GPU")]
    driver = driver_cuda_version(smi_output)
    version = re.search(r"Driver Version:\s*([\d.]+)", smi_output)
    checks = [Check("nvidia-smi", True, f"driver {version.group(1) if version else '?'}")]
    built = parse_version(torch_cuda)
    if built is None:
        checks.append(Check("driver vs torch", False,
                            "torch is a CPU build (torch.version.cuda is None): install the gpu "
                            "extra, bash scripts/setup.sh gpu,test"))  # fmt: skip
    elif driver is None:
        checks.append(Check("driver vs torch", False, "nvidia-smi reports no CUDA version"))
    elif driver < built:
        checks.append(Check("driver vs torch", False,
                            f"the driver supports CUDA {driver[0]}.{driver[1]}, torch was built "
                            f"for CUDA {torch_cuda}: update the NVIDIA driver (or install a "
                            "torch built for an older CUDA)"))  # fmt: skip
    else:
        detail = f"driver CUDA {driver[0]}.{driver[1]} >= torch CUDA {torch_cuda}"
        checks.append(Check("driver vs torch", True, detail))
    return checks


def shm_check(free: int) -> Check:
    ok = free >= SHM_WARN_BYTES
    detail = f"{free / 2**30:.1f} GiB free" + ("" if ok else f": {SHM_FIX}")
    return Check(SHM_DIR, ok, detail, fatal=False)


def _smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True,
                             timeout=SMI_TIMEOUT_S)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _tool(name: str, fatal: bool, why: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or f"not on PATH ({why})", fatal=fatal)


def run_checks() -> list[Check]:
    """Cheapest first; torch is imported last (seconds)."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    have_headers = headers.is_file()
    cuda_home = os.environ.get("CUDA_HOME", "")
    checks = [
        _tool("gcc", True, "Triton compiles its launcher with it: apt install build-essential"),
        Check("Python.h", have_headers, str(headers) if have_headers
              else f"missing at {headers} (Triton needs it): apt install python3-dev"),
        shm_check(free_bytes()),
        _tool("ninja", False, "not needed: no DeepSpeed op is compiled"),
        _tool("nvcc", False, "not needed: no DeepSpeed op is compiled"),
        Check("CUDA_HOME", bool(cuda_home), cuda_home or "unset (not needed)", fatal=False),
    ]
    try:
        import torch
    except ImportError as exc:
        return [*checks, Check("torch", False, f"cannot import torch: {exc}")]
    checks += driver_check(_smi(), torch.version.cuda)
    available = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if available else "torch.cuda.is_available() is False"
    checks.append(Check("torch.cuda", available, name))
    return checks


def report(checks: list[Check]) -> tuple[str, list[str]]:
    """The table, and the reasons to stop (the failed fatal checks)."""
    lines = []
    for c in checks:
        mark = "ok" if c.ok else ("FAIL" if c.fatal else "warn")
        lines.append(f"  {mark:<5}{c.name:<17}{c.detail}")
    return "\n".join(lines), [f"{c.name}: {c.detail}" for c in checks if c.fatal and not c.ok]


def main() -> int:
    table, stop = report(run_checks())
    print("environment probe\n" + table)
    if stop:
        print("gpu-check: stopping at the environment probe, nothing else was run:\n  "
              + "\n  ".join(stop), file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
