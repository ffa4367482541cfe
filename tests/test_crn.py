"""Keyed sampling noise (rrr/core/crn.py): exact sampling from softmax(logits / T), determinism
independent of the batch, and common random numbers between two nearby distributions."""

from __future__ import annotations

import torch

from rrr.core.crn import EvalNoise, _mul32, hash32, noise_key, sample


def _draw(logits: torch.Tensor, keys: torch.Tensor, t: float = 0.7, head: int = 4) -> torch.Tensor:
    n = keys.numel()
    return sample(logits.expand(n, -1), keys, torch.zeros(n, dtype=torch.int64),
                  torch.full((n,), t), head=head)  # fmt: skip


def test_mul32_and_hash_are_exact_32_bit_arithmetic() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2**32, (2000,), dtype=torch.int64, generator=gen)
    c = 0x846CA68B
    assert [int(v) for v in _mul32(x, c)] == [(int(a) * c) % 2**32 for a in x]
    h = hash32(x)
    assert int(h.min()) >= 0 and int(h.max()) < 2**32
    # A bijection on 32 bits: no collisions among distinct inputs.
    assert torch.unique(hash32(torch.arange(100_000))).numel() == 100_000


def test_noise_key_is_a_pure_function_of_seed_problem_sample_stage() -> None:
    k = noise_key(0, "countdown:3,4->7", 2, "first")
    assert k == noise_key(0, "countdown:3,4->7", 2, "first") and 0 <= k < 2**62
    p = "countdown:3,4->7"
    others = {noise_key(1, p, 2, "first"), noise_key(0, "countdown:4,3->7", 2, "first"),
              noise_key(0, p, 3, "first"), noise_key(0, p, 2, "retry:0:0")}  # fmt: skip
    assert k not in others and len(others) == 4
    expected = tuple(noise_key(5, "p", j, "first") for j in range(3))
    assert EvalNoise(5).keys("p", range(3), "first") == expected


def test_samples_follow_softmax_over_temperature_exactly_including_the_tail() -> None:
    # 30 tokens and a 4-token head: the tail (14 % of the mass here) wins often, so both the
    # head's Gumbel race and the tail's inverse-CDF draw are exercised.
    logits = torch.randn(30, generator=torch.Generator().manual_seed(1))
    n = 60_000
    keys = torch.arange(n, dtype=torch.int64) * 1_000_003 + 17
    counts = torch.bincount(_draw(logits, keys), minlength=30).double()
    p = torch.softmax(logits.double() / 0.7, 0)
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 58.0  # df 29: the 99.9th percentile; a biased sampler lands far above
    assert 1 - float(p.topk(4).values.sum()) > 0.1  # the tail did matter


def test_a_row_samples_the_same_token_in_any_batch() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 500, generator=g) * 2
    keys = torch.randint(0, 2**62, (8,), generator=g)
    pos = torch.arange(8) * 3
    temps = torch.full((8,), 0.9)
    full = sample(logits, keys, pos, temps)
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    shuffled = sample(logits[perm], keys[perm], pos[perm], temps[perm])
    assert torch.equal(shuffled, full[perm])
    alone = torch.stack([sample(logits[i:i + 1], keys[i:i + 1], pos[i:i + 1], temps[i:i + 1])[0]
                         for i in range(8)])  # fmt: skip
    assert torch.equal(alone, full)
    # Another position or key is other noise.
    assert not torch.equal(sample(logits, keys, pos + 1, temps), full)


def test_common_noise_couples_nearby_distributions() -> None:
    """Gumbel coupling: two distributions p, q at total variation TV agree with probability
    >= (1 - TV) / (1 + TV) under shared noise, and only sum p*q under independent noise."""
    gen = torch.Generator().manual_seed(3)
    lp = torch.randn(40, generator=gen) * 2
    lq = lp + 0.3 * torch.randn(40, generator=gen)
    n = 20_000
    keys = torch.arange(n, dtype=torch.int64) * 7919 + 11
    a, b = _draw(lp, keys, head=64), _draw(lq, keys, head=64)
    b_indep = _draw(lq, keys + 1, head=64)
    p, q = torch.softmax(lp.double() / 0.7, 0), torch.softmax(lq.double() / 0.7, 0)
    tv = 0.5 * float((p - q).abs().sum())
    coupled = float((a == b).double().mean())
    independent = float((a == b_indep).double().mean())
    assert coupled >= (1 - tv) / (1 + tv) - 0.01
    assert abs(independent - float((p * q).sum())) < 0.02
    assert coupled > independent + 0.2
