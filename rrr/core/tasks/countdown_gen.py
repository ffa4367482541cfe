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

import hashlib
import random
from collections.abc import Iterator
from itertools import islice
from math import gcd

# Exact rationals without fractions.Fraction (whose hashing dominated the search's run time):
# an int, or a reduced (numerator, denominator) tuple with denominator > 1. Each value has one
# representation, so dict keys compare exactly.
Value = int | tuple[int, int]
# Expression trees are built as cheap tuples during the search and only formatted on success:
# an int leaf, or (op, left, right).
Expr = int | tuple[str, "Expr", "Expr"]

ALL_OPS = "+-*/"
# Same bounds the Countdown task accepts for a row (rrr.core.tasks.countdown).
_MIN_COUNT, _MAX_COUNT = 2, 6
# Give up (rather than loop forever) if the settings make solvable problems vanishingly rare.
MAX_ATTEMPTS_PER_PROBLEM = 100_000
# Cap on memoised reachable values (summed over cached subsets); past it the memo is dropped.
# Results are a pure function of the subset, so clearing never changes any output.
_CACHE_BUDGET = 500_000

# Problem parts: "heldout" is a fixed 1/HELDOUT_EVERY of all problems, chosen by a stable hash
# of (numbers, target), so a training stream and an evaluation stream drawn with any seeds never
# share a problem. "all" keeps every problem (the default, and the TinyZero recipe).
# A second split (issue 29): the runs that chose the replication preset's settings were all
# evaluated on "heldout", so a test of those settings needs problems that no choice saw.
# "heldout-b" is 1/HELDOUT_B_EVERY of the "train" part by a second hash (the training
# distribution, never evaluated by a run before it); "train-b" is the rest of "train". The first
# held-out part is in neither.
PARTS = ("all", "train", "heldout", "train-b", "heldout-b")
HELDOUT_EVERY = 5
HELDOUT_B_EVERY = 4


def _hash(key: str) -> int:
    """A stable hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def problem_part(nums: list[int], target: int) -> str:
    """"heldout" or "train": the part a problem belongs to, the same on every machine (a hash
    of its numbers in order and its target)."""
    return "heldout" if _hash(f"{nums}->{target}") % HELDOUT_EVERY == 0 else "train"


def in_part(nums: list[int], target: int, part: str) -> bool:
    """Whether a problem belongs to `part` (one of PARTS)."""
    if part == "all":
        return True
    first = problem_part(nums, target)
    if part in ("train", "heldout"):
        return first == part
    if first != "train":
        return False
    second = "heldout-b" if _hash(f"b:{nums}->{target}") % HELDOUT_B_EVERY == 0 else "train-b"
    return second == part


# The six results _arith returns, in order: (symbol, operands swapped).
_OP_TABLE: tuple[tuple[str, bool], ...] = (
    ("+", False),  # a + b
    ("-", False),  # a - b
    ("-", True),  # b - a
    ("*", False),  # a * b
    ("/", False),  # a / b
    ("/", True),  # b / a
)


def _frac(p: int, q: int) -> Value:
    """p / q in canonical form (q != 0)."""
    if q < 0:
        p, q = -p, -q
    g = gcd(p, q)
    if g != 1:
        p //= g
        q //= g
    return p if q == 1 else (p, q)


def _arith(a: Value, b: Value) -> tuple[Value, Value, Value, Value, Value | None, Value | None]:
    """(a + b, a - b, b - a, a * b, a / b, b / a); a division by zero gives None."""
    if type(a) is int and type(b) is int:  # fast path: most intermediate values are integers
        return (
            a + b,
            a - b,
            b - a,
            a * b,
            (a // b if a % b == 0 else _frac(a, b)) if b else None,
            (b // a if b % a == 0 else _frac(b, a)) if a else None,
        )
    pa, qa = (a, 1) if type(a) is int else a
    pb, qb = (b, 1) if type(b) is int else b
    xa, xb, den = pa * qb, pb * qa, qa * qb
    return (
        _frac(xa + xb, den),
        _frac(xa - xb, den),
        _frac(xb - xa, den),
        _frac(pa * pb, den),
        _frac(xa, xb) if xb else None,
        _frac(xb, xa) if xa else None,
    )


def _splits(n: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Unordered two-way splits of positions 0..n-1 (position 0 always on the left), smallest
    larger side first, so cheap balanced splits (2+2) are tried before 1+3."""
    out = []
    for mask in range(1, 2**n - 1):
        if mask & 1:
            left = tuple(i for i in range(n) if mask >> i & 1)
            right = tuple(i for i in range(n) if not mask >> i & 1)
            out.append((left, right))
    out.sort(key=lambda split: max(len(split[0]), len(split[1])))  # stable: deterministic
    return out


