"""Synthetic failure-major episodes for the learner benches (bench/learner.py, a shared-prefix
speed and memory bench; bench/learner_check.py, the learner on a bare CUDA machine): torch only,
so the check can import it where nothing else of the stack is installed."""

from __future__ import annotations

import math

import torch

# The behaviour log-probs a bench gives its episodes:
#   spread        uniform in [-12, -8]: a trained sampler's confident tokens, for timings
#   near_uniform  within 0.1 of log(1/V), where a random-init model's are, so that PPO ratios
#                 start near 1 and few tokens are clipped (a clipped token has no gradient)
LOGPROBS = ("spread", "near_uniform")


def synthetic_episodes(
    groups: int,
    group_size: int,
    context: int,
    reflection: int,
    vocab: int,
    *,
    seed: int = 0,
    logprobs: str = "spread",
) -> tuple[list[list[int]], list[tuple[int, int]], list[list[float]], list[float]]:
    """`groups` groups of `group_size` episodes (tokens, reflection spans, behaviour log-probs,
    rewards). Each group shares one context, its length varying +-10 % between groups;
    reflection lengths spread from half of `reflection` (the limit) to the limit, mean ~3/4,
    the last of each group at the limit; rewards alternate, so every group has a spread."""
    if logprobs not in LOGPROBS:
        raise ValueError(f"logprobs={logprobs!r}: one of {LOGPROBS}")
    g = torch.Generator().manual_seed(seed)
    tokens, spans, behaviour, rewards = [], [], [], []
    for f in range(groups):
        ctx_len = context + (f % 3 - 1) * context // 10
        shared = torch.randint(0, vocab, (ctx_len,), generator=g).tolist()
        for i in range(group_size):
            n = max(1, round(reflection * (0.5 + 0.5 * (i + 1) / group_size)))
            tokens.append(shared + torch.randint(0, vocab, (n,), generator=g).tolist())
            spans.append((ctx_len, ctx_len + n))
            u = torch.rand(n, generator=g)
            lp = -u * 4 - 8 if logprobs == "spread" else (u - 0.5) * 0.2 - math.log(vocab)
            behaviour.append(lp.tolist())
            rewards.append(float((f + i) % 2))
    return tokens, spans, behaviour, rewards
