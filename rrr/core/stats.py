"""Statistics for comparing two evaluations of the same problems (vanilla vs trained).

Pure functions, no numpy/scipy.

The evaluation draws k samples per problem (`eval.samples_per_problem`). The unit of
replication is the problem, not the sample: the k outcomes of one problem share its
difficulty, so the n*k outcomes are clustered and a test that treats them as independent
(McNemar on the flattened outcomes, a Wilson interval on n*k) is overconfident. So:

- one run: accuracy = mean of the n per-problem success rates, with a t interval over them;
- two runs (`rrr eval --compare`): a paired t test over problems on the per-problem rate
  differences d_i = rate_B(i) - rate_A(i), with the exact Student t distribution
  (regularised incomplete beta, Numerical Recipes 6.4);
- its power: the minimum detectable effect (MDE) at 80 % power, and the k that would bring
  the MDE to a target, from the two variance components of d_i (between problems, and
  within a problem across samples, which shrinks as 1/k and with common random numbers).

The exact McNemar test and the Wilson interval stay for one sample per problem.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
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


# ----------------------------------------------------------------------------- Student t


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def incomplete_beta(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(1.0 - x, b, a) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    return min(1.0, incomplete_beta(df / (df + t * t), df / 2.0, 0.5)) if t else 1.0


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on t_cdf; 0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} outside (0, 1)")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- over problems


@dataclass(frozen=True)
class MeanTest:
    """A one-sample t analysis of n per-problem values (rates, or paired differences)."""

    n: int
    mean: float
    sd: float  # sample standard deviation of the n values
    p_value: float  # two-sided, H0: mean = 0 (meaningful for differences)
    interval: tuple[float, float]  # 95 %

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n else 0.0

    @property
    def df(self) -> int:
        return max(self.n - 1, 1)


def t_test(values: Sequence[float], confidence: float = 0.95) -> MeanTest:
    """Student's t over `values` (independent units: problems). With all values equal the
    spread is 0: p = 1 for a zero mean (no difference at all), else 0."""
    n = len(values)
    if n == 0:
        return MeanTest(0, 0.0, 0.0, 1.0, (0.0, 0.0))
    mean = sum(values) / n
    if n == 1:
        return MeanTest(1, mean, 0.0, 1.0, (-math.inf, math.inf))
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0.0:
        return MeanTest(n, mean, 0.0, 1.0 if mean == 0 else 0.0, (mean, mean))
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    return MeanTest(n, mean, sd, t_two_sided_p(mean / se, n - 1), (mean - half, mean + half))


def minimum_detectable_effect(
    sd: float, n: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true mean difference a two-sided paired t test at `alpha` over n problems
    detects with probability `power`, when the per-problem differences have spread sd:
    (t_{1-alpha/2} + t_{power}) * sd / sqrt(n)."""
    if n < 2:
        return math.inf
    df = n - 1
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * sd / math.sqrt(n)


@dataclass(frozen=True)
class VarianceComponents:
    """Var(d_i) of a per-problem difference d_i = mean of k per-sample differences
    x_ij = b_ij - a_ij: between + within / k."""

    between: float  # variance of the true per-problem differences across problems
    within: float  # mean within-problem variance of one sample's x_ij
    k: int

    def variance(self, k: int) -> float:
        return max(self.between, 0.0) + self.within / k


def variance_components(diffs: Sequence[Sequence[float]]) -> VarianceComponents:
    """Method-of-moments split of Var(d_i) (one-way random effects): `diffs[i]` are the k
    paired sample differences of problem i (all problems the same k >= 2)."""
    k = min((len(d) for d in diffs), default=0)
    if k < 2 or len(diffs) < 2:
        raise ValueError("variance components need >= 2 problems with >= 2 samples each")
    means = [sum(d[:k]) / k for d in diffs]
    within = sum(
        sum((x - m) ** 2 for x in d[:k]) / (k - 1) for d, m in zip(diffs, means)
    ) / len(diffs)
    grand = sum(means) / len(means)
    total = sum((m - grand) ** 2 for m in means) / (len(means) - 1)
    return VarianceComponents(between=total - within / k, within=within, k=k)


