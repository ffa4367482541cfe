"""Common random numbers for evaluation: sampling noise keyed on what is sampled, not on when.

Two models compared on the same problems are compared more precisely when they see the same
random noise (common random numbers): where their next-token distributions agree, their
samples coincide, and only the problems where the models really differ stay discordant.
vLLM's samplers draw noise per batch row and step, so two engines (or one engine at two
points of a run) never share it, and a per-request `SamplingParams(seed=...)` crashes vLLM's
CPU sampler (docs/cpu-stack.md).

So the noise is ours. The Gumbel-max trick: with g_v i.i.d. standard Gumbel,
argmax_v (logits_v / T + g_v) is distributed exactly as softmax(logits / T). Each g_v here is
a deterministic function of (eval seed, problem, sample index, stage, output position, token
id): a counter-based integer hash, the same on every device, batch layout and engine. The
vLLM adapter puts the chosen token's logit on top and the request decodes greedily
(temperature 0), which takes it.

  key   = noise_key(seed, problem_key, sample, stage)     # 62 bits, on the driver
  token = sample(logits, key, position, T)                # in the vLLM worker, per step

Pure functions (torch only); the vLLM adapter is actors/crn_logits.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

MASK32 = 0xFFFFFFFF
# Extra-args key under which a request carries its noise to the vLLM worker.
EXTRA_ARGS_KEY = "rrr_noise"


def noise_key(seed: int, problem: str, sample: int, stage: str) -> int:
    """The key of one sampled sequence: eval seed, problem key, sample index (0..k-1) and
    stage ('first', 'reflect', 'retry'). Independent of training history, engine and batch."""
    text = f"{seed}\x1f{problem}\x1f{sample}\x1f{stage}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 2


@dataclass(frozen=True)
class EvalNoise:
    """The noise of one evaluation procedure: `eval.seed`, nothing from training history."""

    seed: int

    def key(self, problem: str, sample: int, stage: str) -> int:
        return noise_key(self.seed, problem, sample, stage)

    def keys(self, problem: str, samples: range, stage: str) -> tuple[int, ...]:
        return tuple(self.key(problem, j, stage) for j in samples)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), without int64 overflow: split c in
    16-bit halves so every product stays below 2**48 (signed overflow is undefined in the
    kernels torch runs)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (Wellons' 'lowbias32': a bijection on [0, 2**32) with good
    avalanche), elementwise on an int64 tensor holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _row_bases(keys: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32-bit words per (key, position): the seeds of one row's token hashes."""
    k_lo, k_hi = keys & MASK32, (keys >> 32) & MASK32
    p = positions & MASK32
    a = hash32(k_lo ^ hash32(p ^ 0x68E31DA4))
    b = hash32(k_hi ^ hash32(a ^ 0xB5297A4D))
    return a, b


def uniforms(keys: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """U(0, 1) as float64 for each (row, token): rows are (key, position) pairs, `tokens` an
    int tensor [rows, m] of token ids (< 2**32). 53 hashed bits each."""
    a, b = _row_bases(keys.to(torch.int64), positions.to(torch.int64))
    hi = hash32(tokens.to(torch.int64) ^ a[:, None])  # 32 bits
    lo = hash32(hi ^ b[:, None]) >> 11  # 21 more bits
    # (n + 0.5) / 2**53: strictly inside (0, 1), so the logs below are finite.
    return ((hi << 21) + lo).to(torch.float64).add_(0.5).mul_(2.0**-53)


def gumbel(keys: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise -log(-log U) (float64) for each (row, token)."""
    return uniforms(keys, positions, tokens).log_().neg_().log_().neg_()


# Pseudo token ids (beyond any vocabulary) that key the two draws of the tail.
_TAIL_GUMBEL = MASK32
_TAIL_PICK = MASK32 - 1
HEAD = 64  # tokens per row that get their own Gumbel draw


def sample(
    logits: torch.Tensor,
    keys: torch.Tensor,
    positions: torch.Tensor,
    temperatures: torch.Tensor,
    head: int = HEAD,
) -> torch.Tensor:
    """One token per row of `logits` [rows, vocab], sampled exactly from softmax(logits / T)
    with noise keyed on (key, position, token id).

    The Gumbel-max trick on the whole vocabulary costs tens of elementwise passes over
    rows x vocab (0.75 s per 64 rows of a 49k vocabulary on one core, more than the model's
    own step). The same distribution for the price of a top-k: the `head` most likely tokens
    get their own Gumbel g_v (keyed on their id), and the rest, the tail, one Gumbel for the
    whole of it, since max over v in tail of (l_v + g_v) is Gumbel(log sum_tail exp l_v)
    (max-stability). If the tail wins, its token is drawn by inverse CDF over the tail in
    token-id order with one more keyed uniform. Both steps are exact, so the sample is exactly
    softmax(logits / T); two models share every head token's noise, so where their
    distributions agree their samples coincide (the tail wins rarely: it holds what the top
    64 tokens leave)."""
    rows, vocab = logits.shape
    keys = keys.to(device=logits.device, dtype=torch.int64)
    positions = positions.to(device=logits.device, dtype=torch.int64)
    # float32 over the vocabulary (the model's own precision), float64 for the few scores
    # that are compared.
    scaled = logits.float() / temperatures.to(logits.device, torch.float32)[:, None]
    k = min(head, vocab)
    top, idx = torch.topk(scaled, k, dim=1)
    top = top.double()
    head_scores = top + gumbel(keys, positions, idx)
    best, best_at = head_scores.max(dim=1)
    winners = idx.gather(1, best_at[:, None])[:, 0]
    if k == vocab:
        return winners
    lse_all = torch.logsumexp(scaled, dim=1).double()
    lse_head = torch.logsumexp(top, dim=1)
    # log of the tail's mass: log(Z_all - Z_head), computed without cancellation.
    tail_log_mass = lse_all + torch.log1p(-torch.exp(lse_head - lse_all).clamp(max=1.0))
    sentinel = torch.full((rows, 1), _TAIL_GUMBEL, dtype=torch.int64, device=logits.device)
    tail_score = tail_log_mass + gumbel(keys, positions, sentinel)[:, 0]
    tail_rows = torch.nonzero(tail_score > best).flatten()
    if tail_rows.numel():
        sub = scaled.index_select(0, tail_rows)
        p = torch.exp(sub.double() - lse_all.index_select(0, tail_rows)[:, None])
        p.scatter_(1, idx.index_select(0, tail_rows), 0.0)
        cdf = torch.cumsum(p, dim=1)
        u = uniforms(keys[tail_rows], positions[tail_rows],
                     torch.full_like(tail_rows[:, None], _TAIL_PICK))  # fmt: skip
        target = u * cdf[:, -1:]
        picked = torch.searchsorted(cdf, target).clamp(max=vocab - 1)[:, 0]
        winners = winners.index_copy(0, tail_rows, picked)
    return winners
