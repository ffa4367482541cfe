"""GRPO maths for Reflect, Retry, Reward: advantages, reflection masks, the clipped loss.

Pure torch, no Ray, no model code. The paper (§3, §4.4) trains with GRPO (DeepSeekMath,
Shao et al. 2024) through TRL, with one twist: only the *self-reflection* tokens are trained
("setting the advantage terms for all other generated tokens to zero"). Here that is done with a
token mask derived from the reflection spans an episode records; the reward is 1 if the retry
after the reflection succeeds, else 0; the KL coefficient is 0.001 (§4.4).

Data flow in the learner:

    adv = group_advantages(rewards, G)                       # [N], one per reflection
    mask = spans_to_mask(spans, T)                           # [N, T-1], aligned to targets
    lp = gathered_logprobs(logits, index, targets, temperature)  # [N, T-1], learner/logprobs.py
    loss, metrics = policy_loss(lp, old_lp, ref_lp, adv.advantages, mask)

Mask convention (the ONLY place it is derived is `spans_to_mask`): a span [start, end) indexes
the *token sequence*. Token t is predicted by the logits at position t-1, so the log-probs
of the next tokens have column j = log p(tokens[j+1] | tokens[:j+1]) and the aligned mask has
mask[b, j] = True  <=>  token j+1 lies in a span of episode b.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GroupAdvantages:
    advantages: torch.Tensor  # [N] float32, one per sample (broadcast over its tokens later)
    keep: torch.Tensor  # [N] bool; False only for zero-std groups when drop_zero_std=True
    frac_zero_std: float  # share of groups whose rewards are all equal (no learning signal)
    reward_mean: float
    reward_std: float  # population std (correction=0) over all N rewards, for logging only


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    drop_zero_std: bool = False,
) -> GroupAdvantages:
    """Group-relative advantages (DeepSeekMath §4.1.2, "outcome supervision").

    `rewards` is 1-D, consecutive blocks of `group_size` are the G reflections of one failure.
    A = (r - mean_g) / (std_g + eps), or r - mean_g when scale_by_std=False (Dr. GRPO, Liu et
    al. 2025, which argues the std division over-weights too-easy/too-hard groups).

    std_g is the *unbiased* (Bessel, correction=1) group std: that is torch.std's default and
    what TRL's GRPOTrainer uses, and the paper trained with TRL (§4.4). A group whose rewards
    are all equal (all retries failed, or all succeeded) gets advantage exactly 0 — forced, so
    no floating-point residue of r - mean leaks through — and is counted in frac_zero_std.
    With group_size=1 every group is trivially all-equal.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n = rewards.numel()
    if n == 0 or n % group_size != 0:
        raise ValueError(
            f"rewards length {n} must be a positive multiple of group_size {group_size}"
        )
    r = rewards.detach().to(torch.float32)
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf")

    grouped = r.view(-1, group_size)  # [n_groups, G]
    mean = grouped.mean(dim=1, keepdim=True)
    all_equal = grouped.amax(dim=1) == grouped.amin(dim=1)  # [n_groups]
    adv = grouped - mean
    if scale_by_std and group_size > 1:
        std = grouped.std(dim=1, keepdim=True)  # unbiased, see docstring
        adv = adv / (std + eps)
    adv = torch.where(all_equal[:, None], torch.zeros_like(adv), adv)

    if drop_zero_std:
        keep = (~all_equal)[:, None].expand_as(grouped).reshape(-1)
    else:
        keep = torch.ones(n, dtype=torch.bool, device=r.device)
    return GroupAdvantages(
        advantages=adv.reshape(-1),
        keep=keep,
        frac_zero_std=all_equal.float().mean().item(),
        reward_mean=r.mean().item(),
        reward_std=r.std(correction=0).item(),
    )


