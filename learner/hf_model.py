"""Hugging Face model I/O for the learner: load a causal LM, load weights into a live module,
save a policy directory that vLLM and transformers both load."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rrr.core.config import LoraConfig

log = logging.getLogger(__name__)


def load_causal_lm(path: str, dtype: torch.dtype, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code
    )


def load_policy_weights(module: torch.nn.Module, policy_dir: Path) -> None:
    """Load a save_pretrained directory's safetensors into an existing module (in place, so the
    optimizer keeps pointing at the same parameters); an adapter directory into its adapter."""
    from safetensors.torch import load_file

    from rrr.core.lora import is_adapter_dir
    from rrr.learner.lora import load_adapter_weights

    if is_adapter_dir(policy_dir):
        load_adapter_weights(module, policy_dir)
        return

    state: dict[str, torch.Tensor] = {}
    for f in sorted(policy_dir.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"policy weights mismatch: missing {missing}, unexpected {unexpected}")
    module.tie_weights()


def save_policy_dir(
    state: dict[str, torch.Tensor] | None,
    module: torch.nn.Module,
    model_path: str,
    out: Path,
    lora: LoraConfig | None = None,
) -> None:
    """A Hugging Face directory (config, safetensors, tokenizer) that vLLM and transformers load;
    with `lora` (rank > 0), an adapter directory: `state` is the adapter's."""
    from transformers import AutoTokenizer

    if lora is not None and lora.rank:
        from rrr.learner.lora import save_adapter_dir

        assert state is not None
        save_adapter_dir(state, lora, model_path, out)
    else:
        hf_module = getattr(module, "module", module)  # unwrap a DeepSpeed engine
        out.mkdir(parents=True, exist_ok=True)
        hf_module.save_pretrained(out, state_dict=state, safe_serialization=True)
    try:
        AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    except (OSError, ValueError) as exc:  # a model without a tokenizer still exports weights
        log.warning("no tokenizer copied from %s: %s", model_path, exc)
