"""Episodes -> one step's training batch: padded tokens, the reflection mask, the sampler's
log-probs and the group advantages over each group's valid members. Pure torch, no model, no Ray
(the core: the driver builds it, the learner ranks consume it, `rrr calibrate` counts with it).

The reflection mask is derived exactly once, here, by `rrr.core.grpo.spans_to_mask`; the loss, the
token counts (global normalisers) and the metrics all reuse that one tensor. Sharding it over
ranks and micro-batches is the learner's (learner/packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from rrr.core.grpo import (
    GroupAdvantages,
    group_advantages,
    mask_stats,
    shuffled_within_groups,
    spans_to_mask,
)


@dataclass
class TrainBatch:
    """Right-padded sequences of one optimizer step (or a shard / micro-batch of one)."""

    tokens: torch.Tensor  # [B, T] int64, right-padded with pad_id
    attention_mask: torch.Tensor  # [B, T] bool, True on real tokens
    mask: torch.Tensor  # [B, T-1] bool, reflection tokens aligned to token_logprobs columns
    old_logprobs: torch.Tensor  # [B, T-1] float32: sampler log-probs at mask columns, else 0
    advantages: torch.Tensor  # [B] float32
    # [B] int64: the failure each row is one of the G reflections of (rows of one group share
    # their context: learner/layout.py forwards it once)
    group_ids: torch.Tensor
    global_num_seqs: int  # normalisers of the FULL step batch (see rrr.core.grpo.policy_loss)
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
            group_ids=self.group_ids[idx],
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
    valid: Sequence[bool] | None = None,
) -> TrainBatch:
    """Build the step batch from failure-major episodes (G consecutive per failure).

    `valid[i]` False marks an episode whose reward is unknown (rrr.core.episodes `drop_reason`: a
    verifier error, a context overflow): it leaves the batch and its group's statistics, see
    `valid_group_advantages`. A valid episode with no tokens keeps its reward inside its group's
    statistics but has nothing to train and leaves the batch. So do the groups dropped by
    drop_zero_std_groups.
    """
    n = len(tokens)
    if not (len(spans) == len(logprobs) == len(rewards) == n):
        raise ValueError("tokens, spans, logprobs and rewards must have the same length")
    if valid is not None and len(valid) != n:
        raise ValueError(f"valid has {len(valid)} entries for {n} episodes")
    reward_t = torch.tensor(list(rewards), dtype=torch.float32)
    if valid is None or all(valid):
        adv = group_advantages(
            reward_t, group_size, scale_by_std=scale_rewards, drop_zero_std=drop_zero_std_groups
        )
        short_groups = 0
    else:
        adv, short_groups = valid_group_advantages(
            reward_t,
            torch.as_tensor(list(valid), dtype=torch.bool),
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
    # The batch's own figures only: the reward mean, episode count and reflection lengths are
    # the rollout's (episode_metrics, over the same kept episodes), the token counts the
    # learner's; each is computed once (issue 21).
    metrics = {
        "reward_std": adv.reward_std,
        "frac_zero_std": adv.frac_zero_std,
        "train_seqs": float(len(keep)),
        "dropped_seqs": float(n - len(keep)),
        "groups_under_2": float(short_groups),
    }
    return TrainBatch(
        tokens=tok,
        attention_mask=attn,
        mask=mask,
        old_logprobs=old,
        advantages=adv.advantages[keep] if keep else torch.zeros(0),
        group_ids=torch.tensor([i // group_size for i in keep], dtype=torch.long),
        global_num_seqs=stats["num_seqs"],
        global_num_tokens=stats["num_tokens"],
        metrics=metrics,
    )


def valid_group_advantages(
    rewards: torch.Tensor,
    valid: torch.Tensor,
    group_size: int,
    *,
    scale_by_std: bool = True,
    drop_zero_std: bool = False,
) -> tuple[GroupAdvantages, int]:
    """`group_advantages` over the valid members of each group only; invalid ones get
    advantage 0 and keep=False. Also returns how many groups had fewer than 2 valid members
    (only when some were invalid: G = 1 is a choice, not a loss).

    A group reduced to k >= 2 valid members is normalised over those k (its mean and std are
    the k rewards'). A group reduced to fewer than 2 has no relative signal: it is treated as a
    zero-std group (advantage 0, counted in frac_zero_std, left out when drop_zero_std), so its
    one remaining member, like any zero-std group's, only carries the KL term. Counting it in
    frac_zero_std keeps that metric "share of groups that teach nothing". reward_mean and
    reward_std are over the valid rewards.
    """
    if rewards.shape != valid.shape or rewards.numel() % group_size:
        raise ValueError("rewards and valid must be [N] with N a multiple of group_size")
    n_groups = rewards.numel() // group_size
    adv = torch.zeros_like(rewards, dtype=torch.float32)
    keep = torch.zeros(rewards.shape, dtype=torch.bool)
    zero_std = 0.0
    short = 0
    for g in range(n_groups):
        idx = torch.nonzero(valid[g * group_size : (g + 1) * group_size]).flatten()
        idx = idx + g * group_size
        if len(idx) < group_size and len(idx) < 2:
            short += 1
        if len(idx) == 0:
            zero_std += 1
            continue
        sub = group_advantages(
            rewards[idx], len(idx), scale_by_std=scale_by_std, drop_zero_std=drop_zero_std
        )
        adv[idx], keep[idx] = sub.advantages, sub.keep
        zero_std += sub.frac_zero_std  # 0 or 1: a single group
    kept_rewards = rewards[valid].float()
    return (
        GroupAdvantages(
            advantages=adv,
            keep=keep,
            frac_zero_std=zero_std / max(n_groups, 1),
            reward_mean=kept_rewards.mean().item() if kept_rewards.numel() else 0.0,
            reward_std=kept_rewards.std(correction=0).item() if kept_rewards.numel() else 0.0,
        ),
        short,
    )


def batch_from_episodes(
    episode_batch,
    *,
    scale_rewards: bool = True,
    drop_zero_std_groups: bool = False,
    pad_id: int = 0,
    shuffle_seed: int | None = None,
) -> TrainBatch:
    """`build_train_batch` for an `rrr.core.episodes.EpisodeBatch` (or anything with .episodes and
    .group_size whose episodes have tokens, span, logprobs and reward). Episodes whose
    `drop_reason` is set (their reward is unknown) leave the batch and their group's statistics.
    `shuffle_seed`: the control run's rewards, permuted within groups (learner.shuffle_rewards).
    """
    eps = episode_batch.episodes
    valid = [getattr(e, "drop_reason", None) is None for e in eps]
    rewards = [e.reward for e in eps]
    if shuffle_seed is not None:
        rewards = shuffled_within_groups(rewards, episode_batch.group_size, shuffle_seed, valid)
    return build_train_batch(
        [e.tokens for e in eps],
        [tuple(e.span) for e in eps],
        [e.logprobs for e in eps],
        rewards,
        episode_batch.group_size,
        scale_rewards=scale_rewards,
        drop_zero_std_groups=drop_zero_std_groups,
        pad_id=pad_id,
        valid=valid,
    )
