"""What the learner forwards for a micro-batch, and where each trained log-prob lands.

Pure torch, no model. A `ForwardLayout` says which token rows go through the model (with which
attention mask and position ids), which output positions go through the LM head, and which
(position, target) pairs give the log-prob of each trained token of the source `TrainBatch`,
at column j of its [B, T-1] log-prob grid (column j = log p(token j+1 | tokens <= j), the
convention of rrr.core.grpo.spans_to_mask).

  unshared_layout   one row per episode, right-padded, plain causal attention
  shared_layout     one row per group: the context of a failure once, then its reflections
                    (issue 14; the idea of "Prefix Grouper", 2025)

Shared-prefix rows. The G episodes of one failure are [context | reflection_g] with the same
context (system prompt, query, failed attempt, reflection prompt: rrr/core/episodes.py), and only
the
reflection tokens are trained. A shared row is

    [pads | context | segment_1 | ... | segment_G | pads]

where segment_g is what episode g needs as input beyond the context: its tokens from the end
of the context up to the last one whose output predicts a trained token (so the reflection
minus its last token; retry tokens or anything else after it are never forwarded). The block
attention mask lets the context attend causally to itself and each segment to the whole
context and causally to itself, never to a sibling; position ids restart after the context for
each segment; pads attend only to themselves. Every trained token then sees exactly the tokens
and positions it sees in its own episode, so its log-prob is the unshared one (up to float
summation order), and so is the gradient of any loss of those log-probs. The context is the
longest common prefix of the group's rows before their first trained token, computed, not
assumed: a group whose contexts differ (episode.rewarded_reflection > 0 puts earlier rounds in
them) shares what it can, and correctness never depends on how rows were grouped.

The last context position predicts the first token of every reflection: one position, G
targets, which `pick_index` expresses (rrr.core.grpo.gathered_logprobs computes its normaliser
once).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rrr.core.train_batch import TrainBatch

CONTEXT_SEGMENT = 0  # segment id of a shared row's context; segments count from 1
PAD_SEGMENT = -1


@dataclass(frozen=True)
class ForwardLayout:
    input_ids: torch.Tensor  # [R, L] int64
    # [R, L] int64 or None (positions 0..L-1, the model's default)
    position_ids: torch.Tensor | None
    # [R, L] int64 or None (plain causal attention): 0 = shared context, s > 0 = the s-th
    # segment of the row, -1 = padding (see block_attention_mask)
    segment_ids: torch.Tensor | None
    keep: torch.Tensor  # [K] int64: positions whose outputs go through the LM head
    pick_index: torch.Tensor  # [R, P] int64 into `keep`: the position predicting each target
    pick_target: torch.Tensor  # [R, P] int64: the predicted token
    pick_valid: torch.Tensor  # [R, P] bool: False on padding picks
    dest_row: torch.Tensor  # [R, P] int64: row of the source batch ...
    dest_col: torch.Tensor  # [R, P] int64: ... and its log-prob column
    out_shape: tuple[int, int]  # [B, T-1] of the source batch
    forward_tokens: int  # real (non-pad) tokens forwarded: what the layout costs

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])


def _picks(
    per_row: list[tuple[list[int], list[int], list[int], list[int]]], keep: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Stack per-row pick lists (positions, targets, dest rows, dest cols) into padded tensors;
    positions are mapped to their index in `keep` (sorted)."""
    width = max((len(p[0]) for p in per_row), default=0)
    shape = (len(per_row), width)
    index = torch.zeros(shape, dtype=torch.long)
    target = torch.zeros(shape, dtype=torch.long)
    valid = torch.zeros(shape, dtype=torch.bool)
    rows = torch.zeros(shape, dtype=torch.long)
    cols = torch.zeros(shape, dtype=torch.long)
    for r, (positions, targets, dest_rows, dest_cols) in enumerate(per_row):
        n = len(positions)
        index[r, :n] = torch.searchsorted(keep, torch.tensor(positions, dtype=torch.long))
        target[r, :n] = torch.tensor(targets, dtype=torch.long)
        valid[r, :n] = True
        rows[r, :n] = torch.tensor(dest_rows, dtype=torch.long)
        cols[r, :n] = torch.tensor(dest_cols, dtype=torch.long)
    return {
        "pick_index": index,
        "pick_target": target,
        "pick_valid": valid,
        "dest_row": rows,
        "dest_col": cols,
    }


def unshared_layout(batch: TrainBatch) -> ForwardLayout:
    """Each episode is its own row, cut after its last trained token's predictor (the tokens
    after it cannot change a trained log-prob under causal attention; retry tokens, when an
    episode carries them, are never forwarded). Rows without a trained token are left out.
    Right padding needs no attention mask: a real token never attends to a later pad."""
    mask = batch.mask
    out_shape = (int(mask.shape[0]), int(mask.shape[1]))
    rows = [b for b in range(mask.shape[0]) if bool(mask[b].any())]
    if not rows:
        return _empty_layout(out_shape)
    cols = [mask[b].nonzero().squeeze(1).tolist() for b in rows]
    length = max(c[-1] for c in cols) + 1  # hidden state j predicts token j+1
    input_ids = batch.tokens[rows, :length]
    keep = mask[rows].any(dim=0).nonzero().squeeze(1)
    per_row = [
        (c, batch.tokens[b, [j + 1 for j in c]].tolist(), [b] * len(c), c)
        for b, c in zip(rows, cols)
    ]
    real = batch.attention_mask[rows, :length].sum().item()
    return ForwardLayout(
        input_ids=input_ids,
        position_ids=None,
        segment_ids=None,
        keep=keep,
        out_shape=out_shape,
        forward_tokens=int(real),
        **_picks(per_row, keep),
    )


