"""What the learner forwards for a micro-batch, and where each trained log-prob lands.

Pure torch, no model. A `ForwardLayout` says which token rows go through the model (with which
attention mask and position ids), which output positions go through the LM head, and which
(position, target) pairs give the log-prob of each trained token of the source `TrainBatch`,
at column j of its [B, T-1] log-prob grid (column j = log p(token j+1 | tokens <= j), the
convention of rrr.grpo.spans_to_mask).

  unshared_layout   one row per episode, right-padded, plain causal attention
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learner.batch import TrainBatch


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
    per_row: list[tuple[list[int], list[int], list[int], list[int]]],
    keep: torch.Tensor,
    out_shape: tuple[int, int],
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
        **_picks(per_row, keep, out_shape),
    )


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
