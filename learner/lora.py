"""LoRA on the learner, with peft: the policy is the frozen base plus one adapter, the KL
reference is the same model with the adapter switched off (no second copy), and "the weights"
of every push, checkpoint and export are the adapter's alone (learner/manifest.py lists them
under their saved names, rrr/core/lora.py).

An adapter directory here is peft's: `adapter_config.json` and `adapter_model.safetensors`
(plus the tokenizer), which `peft.PeftModel.from_pretrained` and vLLM's LoRA loader both read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rrr.core.config import LoraConfig
from rrr.core.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_config, refuse_unknown_targets


def apply_lora(model: torch.nn.Module, lora: LoraConfig, base_model: str) -> torch.nn.Module:
    """The model with a fresh adapter (peft's init: A random, B zero, so step 0 is the base);
    only the adapter's parameters require gradients."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    fields = {k: v for k, v in adapter_config(lora, base_model).items() if k != "peft_type"}
    return get_peft_model(model, PeftLoraConfig(**fields))


def linear_module_names(model_path: str, trust_remote_code: bool = False) -> set[str]:
    """The names (last path part) of the model's linear layers a LoRA adapter may target, read
    from a weightless copy built on the meta device (seconds, whatever the model's size). The
    output head is not one: vLLM serves no adapter on it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = model.get_output_embeddings()
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }


def check_target_modules(model_path: str, lora: LoraConfig, trust_remote_code: bool) -> None:
    """Refuse, before anything starts, a target module the model does not have."""
    if lora.rank:
        refuse_unknown_targets(lora, linear_module_names(model_path, trust_remote_code), model_path)


def save_adapter_dir(
    state: dict[str, torch.Tensor], lora: LoraConfig, base: str, out: Path
) -> None:
    """An adapter directory from the adapter's gathered tensors (saved names)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / ADAPTER_WEIGHTS))
    (out / ADAPTER_CONFIG).write_text(json.dumps(adapter_config(lora, base), indent=1))


def load_adapter_weights(model: torch.nn.Module, adapter_dir: Path) -> None:
    """Load an adapter directory's tensors into the live adapter (in place: the optimizer keeps
    pointing at the same parameters); every adapter tensor must be there, nothing else."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or missing:
        raise RuntimeError(
            f"adapter weights in {adapter_dir} do not fit the model: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )


def merge_adapter(adapter_dir: Path, base_path: str, out: Path, trust_remote_code: bool) -> None:
    """The base model with the adapter folded in, saved as a plain Hugging Face model (what
    `rrr export` writes by default: any tool loads it)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # The base's own dtype: a bf16 7B merges into 15 GB, not float32's 30.
    base = AutoModelForCausalLM.from_pretrained(
        base_path, dtype="auto", trust_remote_code=trust_remote_code
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
