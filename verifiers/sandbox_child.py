"""The sandbox's child: runs one program (a solution, then its tests) under OS limits.

Started by ``rrr.verifiers.sandbox`` as ``python -I -S sandbox_child.py JOB_DIR KEY=VALUE...`` with
a
scrubbed environment, cwd ``JOB_DIR/work``, its own session (so its own process group), stdout
and stderr going to files, and a one-line nonce on stdin. Standard library only, and nothing
from this package: with ``-I`` the script's own directory is not on sys.path.

Order matters, and comments say why at each step:
  1. read the solution and tests (root-owned files the program cannot touch later);
  2. leave the network (and, where allowed, the PID) namespace;
  3. in a new PID namespace, fork a reaper that is PID 1: when it exits, the kernel kills every
     process left in the namespace, so a program that escapes its process group still dies;
  4. the worker: rlimits, drop root to nobody, die with its parent, install the audit guard,
     then run the solution and the tests;
  5. exit code = outcome; on success the nonce goes to stdout, so a program that merely calls
     ``os._exit(0)`` does not pass.
"""

from __future__ import annotations

import os
import resource
import sys

# Exit codes (the parent, rrr.verifiers.sandbox, maps them to outcomes).
EXIT_PASSED = 0
EXIT_SYNTAX = 3
EXIT_NO_ENTRY = 4
EXIT_WRONG = 5
EXIT_RUNTIME = 6
EXIT_SETUP = 7

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NOBODY = 65534

