"""Code verifier: does the function in the response pass its tests?

``verify(response, tests, entry_point, timeout_s=5.0) -> Verdict`` extracts the code, runs it
and then ``tests`` in a sandboxed process (``rrr.verifiers.sandbox``) and names what went wrong:

* ``format``: no code in the response, or the code defines no function ``entry_point``;
* ``syntax``: the code does not compile;
* ``runtime``: it raised (anything but ``AssertionError``), exceeded a memory or output limit,
  was refused by the sandbox (a subprocess, a socket, a write outside its directory), or ended
  its own process before the tests finished;
* ``wrong_answer``: a test assertion failed;
* ``timeout``: it ran past ``timeout_s`` (wall clock) or its CPU limit.

The tests' contract (``prepare_tests``; docs/code-sandbox.md): ``tests`` is trusted Python that
raises ``AssertionError`` on a wrong answer, with at least one ``assert`` statement. When it
defines a top-level ``check`` function and never calls it (HumanEval's ``test`` field), the
verifier calls ``check(<entry_point>)`` after it, as HumanEval's own harness does. A pass needs
at least one ``assert`` to have run: tests that ran none fail the answer (``wrong_answer``), and
tests that hold no ``assert`` at all, or do not compile, raise ``TestsError``, so that a text
that can never fail is never a reward of 1.

Extraction: the last fenced block (```` ```python ```` or unlabelled) that defines
``entry_point``, else the last such block (an unclosed last fence, a response cut by the token
limit, runs to the end); without fences, the bare code from the first line that starts a
definition or import, stopping at the first unindented line of prose.
"""

from __future__ import annotations

import ast
import functools
import re

from rrr.verifiers.sandbox import Limits, SandboxError, run_python
from rrr.verifiers.verdict import Verdict

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
# Counts the tests' assert statements as they run (see prepare_tests); a name no test uses.
_COUNTER = "_rrr_asserts_run"
NO_ASSERTION_RAN = "the tests ran no assertion"


class TestsError(ValueError):
    """The tests cannot judge any answer: they do not compile, or they hold no ``assert``
    statement. A fault of the caller's data, never of the response (the verifier pool scores
    it ``verifier_error``, which leaves the sample out of training)."""

    __test__ = False  # not a pytest test class, despite the name


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


@functools.lru_cache(maxsize=1024)
def prepare_tests(tests: str, entry_point: str) -> str:
    """The test program the sandbox runs for ``tests``, or ``TestsError``.

    * HumanEval's harness runs ``test`` and then ``check(entry_point)``: its ``test`` field only
      defines ``check(candidate)``. Run alone it asserts nothing, and every answer, a wrong one
      or an infinite loop, would pass. So when the tests define a top-level ``check`` and no
      top-level statement ``check(...)`` calls it, ``check(<entry_point>)`` is appended (a
      text that already ends so, as rrr's HumanEval rows do, is left alone: one call, not two).
    * A text that can never fail is refused rather than run. Two guards, because neither alone
      is enough: statically, the tests must hold an ``assert`` statement (else ``TestsError``);
      at run time, every ``assert`` first bumps a counter, and tests that finish with the
      counter at 0 raise ``AssertionError`` themselves, so the answer fails. The run-time count
      is what makes it robust: asserts inside a function nobody calls, under ``if False:``, or
      in a loop over a wrong answer's empty result all count 0, which no static reading of the
      text can settle. Counting statements rather than whole-program tricks (tracing, audit
      events) keeps it cheap and inside the sandbox's protocol: the child is unchanged.
      (Tests that signal failure only by ``raise AssertionError`` must add an ``assert``.)

    Parsing is not running: the tests are trusted text, and nothing of the response is read
    here. Cached: a training run verifies the same tests thousands of times."""
    try:
        tree = ast.parse(tests, "tests.py")
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the source
        raise TestsError(f"the tests do not compile: {exc}") from None
    if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        raise TestsError(
            "the tests hold no assert statement, so no answer could ever fail them "
            "(a HumanEval-style `check(candidate)` must assert)"
        )
    defines_check = any(
        isinstance(node, ast.FunctionDef) and node.name == "check" for node in tree.body
    )
    # Called only where the module itself calls it unconditionally: a call under `if __name__
    # == "__main__":` (never true in the sandbox) or inside a function may not run; a second
    # call costs time, a missing one would pass everything.
    calls_check = any(
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "check"
        for node in tree.body
    )
    tree = _CountAsserts().visit(tree)
    start = _preamble_length(tree.body)  # a docstring, `from __future__`: they come first
    tree.body[start:start] = ast.parse(f"{_COUNTER} = [0]").body
    if defines_check and not calls_check:
        tree.body += ast.parse(f"check({entry_point})").body
    no_assertion = f"if not {_COUNTER}[0]:\n    raise AssertionError({NO_ASSERTION_RAN!r})"
    tree.body += ast.parse(no_assertion).body
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def _preamble_length(body: list[ast.stmt]) -> int:
    """How many leading statements must stay first: a docstring, then ``__future__`` imports."""
    n = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        n = int(isinstance(body[0].value.value, str))
    while n < len(body) and isinstance(body[n], ast.ImportFrom) and body[n].module == "__future__":
        n += 1
    return n


class _CountAsserts(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        # `_rrr_asserts_run[0] += 1` reads the module's global: no local shadows it.
        return [*ast.parse(f"{_COUNTER}[0] += 1").body, node]


def verify(
    response: str, tests: str, entry_point: str, timeout_s: float = 5.0, *, prelude: str = ""
) -> Verdict:
    """Judge ``response``: run its code, then ``tests`` (which raise ``AssertionError`` on a
    wrong answer; HumanEval's ``check`` is called, see ``prepare_tests``), in the sandbox.
    ``prelude`` (trusted, e.g. the problem's imports) runs before the code. Never raises on
    model output; tests that can never fail raise ``TestsError`` and a sandbox that cannot run
    at all raises ``SandboxError`` (the verifier pool scores either item ``verifier_error``)."""
    if not _IDENTIFIER.fullmatch(entry_point):
        raise ValueError(f"entry_point must be an identifier, got {entry_point!r}")
    program = prepare_tests(tests, entry_point)  # before the response: the caller's fault first
    if not isinstance(response, str):
        return Verdict.fail(FORMAT, f"response is {type(response).__name__}, not str")
    code = extract_code(response, entry_point)
    if code is None:
        return Verdict.fail(FORMAT, "no code block or function definition found")
    if len(code) > CODE_CAP:
        return Verdict.fail(FORMAT, f"code longer than {CODE_CAP} characters")
    result = run_python(prelude + code, program, entry_point, timeout_s=timeout_s)
    if result.outcome == "passed":
        return Verdict.ok(code)
    error = {"no_entry": FORMAT}.get(result.outcome, result.outcome)
    return Verdict.fail(error, result.detail, code)


__all__ = [
    "ERRORS",
    "Limits",
    "SandboxError",
    "TestsError",
    "extract_code",
    "prepare_tests",
    "verify",
]