def samples_for_mde(
    target: float, n: int, components: VarianceComponents, alpha: float = 0.05,
    power: float = 0.8, max_k: int = 1024,
) -> int | None:  # fmt: skip
    """The smallest k whose MDE over n problems is <= target, or None when even max_k
    samples cannot get there (the between-problem variance alone is too large)."""
    for k in range(1, max_k + 1):
        if minimum_detectable_effect(math.sqrt(components.variance(k)), n, alpha, power) <= target:
            return k
    return None


def discordance(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    """Share of paired samples (same problem, same sample index) whose outcomes differ."""
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(1 for x, y in pairs if bool(x) != bool(y)) / len(pairs) if pairs else 0.0


# ------------------------------------------------------------------ over training runs


@dataclass(frozen=True)
class RunLevel:
    """Training runs as the unit (issue 29): run r's effect is its mean per-problem difference
    against one reference (trained - vanilla), measured with its own evaluation standard error.
    The test is Student's t over the R effects (df R - 1): it covers the variance of training
    over seeds as well as the evaluation's, which a paired test within one run does not."""

    test: MeanTest  # one-sample t over the R effects
    eval_se: float  # root mean square of the runs' evaluation standard errors

    @property
    def between_seed_sd(self) -> float:
        """The spread of the effects net of evaluation noise (method of moments, floored at 0):
        Var(effect_r) = Var_seeds + SE_r^2."""
        return math.sqrt(max(self.test.sd**2 - self.eval_se**2, 0.0))


def run_level(effects: Sequence[float], eval_ses: Sequence[float]) -> RunLevel:
    if len(effects) != len(eval_ses):
        raise ValueError("one evaluation standard error per effect")
    rms = math.sqrt(sum(se**2 for se in eval_ses) / len(eval_ses)) if eval_ses else 0.0
    return RunLevel(t_test(effects), rms)


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> MeanTest:
    """mean(a) - mean(b) with Welch's t (unequal variances, Satterthwaite's df); `n` is
    len(a) + len(b), `sd` the standard error of the difference. Needs >= 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs >= 2 values on each side")
    ta, tb = t_test(a), t_test(b)
    va, vb = ta.sd**2 / ta.n, tb.sd**2 / tb.n
    se = math.sqrt(va + vb)
    diff = ta.mean - tb.mean
    if se == 0.0:
        return MeanTest(ta.n + tb.n, diff, 0.0, 1.0 if diff == 0 else 0.0, (diff, diff))
    df = (va + vb) ** 2 / (va**2 / (ta.n - 1) + vb**2 / (tb.n - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    return MeanTest(ta.n + tb.n, diff, se, t_two_sided_p(diff / se, df), (diff - half, diff + half))


# ----------------------------------------------------------------------------- placebo


@dataclass(frozen=True)
class Placebo:
    splits: int
    k: int
    n: int
    alpha: float
    false_positives: int
    p_values: list[float]

    @property
    def rate(self) -> float:
        return self.false_positives / self.splits if self.splits else 0.0


def placebo(
    pools: Sequence[Sequence[int]], k: int, splits: int = 200, alpha: float = 0.05,
    seed: int = 0,
) -> Placebo:  # fmt: skip
    """False-positive rate of the paired t test when a model is compared with itself.

    `pools[i]` holds >= 2k outcomes of problem i, each drawn with its own noise (an
    independent draw of the same model). Each split takes, for every problem independently,
    a random k of them as run A and another disjoint k as run B: two independent k-sample
    evaluations of one model, the null hypothesis exactly. The share of splits with
    p < alpha estimates the test's size at this n and k. The splits share the data, so the
    share varies more than a binomial(splits) would, but its expectation is the size."""
    rng = random.Random(seed)
    usable = [list(p) for p in pools if len(p) >= 2 * k]
    if len(usable) < 2:
        raise ValueError(f"a placebo needs >= 2 problems with >= {2 * k} samples each")
    p_values = []
    for _ in range(splits):
        diffs = []
        for pool in usable:
            picked = rng.sample(range(len(pool)), 2 * k)
            a = sum(pool[j] for j in picked[:k]) / k
            b = sum(pool[j] for j in picked[k:]) / k
            diffs.append(b - a)
        p_values.append(t_test(diffs).p_value)
    return Placebo(splits, k, len(usable), alpha, sum(p < alpha for p in p_values), p_values)
