"""Per-token log-probs of the trained tokens from one forward pass over a `ForwardLayout`.

The maths is rrr.grpo.gathered_logprobs (the one kernel); this module only runs the model:
only the layout's `keep` positions go through the LM head and the log-softmax
(`logits_to_keep` with an index tensor). The reflection is the tail of every episode, so this
skips the vocabulary projection of the whole context, which for a small model with a 49k
vocabulary is a large share of the compute and of the memory.
"""

from __future__ import annotations

import torch

from learner.layout import ForwardLayout
from rrr.grpo import gathered_logprobs


def layout_logprobs(
    model: torch.nn.Module,
    layout: ForwardLayout,
    *,
    device: torch.device,
    autocast: torch.dtype | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log p of every trained token of the layout's source batch, as its [B, T-1] grid (float32,
    0 at untrained columns); differentiable through `model` when grad is enabled. `device` is
    where the forward runs (not always where the parameters live: an offloaded ZeRO-3
    reference keeps them in CPU memory)."""
    out = torch.zeros(layout.out_shape, dtype=torch.float32, device=device)
    if layout.rows == 0 or layout.keep.numel() == 0:
        return out
    kwargs: dict[str, torch.Tensor] = {}
    if layout.position_ids is not None:
        kwargs["position_ids"] = layout.position_ids.to(device)
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        logits = model(
            input_ids=layout.input_ids.to(device),
            logits_to_keep=layout.keep.to(device),
            use_cache=False,
            **kwargs,
        ).logits  # [R, K, V]
    picked = gathered_logprobs(
        logits, layout.pick_index.to(device), layout.pick_target.to(device), temperature
    )
    valid = layout.pick_valid.to(device)
    index = (layout.dest_row.to(device)[valid], layout.dest_col.to(device)[valid])
    return out.index_put(index, picked[valid])