# Audit events the guard refuses (prefix match): new processes, signals to others, sockets,
# native calls (ctypes could undo everything else), limits. Writes are checked by path instead
# (below). Frame introspection stays allowed: the standard library needs it (namedtuple, enum),
# so a determined program can find the nonce; docs/code-sandbox.md says what that means.
DENIED = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.", "pty.", "os.kill", "os.killpg", "signal.pthread_kill", "socket.",
    "ctypes.", "resource.setrlimit", "resource.prlimit", "os.setuid", "os.setgid",
    "os.setgroups", "os.chroot", "sys.addaudithook", "cpython.", "os.startfile",
    "webbrowser.", "winreg.",
)  # fmt: skip
PATH_EVENTS = (
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
    "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
)  # fmt: skip
TWO_PATHS = ("os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.move")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def main() -> None:
    # KEY=VALUE arguments, not JSON: importing json (re, enum) would be a fifth of a run's cost.
    job, config = sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:])
    with open(os.path.join(job, "solution.py"), encoding="utf-8") as f:
        solution = f.read()
    with open(os.path.join(job, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    nonce = sys.stdin.buffer.readline().strip()
    os.close(0)  # the program never sees the nonce channel
    isolation = _isolate()
    with open(os.path.join(job, "isolation"), "w", encoding="utf-8") as f:
        f.write("\n".join(f"{key}={value}" for key, value in isolation.items()))
    work = os.getcwd()
    if not isolation["pid_namespace"]:
        _worker(work, config, solution, tests, nonce)
    pid = os.fork()
    if pid == 0:  # PID 1 of the new namespace: reap the worker, mirror its status
        _die_with_parent()
        worker = os.fork()
        if worker == 0:
            _worker(work, config, solution, tests, nonce)
        os._exit(_status(os.waitpid(worker, 0)[1]))
    os._exit(_status(os.waitpid(pid, 0)[1]))


def _status(status: int) -> int:
    """An exit status to pass on: the code, or 128 + signal as a shell reports it."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _libc():  # ctypes only here: after the guard is installed it cannot be used any more
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _isolate() -> dict:
    """Leave the network namespace (no interfaces but a down loopback: nothing to connect to)
    and the PID namespace where the kernel allows it. Root unshares directly; anyone else needs
    an unprivileged user namespace. What happened is written down, never silently skipped."""
    libc = _libc()
    root = os.geteuid() == 0
    result = {"root": root, "network_namespace": False, "pid_namespace": False, "reason": ""}
    if root:
        result["network_namespace"] = libc.unshare(CLONE_NEWNET) == 0
        result["pid_namespace"] = libc.unshare(CLONE_NEWPID) == 0
    else:
        ok = libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID) == 0
        result["network_namespace"] = result["pid_namespace"] = ok
    if not (result["network_namespace"] and result["pid_namespace"]):
        import ctypes

        result["reason"] = os.strerror(ctypes.get_errno())
    return result


def _die_with_parent() -> None:
    import signal

    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _limits(config: dict) -> None:
    cpu = int(config["cpu_s"])
    memory, files = int(config["memory_bytes"]), int(config["file_bytes"])
    processes, open_files = int(config["processes"]), int(config["open_files"])
    for name, soft, hard in (
        ("RLIMIT_CPU", cpu, cpu + 1),  # SIGXCPU at soft, SIGKILL at hard
        ("RLIMIT_AS", memory, memory),
        ("RLIMIT_FSIZE", files, files),  # stdout and stderr are files too
        ("RLIMIT_NPROC", processes, processes),
        ("RLIMIT_NOFILE", open_files, open_files),
        ("RLIMIT_CORE", 0, 0),
    ):
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _keep_stdlib_reachable() -> None:
    """Python may live where nobody cannot look (a pyenv build under /root, mode 0700). Open
    each import directory while still root and import through /proc/self/fd/N: an open
    directory is reached without searching its parents, and stays read-only (root owns it)."""
    if os.geteuid() != 0:
        return
    moved: dict[str, str] = {}
    for entry in sys.path:
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # e.g. the stdlib zip that does not exist
        moved[entry.rstrip(os.sep) + os.sep] = f"/proc/self/fd/{fd}/"
    sys.path[:] = [new.rstrip("/") for new in moved.values()]
    # Packages imported already (collections, encodings) find submodules through __path__.
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            for i, path in enumerate(paths):
                for old, new in moved.items():
                    if (path + os.sep).startswith(old):
                        paths[i] = new + path[len(old):]
                        break
    sys.path_importer_cache.clear()


def _drop_root() -> None:
    """As root, run as nobody: rlimits on processes bind (root is exempt from RLIMIT_NPROC) and
    the file system's own permissions keep the program out of everything it does not own."""
    if os.geteuid() != 0:
        return
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _guard(work: str) -> None:
    """A Python audit hook: refuse the DENIED events and writes outside ``work``. Audit hooks
    cannot be removed from Python; with ctypes refused, native code cannot be reached either."""
    realpath, sep = os.path.realpath, os.sep
    inside = work.rstrip(sep) + sep

    def allowed_path(path: object) -> bool:
        if isinstance(path, int):  # an open file descriptor: its opening was checked
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        full = realpath(os.path.join(work, path))
        return full == work or full.startswith(inside)

    def hook(event: str, args: tuple) -> None:
        if event.startswith(DENIED):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writes and not allowed_path(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the work directory")
        elif event in PATH_EVENTS:
            paths = args[:2] if event in TWO_PATHS else args[:1]
            for path in paths:
                if not allowed_path(path):
                    raise PermissionError(f"sandbox: {event} of {path!r} is not allowed")

    sys.addaudithook(hook)


def _report(exc: BaseException) -> None:
    # Only the type and message: the verdict's detail is one short line.
    text = f"{type(exc).__name__}: {exc}"
    sys.stderr.write("\n" + text[-500:] + "\n")
    sys.stderr.flush()


def _worker(work: str, config: dict, solution: str, tests: str, nonce: bytes) -> None:
    try:
        _limits(config)
        _keep_stdlib_reachable()
        _drop_root()
        _die_with_parent()  # after setuid: changing credentials clears the death signal
        if config["guard"] == "1":
            _guard(work)
    except Exception as exc:
        _report(exc)
        os._exit(EXIT_SETUP)
    try:
        code = compile(solution, "solution.py", "exec")
        test_code = compile(tests, "tests.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        _report(exc)
        os._exit(EXIT_SYNTAX)
    # Not "__main__": a solution's `if __name__ == "__main__":` demo must not run.
    namespace: dict = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
        if config["entry_point"] not in namespace:
            sys.stderr.write(f"\nno function named {config['entry_point']!r}\n")
            os._exit(EXIT_NO_ENTRY)
        exec(test_code, namespace)
    except AssertionError as exc:
        _report(exc)
        os._exit(EXIT_WRONG)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: not a pass
        _report(exc)
        os._exit(EXIT_RUNTIME)
    sys.stdout.flush()
    os.write(1, b"\n" + nonce + b"\n")
    os._exit(EXIT_PASSED)


if __name__ == "__main__":
    main()
