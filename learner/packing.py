"""A step's batch into per-rank micro-batches: whole groups under a token budget for the
shared-prefix layout (`shard_groups`), rows of micro_batch_size for the unshared one
(`shard_batch`). Pure, no model.

Sharding keeps `policy_loss`'s global normalisers on every micro-batch, so the per-micro-batch
losses of every rank SUM to the full-batch loss (and their gradients to its gradient): learners
all-reduce gradients with SUM, not mean.

A group (the G reflections of one failure) costs the length of its shared-prefix row
(learner/layout.py). A micro-batch of k groups is forwarded as k rows padded to the longest, so
it costs k x its longest row; groups are packed longest first, each into the current
micro-batch while that stays within the budget, so neighbours in length share a micro-batch and
padding stays small. A group longer than the budget goes alone: groups are never split, since
splitting one would forward its context twice.
"""

from __future__ import annotations

import math

from rrr.core.train_batch import TrainBatch
from rrr.learner.layout import shared_row_lengths


def pack_groups(lengths: dict[int, int], budget: int) -> list[list[int]]:
    """Group ids into bins whose padded cost (count x longest) is <= budget, longest first."""
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    bins: list[list[int]] = []
    longest = 0
    for g in sorted(lengths, key=lambda g: (-lengths[g], g)):
        if bins and (len(bins[-1]) + 1) * longest <= budget:
            bins[-1].append(g)  # sorted: the bin's longest row is still its first
            continue
        bins.append([g])
        longest = lengths[g]
    return bins


def shard_groups(batch: TrainBatch, world_size: int, budget: int) -> list[list[TrainBatch]]:
    """Split a step batch into `world_size` lists of micro-batches of whole groups.

    Groups go longest first to the least loaded rank (by shared-row tokens). As in
    `shard_batch`, every rank gets the SAME number of micro-batches (ZeRO's backward is a
    collective); a short rank gets empty ones, which run a zero-weight pass. Order never
    matters: the loss is a sum with global normalisers.
    """
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    rows_of: dict[int, list[int]] = {}
    for row, g in enumerate(batch.group_ids.tolist()):
        rows_of.setdefault(int(g), []).append(row)
    # A group with no trained token forwards nothing (cost 0) but still travels, for the counts.
    lengths = {g: 0 for g in rows_of} | shared_row_lengths(batch)
    ranks: list[dict[int, int]] = [{} for _ in range(world_size)]
    load = [0] * world_size
    for g in sorted(lengths, key=lambda g: (-lengths[g], g)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        ranks[r][g] = lengths[g]
        load[r] += lengths[g]
    bins = [pack_groups(owned, budget) for owned in ranks]
    n_micro = max(1, *(len(b) for b in bins))
    out = []
    for rank_bins in bins:
        micro = [[b for g in groups for b in rows_of[g]] for groups in rank_bins]
        micro += [[]] * (n_micro - len(micro))
        out.append([batch.select(m) for m in micro])
    return out


def default_budget(batch: TrainBatch, micro_batch_size: int) -> int:
    """micro_batch_size x the longest episode: the tokens of an unshared micro-batch, so the
    shared layout's activations fit where the unshared ones did."""
    longest = int(batch.attention_mask.sum(dim=1).max().item()) if batch.size else 1
    return micro_batch_size * max(longest, 1)


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
