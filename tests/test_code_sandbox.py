"""Hostile programs in the code sandbox (verifiers/sandbox.py): each ends in bounded time as a
failed verdict, and nothing outside its own directory changes. Where the OS layer alone should
stop a program, it runs twice: with the audit guard and without it (guard=False), so each
layer is shown to hold on its own. Light: one short-lived process per case, no Ray, no model.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from rrr.verifiers import sandbox
from rrr.verifiers.code import verify
from rrr.verifiers.sandbox import run_python

TIMEOUT_S = 2.0
BOUND_S = TIMEOUT_S + 4.0  # start-up on a loaded 2-core CI machine, then the kill
# Where a limit other than the clock is under test (memory, output size): on a loaded 2-core
# machine the 2 s timeout can fire first (outcome "timeout"), which tests nothing.
LIMIT_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def isolation() -> dict:
    return sandbox.isolation()


def run(
    solution: str, tests: str = "f()", *, guard: bool = True, timeout_s: float = TIMEOUT_S
) -> sandbox.RunResult:
    start = time.perf_counter()
    result = run_python(solution, tests, "f", timeout_s=timeout_s, guard=guard)
    assert time.perf_counter() - start < timeout_s + BOUND_S - TIMEOUT_S, result
    assert result.outcome != "passed", result
    return result


def snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*")}


def nobody_processes() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == sandbox.NOBODY:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def test_sandbox_is_isolated_here(isolation: dict) -> None:
    """CI runs as root on Linux: both namespaces must be there, or the rest proves less."""
    assert isolation["network_namespace"], isolation
    assert isolation["pid_namespace"], isolation


def test_a_correct_program_passes_and_may_write_in_its_own_directory() -> None:
    result = run_python(
        "def f():\n    open('scratch.txt', 'w').write('ok')\n    return open('scratch.txt').read()",
        "assert f() == 'ok'",
        "f",
        timeout_s=TIMEOUT_S,
    )
    assert result.outcome == "passed", result


@pytest.mark.parametrize("guard", [True, False])
def test_fork_bomb(guard: bool, isolation: dict) -> None:
    before = nobody_processes()
    result = run("import os\ndef f():\n    while True:\n        os.fork()\n", guard=guard)
    assert result.outcome in ("runtime", "timeout")
    time.sleep(0.2)  # the PID namespace's last processes are reaped by the kernel
    if isolation["root"]:
        assert set(nobody_processes()) <= set(before)


def test_infinite_loop_is_killed_at_the_time_out() -> None:
    result = run("def f():\n    while True:\n        pass\n")
    assert result.outcome == "timeout"
    assert TIMEOUT_S <= result.seconds < BOUND_S


def test_sleeping_forever_is_killed_at_the_time_out() -> None:
    assert run("import time\ndef f():\n    time.sleep(3600)\n").outcome == "timeout"


def test_escaped_process_dies_with_the_run(isolation: dict) -> None:
    """A child that leaves the process group (setsid) still dies: the PID namespace ends.
    Without the guard, which would refuse the fork outright."""
    if not isolation["pid_namespace"]:
        pytest.skip("no PID namespace here: only the process group is killed")
    program = (
        "import os, time\n"
        "def f():\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(3600)\n"
        "    return 1\n"
    )
    before = nobody_processes()
    result = run(program, "assert f() == 2", guard=False)
    assert result.outcome == "wrong_answer"  # the fork worked: f() returned 1
    time.sleep(0.2)
    assert set(nobody_processes()) <= set(before)


@pytest.mark.parametrize(
    "program",
    [
        "def f():\n    return bytearray(8 * 1024 ** 3)\n",
        "def f():\n    hog = []\n    while True:\n        hog.append(bytearray(10 ** 7))\n",
    ],
    ids=["one-big", "gradual"],
)
@pytest.mark.parametrize("guard", [True, False])
def test_memory_hog(program: str, guard: bool) -> None:
    # The memory limit is under test, not the clock: on a loaded 2-core machine the gradual hog
    # was killed by the 2 s timeout before it reached the limit (outcome "timeout").
    result = run(program, guard=guard, timeout_s=LIMIT_TIMEOUT_S)
    assert result.outcome == "runtime" and "MemoryError" in result.detail


@pytest.mark.parametrize("guard", [True, False])
def test_write_outside_its_directory(tmp_path: Path, guard: bool) -> None:
    """Root-owned directories are out of reach for nobody even without the guard; the guard
    also refuses world-writable places such as /tmp."""
    (tmp_path / "keep.txt").write_text("original")
    before = snapshot(tmp_path)
    targets = [tmp_path / "pwned.txt", tmp_path / "keep.txt"]
    if guard:
        targets.append(Path("/tmp") / f"rrr-sandbox-escape-{os.getpid()}")
    for target in targets:
        program = f"def f():\n    open({str(target)!r}, 'w').write('pwned')\n"
        assert run(program, guard=guard).outcome == "runtime"
        assert not target.exists() or target.read_text() == "original"
    removal = f"import os\ndef f():\n    os.remove({str(tmp_path / 'keep.txt')!r})\n"
    assert run(removal, guard=guard).outcome == "runtime"
    assert snapshot(tmp_path) == before
    assert (tmp_path / "keep.txt").read_text() == "original"


def test_os_system_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    program = f"import os\ndef f():\n    return os.system('touch {marker}')\n"
    result = run(program, "assert f() == 0")
    assert result.outcome == "runtime" and "os.system" in result.detail
    assert not marker.exists()


def test_os_system_without_the_guard_cannot_touch_the_callers_files(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run(f"import os\ndef f():\n    return os.system('touch {marker}')\n", "assert f() == 0",
        guard=False)  # fmt: skip
    assert not marker.exists()


@pytest.mark.parametrize("guard", [True, False])
def test_reading_the_environment_finds_nothing_of_the_callers(
    monkeypatch: pytest.MonkeyPatch, guard: bool
) -> None:
    monkeypatch.setenv("RRR_TEST_SECRET", "s3cret-value")
    via_environ = "import os\ndef f():\n    return os.environ.get('RRR_TEST_SECRET')\n"
    assert run(via_environ, "assert f() == 's3cret-value'", guard=guard).outcome == "wrong_answer"
    # The caller's environment through /proc: unreadable for nobody.
    via_proc = f"def f():\n    return open('/proc/{os.getpid()}/environ', 'rb').read()\n"
    assert run(via_proc, "assert b's3cret-value' in f()", guard=guard).outcome == "runtime"


@pytest.mark.parametrize("guard", [True, False])
def test_network_access(guard: bool) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        program = (
            "import socket\n"
            f"def f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'x')\n"
        )
        assert run(program, guard=guard).outcome == "runtime"
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()


@pytest.mark.parametrize(
    "program",
    [
        "def f():\n    while True:\n        print('x' * 100000)\n",
        "import sys\ndef f():\n    sys.stderr.write('y' * (64 * 1024 ** 2))\n",
    ],
    ids=["stdout-loop", "stderr-64MiB"],
)
def test_huge_output_is_cut_off(program: str, tmp_path: Path) -> None:
    # Python ignores SIGXFSZ, so the write past RLIMIT_FSIZE fails with EFBIG instead; the
    # output files stay at the limit (the run's directory is gone afterwards either way). The
    # size limit is under test: under load, writing 64 MiB outlasted the 2 s timeout once.
    result = run(program, timeout_s=LIMIT_TIMEOUT_S)
    assert result.outcome == "runtime"
    assert "File too large" in result.detail or "size limit" in result.detail, result


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos._exit(0)\ndef f():\n    pass\n",
        "import sys\nsys.exit(0)\ndef f():\n    pass\n",
        "import os\ndef f():\n    os._exit(0)\n",
    ],
    ids=["os._exit-at-import", "sys.exit", "os._exit-in-f"],
)
def test_exiting_early_is_not_a_pass(program: str) -> None:
    assert run(program, "f()\nassert False").outcome == "runtime"


def test_native_code_is_refused() -> None:
    """ctypes could call anything in libc (unshare the limits away, prctl, raw syscalls)."""
    result = run("import ctypes\ndef f():\n    return ctypes.CDLL(None).getpid()\n")
    assert result.outcome == "runtime" and "ctypes" in result.detail


def test_verify_on_hostile_responses_fails_in_bounded_time() -> None:
    start = time.perf_counter()
    # verify() refuses tests without an assert (tests/test_code_contract.py): these have one.
    tests = "assert f() is None"
    verdict = verify("```python\ndef f():\n    while True:\n        pass\n```", tests, "f",
                     timeout_s=TIMEOUT_S)  # fmt: skip
    assert verdict.error == "timeout"
    assert time.perf_counter() - start < BOUND_S
    verdict = verify("```python\nimport os\ndef f():\n    os.system('id')\n```", tests, "f")
    assert verdict.error == "runtime"
