"""A model's shape without loading it: parameter count, the tensors a weight sync ships, and
the per-token KV-cache size, read from its config.json (or, for the presets' hub models on a
machine that has not downloaded them, from a table of their published configs).

`rrr plan` uses it to size placements and memory before anything starts.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrr.core.errors import RRRError

# The published config.json values of the models the shipped presets name (Hugging Face hub,
# revision main), so that `rrr plan` works offline. Keys as in config.json.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-1.5B-Instruct": {
        "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
        "tie_word_embeddings": True, "attention_bias": True,
    },
    "Qwen/Qwen2.5-7B-Instruct": {
        "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
        "tie_word_embeddings": False, "attention_bias": True,
    },
    "Qwen/Qwen2-7B-Instruct": {
        "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
        "tie_word_embeddings": False, "attention_bias": True,
    },
    "smollm2-135m": {  # the embedded default (HuggingFaceTB/SmolLM2-135M-Instruct)
        "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
        "tie_word_embeddings": True, "attention_bias": False,
    },
}  # fmt: skip


class ModelShapeError(RRRError, ValueError):
    """No config.json to read the model's shape from."""


@dataclass(frozen=True)
class ModelShape:
    """A Llama/Qwen-style decoder: embeddings, L x (attention + gated MLP + 2 norms), norm,
    head (tied or not)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    attention_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """The weights a sync ships, in model order, a tied head once (as the embedding)."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [(p + "input_layernorm.weight", (h,))]
            for proj, rows in (("q", h), ("k", kv), ("v", kv)):
                out.append((f"{p}self_attn.{proj}_proj.weight", (rows, h)))
                if self.attention_bias:
                    out.append((f"{p}self_attn.{proj}_proj.bias", (rows,)))
            out += [
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (self.intermediate, h)),
                (p + "mlp.up_proj.weight", (self.intermediate, h)),
                (p + "mlp.down_proj.weight", (h, self.intermediate)),
            ]
        out.append(("model.norm.weight", (h,)))
        if not self.tied:
            out.append(("lm_head.weight", (self.vocab, h)))
        return out

    def linear_shapes(self) -> dict[str, tuple[str, int, int]]:
        """Each decoder layer's linear layers a LoRA adapter may target: name -> (path in the
        layer, out features, in features)."""
        h, kv, inter = self.hidden, self.kv_heads * self.head_dim, self.intermediate
        return {
            "q_proj": ("self_attn.q_proj", h, h), "k_proj": ("self_attn.k_proj", kv, h),
            "v_proj": ("self_attn.v_proj", kv, h), "o_proj": ("self_attn.o_proj", h, h),
            "gate_proj": ("mlp.gate_proj", inter, h), "up_proj": ("mlp.up_proj", inter, h),
            "down_proj": ("mlp.down_proj", h, inter),
        }  # fmt: skip

    def lora_tensors(self, rank: int, targets: list[str]) -> list[tuple[str, tuple[int, ...]]]:
        """The adapter a push ships under learner.lora: A (r x in) and B (out x r) per targeted
        linear layer, under peft's saved names (rrr/core/lora.py)."""
        linear = self.linear_shapes()
        out: list[tuple[str, tuple[int, ...]]] = []
        for i in range(self.layers):
            for target in targets:
                path, rows, cols = linear[target]
                prefix = f"base_model.model.model.layers.{i}.{path}"
                out += [(f"{prefix}.lora_A.weight", (rank, cols)),
                        (f"{prefix}.lora_B.weight", (rows, rank))]  # fmt: skip
        return out

    @property
    def params(self) -> int:
        return count(self.tensors())

    def lora_params(self, rank: int, targets: list[str]) -> int:
        return count(self.lora_tensors(rank, targets))

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel: int = 1) -> int:
        """K and V of every layer for one token, on one of `tensor_parallel` GPUs."""
        kv_heads = max(1, self.kv_heads // tensor_parallel)
        return 2 * self.layers * kv_heads * self.head_dim * dtype_bytes


def count(tensors: list[tuple[str, tuple[int, ...]]]) -> int:
    """The number of values in (name, shape) tensors."""
    return sum(math.prod(shape) for _, shape in tensors)


def from_config(name: str, config: dict[str, Any]) -> ModelShape:
    return ModelShape(
        name=name,
        hidden=int(config["hidden_size"]),
        layers=int(config["num_hidden_layers"]),
        heads=int(config["num_attention_heads"]),
        kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
        intermediate=int(config["intermediate_size"]),
        vocab=int(config["vocab_size"]),
        tied=bool(config.get("tie_word_embeddings", False)),
        # Qwen2 configs do not say it, but their q/k/v projections carry biases.
        attention_bias=bool(
            config.get("attention_bias", config.get("model_type") == "qwen2")
        ),
    )


def _hub_cache_config(name: str) -> Path | None:
    """config.json of a hub model already in the local Hugging Face cache (no download)."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    snapshots = home / "hub" / f"models--{name.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    return found[-1] if found else None


def model_shape(name_or_path: str) -> ModelShape:
    """From a local directory's config.json, the hub cache, or KNOWN_CONFIGS; never downloads."""
    local = Path(name_or_path) / "config.json"
    path = local if local.is_file() else _hub_cache_config(name_or_path)
    if path is not None:
        return from_config(name_or_path, json.loads(path.read_text()))
    if name_or_path in KNOWN_CONFIGS:
        return from_config(name_or_path, KNOWN_CONFIGS[name_or_path])
    raise ModelShapeError(
        f"model.name_or_path={name_or_path!r}: no config.json found (not a local directory, not "
        "in the Hugging Face cache, not a preset's model); download it first, or plan with a "
        "local copy"
    )
