"""Seeded Countdown problem generator (paper §4.2 data, TinyZero recipe).

Recipe of Jiayi-Pan/Countdown-Tasks-3to4 (used by TinyZero, which the paper uses): 3-4 numbers
drawn from 1-99, a target in 10-100, kept only if some equation using every number exactly once
with +, -, *, / reaches the target. We sample (numbers, target) uniformly and reject unsolvable
pairs, so the output is uniform over solvable problems. Solvability is decided by exhaustive search
over every way of repeatedly combining two remaining values (this covers every binary expression
tree) with exact rational arithmetic, so non-integer intermediates such as (7 / 2) * 4 count.

Determinism: only ``random.Random(seed)`` and list-ordered search are used (sets serve only for
membership), so the output does not depend on PYTHONHASHSEED or the platform.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction
from itertools import islice

Number = int | Fraction
# Expression trees are built as cheap tuples during the search and only formatted on success:
# an int leaf, or (op, left, right).
Expr = int | tuple[str, "Expr", "Expr"]

ALL_OPS = "+-*/"
# Same bounds the Countdown task accepts for a row (rrr.tasks.countdown).
_MIN_COUNT, _MAX_COUNT = 2, 6
# Give up (rather than loop forever) if the settings make solvable problems vanishingly rare.
MAX_ATTEMPTS_PER_PROBLEM = 100_000


def _div(a: Number, b: Number) -> Number:
    # Exact division; stay in ints when possible (int arithmetic is ~10x faster than Fraction).
    if type(a) is int and type(b) is int:
        return a // b if a % b == 0 else Fraction(a, b)
    q = Fraction(a) / b
    return q.numerator if q.denominator == 1 else q


class _Searcher:
    """Exhaustive search over every way of combining two remaining values with one operation
    (covers every binary expression tree), stopping at the first expression equal to target."""

    def __init__(self, ops: str) -> None:
        self.add = "+" in ops
        self.sub = "-" in ops
        self.mul = "*" in ops
        self.div = "/" in ops

    def _pairs(self, a: Number, ea: Expr, b: Number, eb: Expr) -> list[tuple[Number, Expr]]:
        out: list[tuple[Number, Expr]] = []
        if self.add:
            out.append((a + b, ("+", ea, eb)))
        if self.sub:
            out.append((a - b, ("-", ea, eb)))
            out.append((b - a, ("-", eb, ea)))
        if self.mul:
            out.append((a * b, ("*", ea, eb)))
        if self.div:
            if b != 0:
                out.append((_div(a, b), ("/", ea, eb)))
            if a != 0:
                out.append((_div(b, a), ("/", eb, ea)))
        return out

    def _last(self, a: Number, ea: Expr, b: Number, eb: Expr, t: int) -> Expr | None:
        # Two values left: test each operation against the target without building results
        # (a / b == t  <=>  a == t * b for b != 0), which avoids Fraction division entirely.
        if self.add and a + b == t:
            return ("+", ea, eb)
        if self.sub:
            if a - b == t:
                return ("-", ea, eb)
            if b - a == t:
                return ("-", eb, ea)
        if self.mul and a * b == t:
            return ("*", ea, eb)
        if self.div:
            if b != 0 and a == t * b:
                return ("/", ea, eb)
            if a != 0 and b == t * a:
                return ("/", eb, ea)
        return None

    def search(
        self, vals: list[Number], exprs: list[Expr], t: int, dead: set[tuple[Number, ...]]
    ) -> Expr | None:
        n = len(vals)
        if n == 1:
            return exprs[0] if vals[0] == t else None
        if n == 2:
            return self._last(vals[0], exprs[0], vals[1], exprs[1], t)
        # Memoise failed value multisets (order-free); a set used only for membership.
        key = tuple(sorted(vals))
        if key in dead:
            return None
        for i in range(n):
            for j in range(i + 1, n):
                rest_v = [vals[k] for k in range(n) if k != i and k != j]
                rest_e = [exprs[k] for k in range(n) if k != i and k != j]
                for value, expr in self._pairs(vals[i], exprs[i], vals[j], exprs[j]):
                    found = self.search([*rest_v, value], [*rest_e, expr], t, dead)
                    if found is not None:
                        return found
        dead.add(key)
        return None


def _format(expr: Expr, top: bool = True) -> str:
    if isinstance(expr, int):
        return str(expr)
    op, left, right = expr
    text = f"{_format(left, False)} {op} {_format(right, False)}"
    # Every inner combination is parenthesised, so the string evaluates as the search did.
    return text if top else f"({text})"


def _solve(searcher: _Searcher, nums: list[int], target: int) -> str | None:
    found = searcher.search(list(nums), list(nums), target, set())
    return None if found is None else _format(found)


def check_ops(ops: str) -> str:
    if not ops or any(op not in ALL_OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {ALL_OPS!r}, got {ops!r}")
    # Canonical order so equal settings give equal search order.
    return "".join(op for op in ALL_OPS if op in ops)


def solve(nums: list[int], target: int, ops: str = ALL_OPS) -> str | None:
    """An equation using every number once that evaluates exactly to ``target``, or ``None``."""
    return _solve(_Searcher(check_ops(ops)), nums, target)


def _check_ranges(
    min_nums: int, max_nums: int, min_num: int, max_num: int, min_target: int, max_target: int
) -> None:
    if not _MIN_COUNT <= min_nums <= max_nums <= _MAX_COUNT:
        raise ValueError(
            f"need {_MIN_COUNT} <= min_nums <= max_nums <= {_MAX_COUNT}, "
            f"got min_nums={min_nums}, max_nums={max_nums}"
        )
    if not 1 <= min_num <= max_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got {min_num}, {max_num}")
    if min_target > max_target:
        raise ValueError(f"need min_target <= max_target, got {min_target}, {max_target}")


def iter_problems(
    seed: int,
    *,
    min_nums: int = 3,
    max_nums: int = 4,
    min_num: int = 1,
    max_num: int = 99,
    min_target: int = 10,
    max_target: int = 100,
    ops: str = ALL_OPS,
) -> Iterator[dict[str, object]]:
    """Endless stream of solvable problems ``{"nums", "target", "solution"}`` (for training).

    Numbers are drawn with replacement (duplicates occur, as in Countdown-Tasks-3to4). Problems are
    not deduplicated. Raises ``ValueError`` on bad settings, or when no solvable problem turns up
    in ``MAX_ATTEMPTS_PER_PROBLEM`` draws.
    """
    # Validate eagerly (a generator body would only run on the first next()).
    _check_ranges(min_nums, max_nums, min_num, max_num, min_target, max_target)
    return _stream(
        random.Random(seed), min_nums, max_nums, min_num, max_num, min_target, max_target,
        check_ops(ops),
    )


def _stream(
    rng: random.Random,
    min_nums: int,
    max_nums: int,
    min_num: int,
    max_num: int,
    min_target: int,
    max_target: int,
    ops: str,
) -> Iterator[dict[str, object]]:
    searcher = _Searcher(ops)
    while True:
        for _ in range(MAX_ATTEMPTS_PER_PROBLEM):
            count = rng.randint(min_nums, max_nums)
            nums = [rng.randint(min_num, max_num) for _ in range(count)]
            target = rng.randint(min_target, max_target)
            solution = _solve(searcher, nums, target)
            if solution is not None:
                yield {"nums": nums, "target": target, "solution": solution}
                break
        else:
            raise ValueError(
                f"no solvable Countdown problem in {MAX_ATTEMPTS_PER_PROBLEM} draws with "
                f"nums {min_nums}-{max_nums} in [{min_num}, {max_num}], "
                f"target in [{min_target}, {max_target}], ops {ops!r}"
            )


def generate_problems(
    n: int,
    seed: int,
    *,
    min_nums: int = 3,
    max_nums: int = 4,
    min_num: int = 1,
    max_num: int = 99,
    min_target: int = 10,
    max_target: int = 100,
    ops: str = ALL_OPS,
) -> list[dict[str, object]]:
    """The first ``n`` problems of ``iter_problems(seed, ...)`` (so smaller ``n`` is a prefix)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_problems(
        seed,
        min_nums=min_nums,
        max_nums=max_nums,
        min_num=min_num,
        max_num=max_num,
        min_target=min_target,
        max_target=max_target,
        ops=ops,
    )
    return list(islice(stream, n))
