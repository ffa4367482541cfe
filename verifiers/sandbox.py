"""Run untrusted Python (a model's solution and its tests) in a separate, limited process.

``run_python(solution, tests, entry_point)`` -> ``RunResult``. What one run gets:

* its own session and process group, killed whole (SIGKILL) at the time-out, and where the
  kernel allows it its own PID namespace, whose every process dies with it;
* rlimits: CPU seconds, address space, file size (stdout and stderr are files, so this bounds
  output too), process count, open files, no core dumps;
* a fresh temporary directory as cwd (deleted afterwards), a scrubbed environment (no variable
  of the caller's reaches it), ``python -I -S`` (no site-packages, no PYTHON* variables);
* no network where the kernel allows it: an unshared network namespace;
* as root: runs as ``nobody``, so the file system's permissions apply to it;
* a Python audit hook (``guard``): no subprocesses, signals, sockets, ctypes, frame or heap
  introspection, and no writes outside its directory.

What this does not protect against, and how to put a stronger sandbox behind the same call:
docs/code-sandbox.md. Standard library only (the verifiers layer has no dependencies).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("sandbox_child.py")
NOBODY = 65534
Outcome = Literal["passed", "syntax", "no_entry", "wrong_answer", "runtime", "timeout"]
# The child's exit codes (verifiers/sandbox_child.py); anything else is "runtime".
_EXIT: dict[int, Outcome] = {0: "passed", 3: "syntax", 4: "no_entry", 5: "wrong_answer"}
_EXIT_SETUP = 7
# Only these reach the program: enough for Python's own start-up, nothing of the caller's.
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}
_TAIL = 2000  # bytes of stderr kept for the verdict's detail


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): no verdict can be given."""


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. The defaults fit HumanEval-style functions with room to spare."""

    memory_mb: int = 1024  # address space: Python itself takes ~30 MB of it
    output_mb: int = 4  # largest file the program may write, stdout and stderr included
    processes: int = 32  # a fork bomb stops here (enforced when running as nobody / userns)
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    detail: str  # the last line of stderr, or why the run ended
    seconds: float
    isolation: dict  # what the child managed: network / PID namespaces (see isolation())


_warned: set[str] = set()


def run_python(
    solution: str,
    tests: str,
    entry_point: str,
    *,
    timeout_s: float = 5.0,
    limits: Limits = Limits(),  # frozen, so one shared default is safe
    guard: bool = True,
) -> RunResult:
    """Execute ``solution``, check it defines ``entry_point``, then execute ``tests`` in the
    same namespace (tests raise ``AssertionError`` on a wrong answer). Bounded by
    ``timeout_s`` of wall time whatever the program does; raises ``SandboxError`` only when the
    sandbox itself cannot run."""
    start = time.perf_counter()
    job = Path(tempfile.mkdtemp(prefix="rrr-sandbox-"))
    try:
        work = _prepare(job, solution, tests)
        nonce = secrets.token_hex(16).encode()
        config = {
            "entry_point": entry_point,
            "cpu_s": math.ceil(timeout_s) + 1,  # a backstop: the wall-clock kill comes first
            "memory_bytes": limits.memory_mb << 20,
            "file_bytes": limits.output_mb << 20,
            "processes": limits.processes,
            "open_files": limits.open_files,
            "guard": int(guard),
        }
        code, timed_out = _execute(job, work, config, nonce, timeout_s)
        stdout, stderr = _tail(job / "stdout"), _tail(job / "stderr")
        full = max((job / name).stat().st_size for name in ("stdout", "stderr"))
        isolation = _read_isolation(job)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    seconds = time.perf_counter() - start
    if timed_out:
        return RunResult("timeout", f"killed after {timeout_s:g} s", seconds, isolation)
    outcome, detail = _classify(code, stdout, stderr, nonce)
    if outcome == "runtime" and full >= config["file_bytes"]:
        # The report line could not be written past the limit either: say what happened.
        detail = f"output over the {limits.output_mb} MiB size limit"
    return RunResult(outcome, detail, seconds, isolation)


def _prepare(job: Path, solution: str, tests: str) -> Path:
    """job/ (root-owned, traversable) holds the inputs and outputs; job/work is the program's."""
    job.chmod(0o711)
    for name, text in (("solution.py", solution), ("tests.py", tests)):
        # Lone surrogates cannot be valid source anyway; replaced, the child reads clean UTF-8.
        (job / name).write_text(text, encoding="utf-8", errors="replace")
    work = job / "work"
    work.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(work, NOBODY, NOBODY)
    return work


def _execute(
    job: Path, work: Path, config: dict, nonce: bytes, timeout_s: float
) -> tuple[int, bool]:
    args = [f"{key}={value}" for key, value in config.items()]
    with open(job / "stdout", "wb") as out, open(job / "stderr", "wb") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(CHILD), str(job), *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=work,
                env=_ENV,
                start_new_session=True,  # own session = own process group, killed as one
                close_fds=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        try:
            assert proc.stdin is not None
            proc.stdin.write(nonce + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # the child died at once; its status says why
        timed_out = not _wait(proc, timeout_s)
        _kill_group(proc.pid)  # stragglers too: a finished program may have left children
        code = proc.wait()
    return code, timed_out


def _wait(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether the child exited within ``timeout_s``. Popen.wait(timeout) polls with sleeps that
    grow to 50 ms, which tripled the cost of a 15 ms run; a pidfd wakes us the moment it exits."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: fall back to polling
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: the whole group is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - _TAIL))
        return f.read()


def _read_isolation(job: Path) -> dict:
    """The child's KEY=VALUE lines: booleans as True/False, ``reason`` as text."""
    try:
        lines = (job / "isolation").read_text().splitlines()
    except OSError:
        return {}
    pairs = dict(line.split("=", 1) for line in lines if "=" in line)
    return {k: v if k == "reason" else v == "True" for k, v in pairs.items()}


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def _classify(code: int, stdout: bytes, stderr: bytes, nonce: bytes) -> tuple[Outcome, str]:
    """Exit status -> outcome. A child killed by a signal reports 128 + signal through its
    PID-1 reaper, or a negative code when it was killed itself."""
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig == signal.SIGXCPU:
        return "timeout", "CPU time limit"
    if sig == signal.SIGXFSZ:
        return "runtime", "output or file size limit exceeded"
    if sig:
        return "runtime", f"killed by signal {signal.Signals(sig).name}"
    if code == _EXIT_SETUP:
        raise SandboxError(f"the sandbox could not set itself up: {_last_line(stderr)}")
    outcome = _EXIT.get(code, "runtime")
    if outcome == "passed" and not stdout.rstrip().endswith(nonce):
        # Exit 0 without the nonce: the program ended the process itself (os._exit(0)).
        return "runtime", "the program exited before its tests finished"
    detail = _last_line(stderr) if outcome != "passed" else ""
    return outcome, detail if outcome == "passed" else detail or f"exit status {code}"


def isolation() -> dict:
    """What the sandbox manages on this machine (one trivial run): root or not, network and
    PID namespaces. Logs a warning once when the network cannot be cut off."""
    result = run_python("def f():\n    return 1\n", "assert f() == 1\n", "f").isolation
    if not result.get("network_namespace") and "network" not in _warned:
        _warned.add("network")
        log.warning(
            "sandbox: no network namespace on this machine (%s); untrusted code can reach the "
            "network unless the audit guard stops it (docs/code-sandbox.md)",
            result.get("reason") or "unknown reason",
        )
    return result
