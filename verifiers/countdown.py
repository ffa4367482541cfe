"""Countdown verifier: does the response's final equation reach ``target`` using ``nums``?

Rules (the paper's Countdown task, Table 5 error classes):

* Extraction, from the last ``TAIL_CHARS`` characters of the response only: the content of the
  LAST ``\\boxed{...}`` (braces matched, so ``\\boxed{\\frac{1}{2}}`` yields ``\\frac{1}{2}``,
  which is then invalid; an unclosed last ``\\boxed{`` is invalid, not skipped); else the last
  ``<answer>...</answer>``; else the last equation-like line (only digits, operators, parens,
  spaces, ``=``, ``$`` and a few LaTeX operator commands, with at least one digit and one
  operator; a short leading label such as ``Answer:`` is dropped).
* Normalisation: ``× · ⋅ \\times \\cdot`` -> ``*``, ``÷ \\div`` -> ``/``, ``− –`` -> ``-``;
  ``$``, ``\\left``, ``\\right``, ``\\( \\) \\[ \\]`` and trailing periods are removed.
* ``=``: the text is split on ``=`` and the first non-empty side that is not a bare number is
  judged, so ``(4+73)-4+3 = 76``, ``76 = (4+73)-4+3`` and chains like ``a*b-c = 77-c = 76``
  all judge the expression written with the given numbers.
* Grammar: non-negative ASCII integer literals (at most ``DIGIT_CAP`` digits; leading zeros
  read by value), binary ``+ - * /`` with the usual precedence, and parentheses. There is NO
  unary minus or plus (``-3+5`` is invalid): the game combines the given numbers with binary
  operations, and allowing unary minus would let ``-(a-b)`` stand in for ``b-a`` style tricks
  that public checkers disagree on. Decimals (``2.5``), exponents (``**``, ``^``), implicit
  multiplication (``2(3)``) and any other character are invalid. Unicode digits such as
  fullwidth ``１`` are invalid: the character check is explicitly ASCII because ``int()``
  would silently accept them.
* Arithmetic is exact (ints, then ``fractions.Fraction`` once a division happens), so
  ``8/(3-8/3)`` is exactly 24. Division by zero is ``invalid_equation``.
* Check order: extraction/parse/evaluation (``invalid_equation``), then the multiset of literals
  must equal the multiset of ``nums`` (``wrong_numbers``), then the value must equal ``target``
  (``missed_target``).

Everything is bounded: only the response tail is scanned, the judged text is at most
``EQUATION_CAP`` characters, literals at most ``DIGIT_CAP`` digits and parentheses at most
``DEPTH_CAP`` deep, so ``9**9**9``, megabyte strings or 100k-digit numbers return at once.
No ``eval``, ``ast`` or ``sympy`` anywhere.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from fractions import Fraction

from rrr.verifiers.verdict import Verdict

INVALID_EQUATION = "invalid_equation"
WRONG_NUMBERS = "wrong_numbers"
MISSED_TARGET = "missed_target"
ERRORS: tuple[str, ...] = (INVALID_EQUATION, WRONG_NUMBERS, MISSED_TARGET)

TAIL_CHARS = 10_000
"""Only the last this-many characters are searched: the final answer sits at the end."""

EQUATION_CAP = 1_000
"""Longest extracted equation text judged; longer is ``invalid_equation``."""

DIGIT_CAP = 12
"""Longest integer literal accepted; keeps every intermediate value small."""

DEPTH_CAP = 64
"""Deepest parenthesis nesting accepted."""

Number = int | Fraction

_BOXED = "\\boxed{"
_BRACE = re.compile(r"[{}]")
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"

# An equation-like line. Alternatives start with distinct characters, so the regex is linear.
_EQ_LINE = re.compile(r"(?:[0-9 \t+\-*/()=.$×÷−–·⋅]|\\(?:times|div|cdot|left|right|[()\[\]]))+")
_HAS_OPERATOR = re.compile(r"[+\-*/×÷−–·⋅]|\\(?:times|div|cdot)")
_HAS_DIGIT = re.compile(r"[0-9]")
_LABEL = re.compile(r"[A-Za-z][A-Za-z ]{0,39}:")

_LATEX = (
    ("\\left", ""),
    ("\\right", ""),
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\\(", ""),
    ("\\)", ""),
    ("\\[", ""),
    ("\\]", ""),
)
_UNICODE = str.maketrans(
    {
        "×": "*",
        "·": "*",
        "⋅": "*",
        "÷": "/",
        "−": "-",
        "–": "-",
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
    }
)

_BARE_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_ALLOWED = re.compile(r"[0-9+\-*/() \t\r\n]+")
_DISALLOWED = re.compile(r"[^0-9+\-*/() \t\r\n]")
_TOKEN = re.compile(r"[0-9]+|[-+*/()]")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class _Invalid(Exception):
    """An invalid equation; the message is the human-readable reason."""


def verify(response: str, nums: Sequence[int], target: int) -> Verdict:
    """Judge ``response`` for the Countdown problem (``nums``, ``target``).

    Never raises on any ``response``; ``nums``/``target`` come from trusted data and must be
    integers (a non-integer there is a programming error and raises ``TypeError``).
    """
    want = sorted(operator.index(n) for n in nums)
    goal = operator.index(target)
    try:
        return _judge(response, want, goal)
    except Exception as exc:  # last resort: a verifier bug must not kill a reward loop
        return Verdict.fail(INVALID_EQUATION, f"verifier error: {type(exc).__name__}")


def _judge(response: str, want: list[int], goal: int) -> Verdict:
    """Extract, parse and check; ``want`` is the sorted list of given numbers."""
    if not isinstance(response, str):
        return Verdict.fail(INVALID_EQUATION, f"response is {type(response).__name__}, not str")
    raw: str | None = None
    try:
        raw = _extract(response)
        if len(raw) > EQUATION_CAP:
            raise _Invalid(f"equation longer than {EQUATION_CAP} characters")
        value, literals = _evaluate(_pick_side(_normalize(raw)))
    except _Invalid as exc:
        return Verdict.fail(INVALID_EQUATION, str(exc), raw)
    if sorted(literals) != want:
        return Verdict.fail(WRONG_NUMBERS, f"used {sorted(literals)}, given {want}", raw)
    if value != goal:
        return Verdict.fail(MISSED_TARGET, f"value {value}, target {goal}", raw)
    return Verdict.ok(raw)


# --- extraction -----------------------------------------------------------------------------


def _extract(response: str) -> str:
    """The equation text the response commits to (see module docstring for precedence)."""
    tail = response[-TAIL_CHARS:]
    for finder in (_last_boxed, _last_answer, _last_equation_line):
        found = finder(tail)
        if found is not None:
            return found
    raise _Invalid("no \\boxed{}, <answer> or equation line found")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with nested braces matched, or None if absent."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    body = start + len(_BOXED)
    depth = 1
    for match in _BRACE.finditer(text, body):
        if match.group() == "{":
            depth += 1
            continue
        depth -= 1
        if depth == 0:
            return text[body : match.start()]
    raise _Invalid("unclosed \\boxed{")


def _last_answer(text: str) -> str | None:
    """Content of the last complete ``<answer>...</answer>``, or None."""
    end = text.rfind(_ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(_ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(_ANSWER_OPEN) : end]


def _last_equation_line(text: str) -> str | None:
    """The last line that looks like an equation, minus a short ``Label:`` prefix, or None."""
    for line in reversed(text.splitlines()):
        candidate = line.strip()
        if not candidate:
            continue
        label = _LABEL.match(candidate)
        if label:
            candidate = candidate[label.end() :].strip()
        if (
            _EQ_LINE.fullmatch(candidate)
            and _HAS_DIGIT.search(candidate)
            and _HAS_OPERATOR.search(candidate)
        ):
            return candidate
    return None


# --- normalisation --------------------------------------------------------------------------


def _normalize(raw: str) -> str:
    """Map LaTeX / unicode operators to ASCII and drop math delimiters and trailing periods."""
    text = raw
    if "\\" in text:
        for old, new in _LATEX:
            text = text.replace(old, new)
    if "$" in text:
        text = text.replace("$", "")
    if not text.isascii():
        text = text.translate(_UNICODE)
    return text.strip().rstrip(".").strip()


def _pick_side(text: str) -> str:
    """The side of an ``=`` that holds the expression (first side that is not a bare number)."""
    if "=" not in text:
        if not text:
            raise _Invalid("empty equation")
        return text
    sides = [side.strip() for side in text.split("=")]
    sides = [side for side in sides if side]
    if not sides:
        raise _Invalid("empty equation")
    for side in sides:
        if not _BARE_NUMBER.fullmatch(side):
            return side
    return sides[0]


# --- parsing and exact evaluation -----------------------------------------------------------


def _evaluate(expr: str) -> tuple[Number, list[int]]:
    """Evaluate ``expr`` exactly with a shunting-yard parser; return (value, literals).

    Iterative (no recursion), so nesting depth cannot hit Python's recursion limit; the
    ``DEPTH_CAP`` check is about rejecting nonsense early, not about safety.
    """
    if not _ALLOWED.fullmatch(expr):
        bad = _DISALLOWED.search(expr)
        raise _Invalid(f"disallowed character {bad.group()!r}" if bad else "empty equation")
    values: list[Number] = []
    ops: list[str] = []
    literals: list[int] = []
    expect_operand = True
    depth = 0
    for token in _TOKEN.findall(expr):
        if token[0] in "0123456789":
            if not expect_operand:
                raise _Invalid(f"two numbers in a row at {token!r}")
            if len(token) > DIGIT_CAP:
                raise _Invalid(f"number longer than {DIGIT_CAP} digits")
            number = int(token)
            literals.append(number)
            values.append(number)
            expect_operand = False
        elif token == "(":
            if not expect_operand:
                raise _Invalid("'(' after an operand (implicit multiplication)")
            depth += 1
            if depth > DEPTH_CAP:
                raise _Invalid(f"parentheses nested deeper than {DEPTH_CAP}")
            ops.append(token)
        elif token == ")":
            if expect_operand:
                raise _Invalid("')' where an operand was expected")
            _close_paren(values, ops)
            depth -= 1
        else:
            if expect_operand:
                raise _Invalid(f"operator {token!r} where an operand was expected")
            _push_operator(token, values, ops)
            expect_operand = True
    if expect_operand:
        raise _Invalid("equation ends where an operand was expected")
    while ops:
        op = ops.pop()
        if op == "(":
            raise _Invalid("unbalanced '('")
        _apply(op, values)
    return values[0], literals


def _push_operator(op: str, values: list[Number], ops: list[str]) -> None:
    """Reduce operators of higher or equal precedence (left associativity), then push ``op``."""
    precedence = _PRECEDENCE[op]
    while ops and ops[-1] != "(" and _PRECEDENCE[ops[-1]] >= precedence:
        _apply(ops.pop(), values)
    ops.append(op)


def _close_paren(values: list[Number], ops: list[str]) -> None:
    """Reduce back to the matching ``(``."""
    while ops:
        op = ops.pop()
        if op == "(":
            return
        _apply(op, values)
    raise _Invalid("unbalanced ')'")


def _apply(op: str, values: list[Number]) -> None:
    """Pop two operands, push ``a op b``; ints stay ints until a division needs a Fraction."""
    right = values.pop()
    left = values.pop()
    if op == "+":
        values.append(left + right)
    elif op == "-":
        values.append(left - right)
    elif op == "*":
        values.append(left * right)
    else:
        if right == 0:
            raise _Invalid("division by zero")
        values.append(Fraction(left) / right)