def shuffled_within_groups(
    rewards: Sequence[float], group_size: int, seed: int, valid: Sequence[bool] | None = None
) -> list[float]:
    """The control of a learnability run (learner.shuffle_rewards): each group's rewards,
    permuted among its valid episodes (seeded), so every group keeps its mean and spread but its
    advantages no longer say which reflection worked. Learning that survives this is drift that
    any optimizer step causes, not credit assignment (issue 23)."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not form groups of {group_size}")
    ok = [True] * len(rewards) if valid is None else list(valid)
    rng = random.Random(seed)
    out = list(rewards)
    for g in range(0, len(out), group_size):
        idx = [i for i in range(g, g + group_size) if ok[i]]
        values = [out[i] for i in idx]
        rng.shuffle(values)
        for i, v in zip(idx, values):
            out[i] = v
    return out


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------


def spans_to_mask(
    spans: list[list[tuple[int, int]]],
    seq_len: int,
    *,
    shift: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool mask of the trained (reflection) tokens, one row per episode.

    spans[b] lists half-open [start, end) ranges of token indices into episode b's token
    sequence (padded to seq_len); overlapping spans are unioned.

    shift=True (default, what the loss wants): shape [B, seq_len-1], aligned with
    the next-token log-probs, i.e. with targets tokens[:, 1:]:
        mask[b, j] = True  <=>  token j+1 is in a span of b.
    A span may then not start at token 0: nothing predicts the first token.
    shift=False: shape [B, seq_len], mask[b, t] = True <=> token t is in a span (for display).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    lo = 1 if shift else 0
    mask = torch.zeros(len(spans), seq_len, dtype=torch.bool)
    for b, row in enumerate(spans):
        for start, end in row:
            if not (lo <= start < end <= seq_len):
                why = " (shift=True: token 0 has no log-prob)" if shift else ""
                raise ValueError(
                    f"bad span ({start}, {end}) in episode {b}: need {lo} <= start < end <= "
                    f"seq_len={seq_len}{why}"
                )
            mask[b, start:end] = True
    return (mask[:, 1:] if shift else mask).to(device)


def mask_stats(mask: torch.Tensor) -> dict[str, float]:
    """Counts for logging and for the global normalisers of `policy_loss`.

    num_seqs counts rows with at least one masked token (the sequence-mean denominator);
    num_tokens is the total number of masked tokens (the token-mean denominator).
    """
    per_seq = mask.bool().sum(dim=-1)
    num_seqs = int((per_seq > 0).sum().item())
    num_tokens = int(per_seq.sum().item())
    return {
        "num_rows": int(per_seq.numel()),
        "num_seqs": num_seqs,
        "num_tokens": num_tokens,
        "tokens_per_seq_mean": num_tokens / max(num_seqs, 1),
        "tokens_per_seq_max": int(per_seq.max().item()) if per_seq.numel() else 0,
    }


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over mask (0 where the mask is empty, never NaN; garbage outside is ignored)."""
    m = mask.bool()
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / m.sum().clamp(min=1)
    return total.sum(dim=dim) / m.sum(dim=dim).clamp(min=1)


# ----------------------------------------------------------------------------------------------
# Log-probs from logits
# ----------------------------------------------------------------------------------------------


def gathered_logprobs(
    logits: torch.Tensor,
    index: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log softmax(logits[b, index[b, p]] / temperature)[targets[b, p]], as [B, P] float32.

    THE log-prob kernel of rrr: the learner's forward passes (both batch layouts,
    learner/layout.py) go through it. logits [B, K, V] are the outputs at K positions
    of each row; index [B, P] picks one of them per target, so one position may serve several
    targets (the last context token of a shared-prefix row predicts the first token of each of
    its G reflections) and a target list may be shorter than K (pad picks with any valid index,
    and ignore them).

    `temperature` divides the logits first: the sampler drew the tokens from softmax(z / T), so
    that is the distribution whose log-probs the PPO ratio compares (issue 15; vLLM's
    "processed_logprobs" apply the same division).

    Row by row in float32 so that at most one [K, V] float32 copy exists at a time (the full
    [B, K, V] log-softmax in float32 is what blows memory with 150k vocabularies); the
    normaliser of each position is computed once, however many targets share it.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to score sampled tokens, got {temperature}")
    if index.shape != targets.shape or index.shape[0] != logits.shape[0]:
        raise ValueError(
            f"index {tuple(index.shape)} and targets {tuple(targets.shape)} must be [B, P] "
            f"with B = {logits.shape[0]}"
        )
    out = []
    for row_logits, row_index, row_targets in zip(logits, index, targets):
        row = row_logits.float()
        if temperature != 1.0:
            row = row / temperature
        normaliser = torch.logsumexp(row, dim=-1)  # [K]
        out.append(row[row_index, row_targets] - normaliser[row_index])
    if not out:
        return torch.zeros(index.shape, dtype=torch.float32, device=logits.device)
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


