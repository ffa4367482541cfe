"""Per-token log-probs of the trained tokens from one forward pass over a `ForwardLayout`.

The maths is rrr.core.grpo.gathered_logprobs (the one kernel); this module only runs the model:
only the layout's `keep` positions go through the LM head and the log-softmax
(`logits_to_keep` with an index tensor). The reflection is the tail of every episode, so this
skips the vocabulary projection of the whole context, which for a small model with a 49k
vocabulary is a large share of the compute and of the memory.
"""

from __future__ import annotations

import torch

from rrr.core.grpo import gathered_logprobs
from rrr.learner.layout import ForwardLayout, block_attention_mask

# Attention implementations that take a custom 4D mask (transformers passes a 4D mask through
# untouched): SDPA reads a bool mask (True = attend), eager adds the mask to the scores. Flash
# attention kernels take no such mask; on them the learner falls back to the unshared layout.
SHARED_PREFIX_ATTENTION = ("sdpa", "eager")


def _hf_config(model: torch.nn.Module):
    return getattr(getattr(model, "module", model), "config", None)  # unwrap a DeepSpeed engine


def shared_prefix_unsupported(model: torch.nn.Module) -> str | None:
    """Why `model` cannot run the shared-prefix layout, or None if it can."""
    config = _hf_config(model)
    if config is None:
        return "the model has no Hugging Face config"
    impl = getattr(config, "_attn_implementation", None)
    if impl not in SHARED_PREFIX_ATTENTION:
        return f"attention implementation {impl!r} takes no 4D mask"
    # A 4D mask replaces the model's own masks, sliding windows included: such a model would
    # silently attend beyond its window.
    if any("sliding" in t for t in getattr(config, "layer_types", None) or ()):
        return "the model has sliding-window layers"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "the model uses a sliding window"
    return None


def _attention_mask(layout: ForwardLayout, impl: str, device: torch.device) -> torch.Tensor:
    """The layout's block mask as the model's attention implementation reads it: [R, 1, L, L]
    bool for SDPA, additive float (0 or the most negative float) for eager."""
    allowed = block_attention_mask(layout.segment_ids, layout.position_ids).to(device)[:, None]
    if impl == "sdpa":
        return allowed
    blocked = torch.finfo(torch.float32).min
    return torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, blocked)


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
    if layout.segment_ids is not None:
        impl = _hf_config(model)._attn_implementation
        kwargs["attention_mask"] = _attention_mask(layout, impl, device)
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
