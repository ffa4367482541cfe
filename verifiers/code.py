"""Code verifier: does the function in the response pass its tests?

``verify(response, tests, entry_point, timeout_s=5.0) -> Verdict`` extracts the code, runs it
and then ``tests`` in a sandboxed process (``verifiers.sandbox``) and names what went wrong:

* ``format``: no code in the response, or the code defines no function ``entry_point``;
* ``syntax``: the code does not compile;
* ``runtime``: it raised (anything but ``AssertionError``), exceeded a memory or output limit,
  was refused by the sandbox (a subprocess, a socket, a write outside its directory), or ended
  its own process before the tests finished;
* ``wrong_answer``: a test assertion failed;
* ``timeout``: it ran past ``timeout_s`` (wall clock) or its CPU limit.

Extraction: the last fenced block (```` ```python ```` or unlabelled) that defines
``entry_point``, else the last such block (an unclosed last fence, a response cut by the token
limit, runs to the end); without fences, the bare code from the first line that starts a
definition or import, stopping at the first unindented line of prose.
"""

from __future__ import annotations

import re

from verifiers.sandbox import Limits, SandboxError, run_python
from verifiers.verdict import Verdict

FORMAT = "format"
SYNTAX = "syntax"
RUNTIME = "runtime"
WRONG_ANSWER = "wrong_answer"
TIMEOUT = "timeout"
ERRORS: tuple[str, ...] = (FORMAT, SYNTAX, RUNTIME, WRONG_ANSWER, TIMEOUT)

CODE_CAP = 64_000
"""Longest extracted code run; longer is ``format`` (no real solution is that long)."""

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LABELS = ("", "python", "py", "python3")
# A line that can start or continue bare (unfenced) code at column 0.
_CODE_START = re.compile(r"(def |async def |class |import |from |@)")
_CODE_LINE = re.compile(
    r"(def |async def |class |import |from |@|#|if |for |while |try:|except|else:|elif |"
    r"finally:|with |return |[A-Za-z_][\w.]*(\[[^\]]*\])?\s*([-+*/%|&^]?=[^=]|\())"
)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def extract_code(response: str, entry_point: str) -> str | None:
    """The code the response commits to, or None when it holds none (see module doc)."""
    defines = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).lower() in _PYTHON_LABELS]
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        with_entry = [b for b in blocks if defines.search(b)]
        return (with_entry or blocks)[-1]
    return _bare_code(response)


def _bare_code(response: str) -> str | None:
    lines = response.splitlines()
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return None
    kept = []
    for line in lines[start:]:
        if line.strip() and not line[0].isspace() and not _CODE_LINE.match(line):
            break  # unindented prose after the code
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def verify(
    response: str, tests: str, entry_point: str, timeout_s: float = 5.0, *, prelude: str = ""
) -> Verdict:
    """Judge ``response``: run its code, then ``tests`` (which raise ``AssertionError`` on a
    wrong answer), in the sandbox. ``prelude`` (trusted, e.g. the problem's imports) runs
    before the code. Never raises on model output; a sandbox that cannot run at all raises
    ``SandboxError`` (the verifier pool scores that item ``verifier_error``)."""
    if not _IDENTIFIER.fullmatch(entry_point):
        raise ValueError(f"entry_point must be an identifier, got {entry_point!r}")
    if not isinstance(response, str):
        return Verdict.fail(FORMAT, f"response is {type(response).__name__}, not str")
    code = extract_code(response, entry_point)
    if code is None:
        return Verdict.fail(FORMAT, "no code block or function definition found")
    if len(code) > CODE_CAP:
        return Verdict.fail(FORMAT, f"code longer than {CODE_CAP} characters")
    result = run_python(prelude + code, tests, entry_point, timeout_s=timeout_s)
    if result.outcome == "passed":
        return Verdict.ok(code)
    error = {"no_entry": FORMAT}.get(result.outcome, result.outcome)
    return Verdict.fail(error, result.detail, code)


__all__ = ["ERRORS", "Limits", "SandboxError", "extract_code", "verify"]
