"""Episodes -> padded training tensors -> per-rank micro-batches. Pure torch, no model, no Ray.

The reflection mask is derived exactly once, here, by `rrr.grpo.spans_to_mask`; the loss, the
token counts (global normalisers) and the metrics all reuse that one tensor.

Sharding keeps `policy_loss`'s global normalisers on every micro-batch, so the per-micro-batch
losses of every rank SUM to the full-batch loss (and their gradients to its gradient): learners
all-reduce gradients with SUM, not mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from rrr.grpo import group_advantages, mask_stats, spans_to_mask


@dataclass
class TrainBatch:
    """Right-padded sequences of one optimizer step (or a shard / micro-batch of one)."""

    tokens: torch.Tensor  # [B, T] int64, right-padded with pad_id
    attention_mask: torch.Tensor  # [B, T] bool, True on real tokens
    mask: torch.Tensor  # [B, T-1] bool, reflection tokens aligned to token_logprobs columns
    old_logprobs: torch.Tensor  # [B, T-1] float32: sampler log-probs at mask columns, else 0
    advantages: torch.Tensor  # [B] float32
    global_num_seqs: int  # normalisers of the FULL step batch (see rrr.grpo.policy_loss)
    global_num_tokens: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens: what a forward pass pays for."""
        return int(self.attention_mask.sum().item())

    def select(self, index: Sequence[int]) -> TrainBatch:
        """Rows `index`, trimmed to their own longest sequence (less padding to compute)."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        attn = self.attention_mask[idx]
        length = int(attn.sum(dim=1).max().item()) if len(idx) else 1
        length = max(length, 2)  # a row needs >= 2 tokens to have one log-prob column
        return replace(
            self,
            tokens=self.tokens[idx, :length],
            attention_mask=attn[:, :length],
            mask=self.mask[idx, : length - 1],
            old_logprobs=self.old_logprobs[idx, : length - 1],
            advantages=self.advantages[idx],
            metrics={},
        )


def build_train_batch(
    tokens: Sequence[Sequence[int]],
    spans: Sequence[tuple[int, int]],
    logprobs: Sequence[Sequence[float]],
    rewards: Sequence[float],
    group_size: int,
    *,
    scale_rewards: bool = True,
    drop_zero_std_groups: bool = False,
    pad_id: int = 0,
) -> TrainBatch:
    """Build the step batch from failure-major episodes (G consecutive per failure).

    An episode with no tokens (its context overflowed before the rewarded reflection) keeps its
    reward (0) inside its group's advantage statistics, because it is one of the G draws, but has
    nothing to train and leaves the batch. So do the groups dropped by drop_zero_std_groups.
    """
    n = len(tokens)
    if not (len(spans) == len(logprobs) == len(rewards) == n):
        raise ValueError("tokens, spans, logprobs and rewards must have the same length")
    adv = group_advantages(
        torch.tensor(list(rewards), dtype=torch.float32),
        group_size,
        scale_by_std=scale_rewards,
        drop_zero_std=drop_zero_std_groups,
    )
    keep = [i for i in range(n) if adv.keep[i] and len(tokens[i]) >= 2]
    seq_len = max((len(tokens[i]) for i in keep), default=2)
    tok = torch.full((len(keep), seq_len), pad_id, dtype=torch.long)
    attn = torch.zeros((len(keep), seq_len), dtype=torch.bool)
    row_spans: list[list[tuple[int, int]]] = []
    for row, i in enumerate(keep):
        seq = tokens[i]
        tok[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attn[row, : len(seq)] = True
        start, end = spans[i]
        if len(logprobs[i]) != end - start:
            raise ValueError(
                f"episode {i}: {len(logprobs[i])} sampler log-probs for span ({start}, {end})"
            )
        row_spans.append([(start, end)] if end > start else [])
    mask = spans_to_mask(row_spans, seq_len)  # the one derivation of the training mask
    old = torch.zeros(mask.shape, dtype=torch.float32)
    for row, i in enumerate(keep):
        start, end = spans[i]
        if end > start:  # column j predicts token j+1, so span [s, e) sits at columns [s-1, e-1)
            old[row, start - 1 : end - 1] = torch.as_tensor(list(logprobs[i]), dtype=torch.float32)
    stats = mask_stats(mask)
    lengths = [end - start for start, end in spans]
    metrics = {
        "reward_mean": adv.reward_mean,
        "reward_std": adv.reward_std,
        "frac_zero_std": adv.frac_zero_std,
        "episodes": float(n),
        "train_seqs": float(len(keep)),
        "dropped_seqs": float(n - len(keep)),
        "reflection_tokens": float(stats["num_tokens"]),
        "reflection_tokens_mean": sum(lengths) / max(n, 1),
        "seq_tokens": float(attn.sum().item()),
    }
    return TrainBatch(
        tokens=tok,
        attention_mask=attn,
        mask=mask,
        old_logprobs=old,
        advantages=adv.advantages[keep] if keep else torch.zeros(0),
        global_num_seqs=stats["num_seqs"],
        global_num_tokens=stats["num_tokens"],
        metrics=metrics,
    )


def batch_from_episodes(
    episode_batch,
    *,
    scale_rewards: bool = True,
    drop_zero_std_groups: bool = False,
    pad_id: int = 0,
) -> TrainBatch:
    """`build_train_batch` for an `rrr.episodes.EpisodeBatch` (or anything with .episodes and
    .group_size whose episodes have tokens, span, logprobs and reward)."""
    eps = episode_batch.episodes
    return build_train_batch(
        [e.tokens for e in eps],
        [tuple(e.span) for e in eps],
        [e.logprobs for e in eps],
        [e.reward for e in eps],
        episode_batch.group_size,
        scale_rewards=scale_rewards,
        drop_zero_std_groups=drop_zero_std_groups,
        pad_id=pad_id,
    )


def shard_batch(
    batch: TrainBatch, world_size: int, micro_batch_size: int
) -> list[list[TrainBatch]]:
    """Split a step batch into `world_size` lists of micro-batches of <= micro_batch_size rows.

    Every rank gets the SAME number of micro-batches (ZeRO reduces gradients inside each
    backward, a collective, so the ranks must run equally many); a rank short of rows gets empty
    micro-batches, which run a zero-weight pass. Rows are balanced by real-token count (longest
    first, to the least loaded rank) and micro-batches take neighbours in length order, which
    keeps padding small. Order never matters: the loss is a sum with global normalisers.
    """
    if world_size < 1 or micro_batch_size < 1:
        raise ValueError("world_size and micro_batch_size must be >= 1")
    lengths = batch.attention_mask.sum(dim=1).tolist()
    order = sorted(range(batch.size), key=lambda i: (-lengths[i], i))
    cap = math.ceil(batch.size / world_size) if batch.size else 0
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for i in order:
        r = min((r for r in range(world_size) if len(ranks[r]) < cap), key=lambda r: (load[r], r))
        ranks[r].append(i)
        load[r] += lengths[i]
    n_micro = max(1, math.ceil(cap / micro_batch_size)) if cap else 1
    out = []
    for rows in ranks:
        micro = [rows[k : k + micro_batch_size] for k in range(0, len(rows), micro_batch_size)]
        micro += [[]] * (n_micro - len(micro))
        out.append([batch.select(m) for m in micro])
    return out