@dataclass(frozen=True)
class _GroupPlan:
    """How one group's rows share a row: its rows (source indices), the shared context length
    and each row's trained columns."""

    rows: list[int]
    context: int
    cols: list[list[int]]  # per row: its trained log-prob columns j (predicting token j+1)

    @property
    def segment_lengths(self) -> list[int]:
        # Inputs up to the last trained column's position (hidden j predicts token j+1).
        return [c[-1] + 1 - self.context for c in self.cols]

    @property
    def length(self) -> int:
        return self.context + sum(self.segment_lengths)


def _group_plans(batch: TrainBatch) -> list[_GroupPlan]:
    """Groups in order of first appearance; rows without a trained token are left out."""
    members: dict[int, list[int]] = {}
    for b, g in enumerate(batch.group_ids.tolist()):
        if bool(batch.mask[b].any()):
            members.setdefault(int(g), []).append(b)
    plans = []
    for rows in members.values():
        cols = [batch.mask[b].nonzero().squeeze(1).tolist() for b in rows]
        # The context ends at or before every row's first trained token (index cols[0] + 1).
        limit = min(c[0] + 1 for c in cols)
        plans.append(_GroupPlan(rows, common_prefix_len(batch.tokens[rows, :limit]), cols))
    return plans


def common_prefix_len(rows: torch.Tensor) -> int:
    """Length of the longest prefix that every row of `rows` [N, L] shares."""
    same = (rows == rows[:1]).all(dim=0)
    differ = (~same).nonzero()
    return int(differ[0, 0]) if differ.numel() else int(rows.shape[1])


def shared_row_lengths(batch: TrainBatch) -> dict[int, int]:
    """group id -> length of its shared-prefix row (what packing budgets:
    learner/packing.py)."""
    return {int(batch.group_ids[p.rows[0]]): p.length for p in _group_plans(batch)}


def shared_layout(batch: TrainBatch) -> ForwardLayout:
    """One row per group of `batch` (see the module docstring)."""
    out_shape = (int(batch.mask.shape[0]), int(batch.mask.shape[1]))
    plans = _group_plans(batch)
    if not plans:
        return _empty_layout(out_shape)
    # Contexts end at one column, P: every row's picks (the last context position, then its
    # segments) start there, so the LM head's kept columns, shared by all rows, are the union of
    # nearly identical ranges instead of ranges spread by the contexts' lengths. Rows are
    # left-padded to P and right-padded to the longest segments.
    start = max(p.context for p in plans)
    width = start + max(p.length - p.context for p in plans)
    input_ids = torch.zeros((len(plans), width), dtype=torch.long)  # pads: any id, masked
    position_ids = torch.zeros((len(plans), width), dtype=torch.long)
    segment_ids = torch.full((len(plans), width), PAD_SEGMENT, dtype=torch.long)
    per_row = []
    for r, plan in enumerate(plans):
        c = plan.context
        input_ids[r, start - c : start] = batch.tokens[plan.rows[0], :c]
        position_ids[r, start - c : start] = torch.arange(c)
        segment_ids[r, start - c : start] = CONTEXT_SEGMENT
        offset = start
        picks: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        for s, (b, cols, n) in enumerate(zip(plan.rows, plan.cols, plan.segment_lengths)):
            input_ids[r, offset : offset + n] = batch.tokens[b, c : c + n]
            position_ids[r, offset : offset + n] = torch.arange(c, c + n)
            segment_ids[r, offset : offset + n] = s + 1
            # Column j's predictor is token j: in the context, or in this row's segment.
            picks[0].extend(start - c + j if j < c else offset + j - c for j in cols)
            picks[1].extend(batch.tokens[b, torch.tensor(cols) + 1].tolist())
            picks[2].extend([b] * len(cols))
            picks[3].extend(cols)
            offset += n
        per_row.append(picks)
    keep = torch.tensor(sorted({p for picks in per_row for p in picks[0]}), dtype=torch.long)
    return ForwardLayout(
        input_ids=input_ids,
        position_ids=position_ids,
        segment_ids=segment_ids,
        keep=keep,
        out_shape=out_shape,
        forward_tokens=sum(p.length for p in plans),
        **_picks(per_row, keep),
    )


def block_attention_mask(segment_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """[R, L, L] bool, True where query i may attend to key k: both real, k not after i in
    position, and k in the context or in i's own segment. A pad attends only to itself, so that
    no softmax row is empty (an all-masked row gives NaN outputs, and NaN times a zero
    gradient is still NaN in the weight gradients)."""
    q_seg, k_seg = segment_ids[:, :, None], segment_ids[:, None, :]
    q_pos, k_pos = position_ids[:, :, None], position_ids[:, None, :]
    allowed = (
        (k_pos <= q_pos)
        & ((k_seg == CONTEXT_SEGMENT) | (k_seg == q_seg))
        & (q_seg != PAD_SEGMENT)
        & (k_seg != PAD_SEGMENT)
    )
    return allowed | torch.diag_embed(segment_ids == PAD_SEGMENT)


def layout_for(batch: TrainBatch, shared_prefix: bool) -> ForwardLayout:
    return shared_layout(batch) if shared_prefix else unshared_layout(batch)


def _empty_layout(out_shape: tuple[int, int]) -> ForwardLayout:
    empty = torch.zeros((0, 0), dtype=torch.long)
    return ForwardLayout(
        input_ids=empty,
        position_ids=None,
        segment_ids=None,
        keep=torch.zeros(0, dtype=torch.long),
        pick_index=empty,
        pick_target=empty,
        pick_valid=torch.zeros((0, 0), dtype=torch.bool),
        dest_row=empty,
        dest_col=empty,
        out_shape=out_shape,
        forward_tokens=0,
    )
