"""THE list of a policy's weights: one walk of the model gives every weight's name, order,
dtype and full shape, with a tied weight listed once (under its first name) and its aliases
recorded. Every sync backend, the bucket plan, export and checkpoints read weights through it,
so that they can never disagree about what "the weights" are.

Under ZeRO-3 each rank holds a shard; `iter_weights` gathers one module's parameters at a time
and is a collective: every rank must run the same iteration to its end. Because the iteration
and the bucket plan come from the same manifest, rank 0 and the others always enter the same
number of gathers (a plan from `named_parameters()` and an iteration over modules once
disagreed on a tied head, and the ranks deadlocked).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from rrr.core.lora import wire_name
from rrr.core.weights.wire import dtype_name


@dataclass(frozen=True)
class WeightEntry:
    name: str  # the checkpoint / Hugging Face name, e.g. "model.layers.0.mlp.up_proj.weight"
    module: str  # the owning module's path ("" for the root)
    attr: str  # the parameter's attribute name on that module
    dtype: str  # as the model holds it ("bfloat16", "float32")
    shape: tuple[int, ...]  # full shape (a ZeRO-3 shard's ds_shape)


@dataclass(frozen=True)
class WeightManifest:
    entries: tuple[WeightEntry, ...]
    aliases: dict[str, str]  # tied name -> the entry it shares (e.g. lm_head.weight -> embed)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def metas(self, wire_dtype: torch.dtype | None = None) -> list[tuple[str, str, tuple]]:
        """(name, dtype, shape) per entry, in order: what `rrr.core.weights.wire.plan_buckets`
        takes. `wire_dtype` casts floating weights (the receiver's dtype: bf16 for a GPU vLLM)."""
        return [(e.name, _wire(e.dtype, wire_dtype), e.shape) for e in self.entries]

    def nbytes(self, wire_dtype: torch.dtype | None = None) -> int:
        return sum(
            torch.Size(shape).numel() * getattr(torch, dtype).itemsize
            for _, dtype, shape in self.metas(wire_dtype)
        )


def _wire(dtype: str, wire_dtype: torch.dtype | None) -> str:
    if wire_dtype is None or not getattr(torch, dtype).is_floating_point:
        return dtype
    return dtype_name(wire_dtype)


def build_manifest(model: torch.nn.Module, *, adapter: bool = False) -> WeightManifest:
    """Walk modules in registration order; each parameter object is listed once. `adapter`: a
    LoRA policy's weights are its adapter's alone, under their saved names (rrr/core/lora.py):
    the base never changes, so nothing else is ever pushed, checkpointed or exported."""
    entries: list[WeightEntry] = []
    first_name: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False, remove_duplicate=False):
            name = f"{prefix}.{attr}" if prefix else attr
            if adapter:
                name = wire_name(name)  # type: ignore[assignment]
                if name is None:
                    continue
            if id(p) in first_name:
                if name != first_name[id(p)]:
                    aliases[name] = first_name[id(p)]
                continue
            first_name[id(p)] = name
            shape = tuple(getattr(p, "ds_shape", None) or p.shape)
            entries.append(WeightEntry(name, prefix, attr, dtype_name(p.dtype), shape))
    return WeightManifest(tuple(entries), aliases)


def iter_weights(
    model: torch.nn.Module,
    manifest: WeightManifest,
    *,
    zero3: bool = False,
    wire_dtype: torch.dtype | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Full weights in manifest order (cast to `wire_dtype` when given). Under ZeRO-3 every rank
    must exhaust this iterator: each module's gather is a collective."""
    gathered = _zero3_gather if zero3 else _no_gather
    modules = dict(model.named_modules(remove_duplicate=False))
    i, entries = 0, manifest.entries
    while i < len(entries):
        owner = entries[i].module
        group = []
        while i < len(entries) and entries[i].module == owner:
            group.append(entries[i])
            i += 1
        params = [getattr(modules[owner], e.attr) for e in group]
        with gathered(params):
            for e, p in zip(group, params):
                t = p.detach()
                if wire_dtype is not None and t.is_floating_point() and t.dtype != wire_dtype:
                    t = t.to(wire_dtype)
                elif zero3:
                    t = t.clone()  # the gathered storage is released when the block ends
                if tuple(t.shape) != e.shape:
                    raise RuntimeError(f"{e.name}: manifest shape {e.shape}, got {tuple(t.shape)}")
                yield e.name, t


def _no_gather(params: list[torch.nn.Parameter]) -> nullcontext:
    del params
    return nullcontext()


def _zero3_gather(params: list[torch.nn.Parameter]):
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
