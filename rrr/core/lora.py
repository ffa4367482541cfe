"""LoRA's one home in the core: what the learner, the rollout engines, checkpoints and export
must agree on, as pure functions (no torch, no peft).

  - the engines' rank: vLLM builds an engine for one `max_lora_rank` from a fixed set;
  - the adapter's config: the keys of peft's `adapter_config.json` that vLLM's PEFTHelper reads
    (rank, alpha, target modules), so the learner, the engines and an exported adapter
    directory describe one adapter the same way;
  - the adapter's tensor names on the wire and on disk: peft's saved names
    (`base_model.model.<module>.lora_A.weight`), which both `PeftModel.from_pretrained` and
    vLLM's `LoRAModel.from_lora_tensors` read;
  - what an adapter directory is, and how one is served as a model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrr.core.config import VLLM_LORA_RANKS, Config, ConfigError, LoraConfig

ADAPTER_CONFIG = "adapter_config.json"  # peft's file names
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "default"  # the one adapter peft's get_peft_model creates
ADAPTER_PARAM = (".lora_A.", ".lora_B.")


def engine_lora_rank(cfg: Config) -> int:
    """The max_lora_rank the vLLM engines are built with; 0 = no LoRA (full weights)."""
    rank = cfg.learner.lora.rank
    if rank == 0:
        return 0
    if cfg.rollout.max_lora_rank is not None:
        return cfg.rollout.max_lora_rank
    return min(r for r in VLLM_LORA_RANKS if r >= rank)


def adapter_config(lora: LoraConfig, base_model: str = "") -> dict[str, Any]:
    """peft's LoraConfig fields for this adapter (what adapter_config.json holds, and what vLLM's
    PEFTHelper is built from); bias, DoRA and the like stay off: vLLM serves none of them."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "target_modules": sorted(lora.target_modules),
        "lora_dropout": lora.dropout,
        "bias": "none",
        "base_model_name_or_path": base_model,
    }


def wire_name(param_name: str) -> str | None:
    """A peft model's parameter name as the adapter's saved tensor name (the adapter's name
    dropped, as peft's get_peft_model_state_dict does); None for a parameter of the base."""
    if not any(tag in param_name for tag in ADAPTER_PARAM):
        return None
    return param_name.replace(f".{ADAPTER_NAME}.", ".")


def is_adapter_dir(path: str | Path) -> bool:
    """A peft adapter directory (an adapter alone, without the model it adapts)."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def refuse_unknown_targets(lora: LoraConfig, linear_names: set[str], model: str) -> None:
    """Refuse a target module the model does not have, naming the key (`linear_names`: the
    model's linear layers, from the model itself or, in `rrr plan`, from its shape)."""
    unknown = [m for m in lora.target_modules if m not in linear_names]
    if lora.rank and unknown:
        raise ConfigError(
            f"learner.lora.target_modules: {unknown} name no linear layer of {model} "
            f"(its linear layers: {sorted(linear_names)})"
        )


def read_adapter_dir(path: str | Path) -> tuple[str, LoraConfig]:
    """An adapter directory's base model and its LoRA settings (from adapter_config.json): what
    a generation stack needs to serve it on the base (`rrr eval model.name_or_path=ADAPTER`)."""
    p = Path(path)
    try:
        cfg = json.loads((p / ADAPTER_CONFIG).read_text())
        base, rank, alpha = cfg["base_model_name_or_path"], int(cfg["r"]), float(cfg["lora_alpha"])
        targets = cfg["target_modules"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"model.name_or_path: {p / ADAPTER_CONFIG} is unreadable: {exc}") from exc
    if isinstance(targets, str) or not base:  # peft's regex form, or no base recorded
        raise ConfigError(
            f"model.name_or_path: {p} names no base model or gives target_modules as a pattern; "
            "rrr serves adapters that name their base and list their modules (as rrr writes them)"
        )
    if not 0 < rank <= VLLM_LORA_RANKS[-1]:
        raise ConfigError(
            f"model.name_or_path: {p} is a rank-{rank} adapter; vLLM serves ranks 1 to "
            f"{VLLM_LORA_RANKS[-1]}"
        )
    lora = LoraConfig(
        rank=rank, alpha=alpha, target_modules=sorted(targets),
        dropout=float(cfg.get("lora_dropout", 0.0)),
    )  # fmt: skip
    return base, lora


def serving_config(cfg: Config) -> tuple[Config, Path | None]:
    """The config a generation stack starts from. For `model.name_or_path` an adapter directory:
    its base model as the model and its settings as `learner.lora` (the engines are built to
    serve it), and the adapter's directory; otherwise the config itself and None."""
    if not is_adapter_dir(cfg.model.name_or_path):
        return cfg, None
    base, lora = read_adapter_dir(cfg.model.name_or_path)
    served = replace(
        cfg,
        model=replace(cfg.model, name_or_path=base),
        learner=replace(cfg.learner, lora=lora),
        rollout=replace(cfg.rollout, max_lora_rank=None),  # the engines fit this adapter
    )
    return served, Path(cfg.model.name_or_path)