class _Solver:
    """Exhaustive Countdown search by subset dynamic programming with exact rationals.

    Every expression using all numbers once splits at its root into two expressions over
    complementary sub-multisets, so ``reach(S)`` (value -> one expression) is built from the
    reach of the parts, and a target is found at the root by looking up, for each value r of one
    part, the single value the other part would need (t - r, r - t, ...). Sub-results are memoised
    per sorted number tuple. Dicts keep insertion order, so results are deterministic.
    """

    def __init__(self, ops: str) -> None:
        self.active = tuple(k for k, (sym, _) in enumerate(_OP_TABLE) if sym in ops)
        self.add = "+" in ops
        self.sub = "-" in ops
        self.mul = "*" in ops
        self.div = "/" in ops
        self._cache: dict[tuple[int, ...], dict[Value, Expr]] = {}
        self._cached_values = 0
        self._splits = {n: _splits(n) for n in range(2, _MAX_COUNT + 1)}

    def _parts(self, nums: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        seen: set[tuple[int, ...]] = set()  # membership only; duplicates give equal splits
        parts = []
        for left, right in self._splits[len(nums)]:
            a = tuple(nums[i] for i in left)
            if a not in seen:
                seen.add(a)
                parts.append((a, tuple(nums[i] for i in right)))
        return parts

    def reach(self, nums: tuple[int, ...]) -> dict[Value, Expr]:
        """Every value an expression using each of ``nums`` (sorted) once can take."""
        if len(nums) == 1:
            return {nums[0]: nums[0]}
        cached = self._cache.get(nums)
        if cached is not None:
            return cached
        out: dict[Value, Expr] = {}
        active = self.active
        for a, b in self._parts(nums):
            right = self.reach(b)
            for va, ea in self.reach(a).items():
                for vb, eb in right.items():
                    results = _arith(va, vb)
                    for k in active:
                        v = results[k]
                        if v is not None and v not in out:
                            sym, swap = _OP_TABLE[k]
                            out[v] = (sym, eb, ea) if swap else (sym, ea, eb)
        if self._cached_values + len(out) > _CACHE_BUDGET:
            self._cache.clear()
            self._cached_values = 0
        self._cache[nums] = out
        self._cached_values += len(out)
        return out

    def _match(self, small: dict[Value, Expr], large: dict[Value, Expr], t: int) -> Expr | None:
        # For each value r of one side, the other side must supply exactly one value s.
        for r, er in small.items():
            r_plus_t, r_minus_t, t_minus_r, r_times_t, r_over_t, t_over_r = _arith(r, t)
            if self.add and t_minus_r in large:  # r + s = t
                return ("+", er, large[t_minus_r])
            if self.sub:
                if r_minus_t in large:  # r - s = t
                    return ("-", er, large[r_minus_t])
                if r_plus_t in large:  # s - r = t
                    return ("-", large[r_plus_t], er)
            if r != 0:
                if self.mul and t_over_r in large:  # r * s = t
                    return ("*", er, large[t_over_r])
                if self.div:
                    if r_over_t is not None and r_over_t in large:  # r / s = t (s != 0)
                        return ("/", er, large[r_over_t])
                    if r_times_t in large:  # s / r = t
                        return ("/", large[r_times_t], er)
        return None

    def find(self, nums: list[int], target: int) -> Expr | None:
        key = tuple(sorted(nums))
        if len(key) == 1:
            return key[0] if key[0] == target else None
        for a, b in self._parts(key):
            ra, rb = self.reach(a), self.reach(b)
            small, large = (ra, rb) if len(ra) <= len(rb) else (rb, ra)
            found = self._match(small, large, target)
            if found is not None:
                return found
        return None


_SOLVERS: dict[str, _Solver] = {}


def _solver(ops: str) -> _Solver:
    # One memo per ops set, shared by solve() and every generator stream.
    if ops not in _SOLVERS:
        _SOLVERS[ops] = _Solver(ops)
    return _SOLVERS[ops]


def _format(expr: Expr, top: bool = True) -> str:
    if isinstance(expr, int):
        return str(expr)
    op, left, right = expr
    text = f"{_format(left, False)} {op} {_format(right, False)}"
    # Every inner combination is parenthesised, so the string evaluates as the search did.
    return text if top else f"({text})"


def _solve(solver: _Solver, nums: list[int], target: int) -> str | None:
    found = solver.find(nums, target)
    return None if found is None else _format(found)


def check_ops(ops: str) -> str:
    if not ops or any(op not in ALL_OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {ALL_OPS!r}, got {ops!r}")
    # Canonical order so equal settings give equal search order.
    return "".join(op for op in ALL_OPS if op in ops)


def solve(nums: list[int], target: int, ops: str = ALL_OPS) -> str | None:
    """An equation using every number once that evaluates exactly to ``target``, or ``None``."""
    return _solve(_solver(check_ops(ops)), nums, target)


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
    part: str = "all",
) -> Iterator[dict[str, object]]:
    """Endless stream of solvable problems ``{"nums", "target", "solution"}`` (for training).

    ``part`` keeps only the problems of one part (PARTS, see ``problem_part`` and ``in_part``):
    a held-out evaluation set that no training stream can contain.

    Numbers are drawn with replacement (duplicates occur, as in Countdown-Tasks-3to4). Problems are
    not deduplicated. Raises ``ValueError`` on bad settings, or when no solvable problem turns up
    in ``MAX_ATTEMPTS_PER_PROBLEM`` draws.
    """
    # Validate eagerly (a generator body would only run on the first next()).
    _check_ranges(min_nums, max_nums, min_num, max_num, min_target, max_target)
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return _stream(
        random.Random(seed),
        min_nums,
        max_nums,
        min_num,
        max_num,
        min_target,
        max_target,
        check_ops(ops),
        part,
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
    part: str,
) -> Iterator[dict[str, object]]:
    solver = _solver(ops)
    while True:
        for _ in range(MAX_ATTEMPTS_PER_PROBLEM):
            count = rng.randint(min_nums, max_nums)
            nums = [rng.randint(min_num, max_num) for _ in range(count)]
            target = rng.randint(min_target, max_target)
            if not in_part(nums, target, part):
                continue
            solution = _solve(solver, nums, target)
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
    part: str = "all",
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
        part=part,
    )
    return list(islice(stream, n))


MAX_ENUMERATED_TUPLES = 200_000  # number tuples count_problems will enumerate before giving up


def count_problems(
    *,
    min_nums: int = 3,
    max_nums: int = 4,
    min_num: int = 1,
    max_num: int = 99,
    min_target: int = 10,
    max_target: int = 100,
    ops: str = ALL_OPS,
    part: str = "all",
) -> int | None:
    """How many distinct problems (ordered numbers, target) these settings can generate: the
    universe a seeded sample with replacement is drawn from. None when that needs more than
    MAX_ENUMERATED_TUPLES number tuples (the paper's 3-4 numbers in 1-99: ~10^8)."""
    from itertools import product

    _check_ranges(min_nums, max_nums, min_num, max_num, min_target, max_target)
    span = max_num - min_num + 1
    if sum(span**c for c in range(min_nums, max_nums + 1)) > MAX_ENUMERATED_TUPLES:
        return None
    solver = _solver(check_ops(ops))
    total = 0
    for count in range(min_nums, max_nums + 1):
        for nums in product(range(min_num, max_num + 1), repeat=count):
            reach = solver.reach(tuple(sorted(nums)))
            for target in range(min_target, max_target + 1):
                if target in reach and in_part(list(nums), target, part):
                    total += 1
    return total
