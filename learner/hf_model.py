"""Hugging Face model I/O for the learner: load a causal LM, load weights into a live module,
save a policy directory that vLLM and transformers both load."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def load_causal_lm(path: str, dtype: torch.dtype, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code
    )


def load_policy_weights(module: torch.nn.Module, policy_dir: Path) -> None:
    """Load a save_pretrained directory's safetensors into an existing module (in place, so the
    optimizer keeps pointing at the same parameters)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(policy_dir.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"policy weights mismatch: missing {missing}, unexpected {unexpected}")
    module.tie_weights()


def save_policy_dir(
    state: dict[str, torch.Tensor] | None, module: torch.nn.Module, model_path: str, out: Path
) -> None:
    """A Hugging Face directory (config, safetensors, tokenizer) that vLLM and transformers load."""
    from transformers import AutoTokenizer

    hf_module = getattr(module, "module", module)  # unwrap a DeepSpeed engine
    out.mkdir(parents=True, exist_ok=True)
    hf_module.save_pretrained(out, state_dict=state, safe_serialization=True)
    try:
        AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    except (OSError, ValueError) as exc:  # a model without a tokenizer still exports weights
        log.warning("no tokenizer copied from %s: %s", model_path, exc)
