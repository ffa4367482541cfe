"""Statistics for comparing two evaluations of the same problems (vanilla vs trained).

Pure functions, no numpy/scipy: a 95 % Wilson interval for one accuracy, and an exact McNemar
test for a paired difference. McNemar, not two independent proportions: both models answer the
*same* problems, and only the discordant ones (one right, the other wrong) carry information
about which model is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (behaves at 0 %, 100 % and small n,
    where the normal "p +- 1.96 sqrt(p(1-p)/n)" interval does not)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside 0..{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (doubling the smaller tail)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    # log-space sum: n can be in the thousands, and C(n, i) / 2^n underflows long before that.
    log_half_n = n * math.log(0.5)
    tail = sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
        for i in range(k + 1)
    )
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    n: int  # problems both evaluations judged
    a_correct: int
    b_correct: int
    only_a: int  # A right, B wrong
    only_b: int  # B right, A wrong
    p_value: float  # exact McNemar, two-sided

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A, over the paired problems."""
        return (self.b_correct - self.a_correct) / self.n if self.n else 0.0

    def difference_interval(self, z: float = Z95) -> tuple[float, float]:
        """95 % interval of the paired difference (Wald on the paired design: the variance
        comes from the discordant pairs only)."""
        if not self.n:
            return (0.0, 0.0)
        n, b, c = self.n, self.only_a, self.only_b
        d = (c - b) / n
        se = math.sqrt(max((b + c) / n - d * d, 0.0) / n)
        return (d - z * se, d + z * se)


def mcnemar(a: list[bool], b: list[bool]) -> PairedComparison:
    """Exact McNemar test of two paired lists of outcomes (same problems, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return PairedComparison(
        n=len(a),
        a_correct=sum(map(bool, a)),
        b_correct=sum(map(bool, b)),
        only_a=only_a,
        only_b=only_b,
        p_value=binomial_two_sided_p(only_b, only_a + only_b),
    )