class _Norm(NamedTuple):
    """Denominators of the aggregations: this batch's own counts, or the full batch's so that
    micro-batch losses SUM to the full-batch loss under gradient accumulation."""

    num_seqs: float  # sequences with >= 1 masked token (empty rows never enter a mean)
    num_tokens: float
    max_tokens_norm: int | None


# Each aggregator maps per-token losses [B, T] (already exactly 0 outside the mask) to a scalar.
def _seq_mean_token_mean(tok: torch.Tensor, mask_f: torch.Tensor, n: _Norm) -> torch.Tensor:
    # GRPO, DeepSeekMath eq. 3 and TRL when the paper was written: 1/G sum_i 1/|o_i| sum_t.
    per_seq = tok.sum(dim=-1) / mask_f.sum(dim=-1).clamp(min=1)  # empty rows: 0/1 = 0
    return per_seq.sum() / n.num_seqs


def _token_mean(tok: torch.Tensor, mask_f: torch.Tensor, n: _Norm) -> torch.Tensor:
    # DAPO (Yu et al. 2025) token-level loss: long sequences are not down-weighted.
    return tok.sum() / n.num_tokens


def _seq_mean_token_sum_norm(tok: torch.Tensor, mask_f: torch.Tensor, n: _Norm) -> torch.Tensor:
    # Dr. GRPO (Liu et al. 2025): a constant per-sequence normaliser removes the length bias.
    if n.max_tokens_norm is None:
        raise ValueError("loss_agg='seq_mean_token_sum_norm' requires max_tokens_norm")
    return (tok.sum(dim=-1) / n.max_tokens_norm).sum() / n.num_seqs


LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, _Norm], torch.Tensor]] = {
    "seq_mean_token_mean": _seq_mean_token_mean,
    "token_mean": _token_mean,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    kl_coef: float = 0.001,
    loss_agg: str = "seq_mean_token_mean",
    max_tokens_norm: int | None = None,
    global_num_seqs: int | None = None,
    global_num_tokens: int | None = None,
    behaviour_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO surrogate + k3 KL on the masked (reflection) tokens.

    Off-policy correction (issue 22; learner.tis_cap): with `tis_cap`, `old_logprobs` is the
    proximal policy (decoupled PPO, Hilton et al. 2021: the clip is around the policy the step
    starts from, None = the current one, detached) and each token's policy term is weighted by
    min(exp(old - behaviour), tis_cap), the truncated importance weight of the proximal policy
    over the behaviour policy that sampled it (vLLM's log-probs; truncated IS as in Yao et al.
    2025, "Your efficient RL framework secretly brings you off-policy RL training"). The weight
    is detached: it rescales the token's gradient, it is not differentiated.

    Shapes: logprobs/old_logprobs/ref_logprobs/mask [B, T] (T = seq_len-1, see spans_to_mask),
    advantages [B]. old_logprobs=None means a single policy step per batch (old = current,
    detached); ref_logprobs=None is allowed only with kl_coef == 0.

    Per token:  -min(r A, clip(r, 1-eps, 1+eps_high) A) + kl_coef * k3,   r = exp(lp - old),
    k3 = exp(ref - lp) - (ref - lp) - 1 (Schulman's unbiased, non-negative KL estimator, used in
    DeepSeekMath eq. 4 and TRL). eps_high != eps is DAPO's clip-higher.

    Gradient accumulation: pass global_num_seqs / global_num_tokens (mask_stats(full_mask)
    ["num_seqs"] / ["num_tokens"]) to every micro-batch; then the micro-batch losses summed equal
    the full-batch loss, and so do their gradients. Without them, the local counts are used.

    Tokens outside the mask get gradient exactly 0, even if their log-probs are NaN/inf: inputs
    are replaced by constants there with torch.where (multiplying by the mask would give NaN*0).

    Metrics are python floats. "loss"/"policy_loss" are this batch's share (additive over
    micro-batches with global normalisers); kl, clip_frac and ratio_mean are masked means
    over this batch's tokens and "num_tokens" is there to weight them.
    """
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; options: {sorted(LOSS_AGGREGATIONS)}")
    if ref_logprobs is None and kl_coef != 0:
        raise ValueError("ref_logprobs is required when kl_coef != 0")
    if advantages.dim() != 1 or advantages.shape[0] != logprobs.shape[0]:
        raise ValueError(
            f"advantages must be [B]={logprobs.shape[0]}, got {tuple(advantages.shape)}"
        )
    if mask.shape != logprobs.shape:
        raise ValueError(f"mask {tuple(mask.shape)} != logprobs {tuple(logprobs.shape)}")
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high

    m = mask.bool()
    mask_f = m.to(logprobs.dtype)
    zero = torch.zeros_like(logprobs)
    # Sanitise everything outside the mask *before* any arithmetic: there ratio = 1, k3 = 0.
    lp = torch.where(m, logprobs, zero)
    old = lp.detach() if old_logprobs is None else torch.where(m, old_logprobs.detach(), zero)
    adv = advantages.detach().to(logprobs.dtype)[:, None]

    ratio = torch.exp(lp - old)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    pg_tok = -torch.minimum(ratio * adv, clipped * adv)
    tis = None
    if tis_cap is not None:
        if behaviour_logprobs is None:
            raise ValueError("tis_cap needs behaviour_logprobs (the sampler's log-probs)")
        behaviour = torch.where(m, behaviour_logprobs.detach(), zero)
        raw = torch.exp(old.detach() - behaviour)
        tis = torch.clamp(raw, max=tis_cap)
        pg_tok = pg_tok * tis
    if ref_logprobs is None:
        kl_tok = zero
    else:
        ref = torch.where(m, ref_logprobs.detach(), zero)
        kl_tok = torch.exp(ref - lp) - (ref - lp) - 1.0
    tok = torch.where(m, pg_tok + kl_coef * kl_tok, zero)

    stats = mask_stats(m)
    num_seqs = stats["num_seqs"] if global_num_seqs is None else global_num_seqs
    num_tokens = stats["num_tokens"] if global_num_tokens is None else global_num_tokens
    # max(., 1): an all-empty batch gives loss 0, not 0/0.
    norm = _Norm(max(float(num_seqs), 1.0), max(float(num_tokens), 1.0), max_tokens_norm)
    agg = LOSS_AGGREGATIONS[loss_agg]
    loss = agg(tok, mask_f, norm)

    with torch.no_grad():
        pg_only = agg(torch.where(m, pg_tok, zero), mask_f, norm)
        # Clipping is "active" where min() picks the clipped term, i.e. the token's gradient is 0.
        low = (ratio < 1.0 - clip_eps) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        clip_active = low | high
        metrics = {
            "loss": loss.item(),
            "policy_loss": pg_only.item(),
            "kl": masked_mean(kl_tok, m).item(),
            "clip_frac": masked_mean(clip_active.float(), m).item(),
            "ratio_mean": masked_mean(ratio, m).item(),
            "adv_mean": advantages.float().mean().item(),
            "num_tokens": float(stats["num_tokens"]),
        }
        if tis is not None:
            metrics["tis_weight_mean"] = masked_mean(tis, m).item()
            metrics["tis_weight_max"] = torch.where(m, raw, zero).max().item()
            metrics["tis_clip_frac"] = masked_mean((raw > tis_cap).float(), m).item()
    return loss, metrics
