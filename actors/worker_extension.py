"""Methods mixed into every vLLM worker (`LLM(worker_extension_cls="rrr.actors.worker_extension.
WeightReceiver")`), called through `llm.collective_rpc(name, args=...)`.

Kept tiny and free of rrr imports: vLLM loads it by qualified name inside its own worker
processes. Method names are prefixed `rrr_` because vLLM rejects extension methods that clash
with the worker's own (e.g. `update_weights`).

On vLLM's CPU backend, `model.load_weights` after start-up fails (linear weights are repacked
once loaded), while the worker's own `reload_weights(weights_iterator=...)` re-runs the loader
and works; tensors passed as RPC arguments arrive as nested lists there, so weights travel as a
safetensors file or bytes (see docs/cpu-stack.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

# vLLM's in-place reload warns "<Layer>: Failed to load weights" for every layer that received
# no tensor, and then puts that layer's PREVIOUS tensors back. For RotaryEmbedding that is
# right (its cos/sin cache is derived, never in a state dict) and the line is noise on every
# sync, so it is dropped. For any other layer it is news and still shows: a tied ParallelLMHead
# that warned this way kept its old weights while the embedding moved on. The tied head is
# therefore always given its tensor (see `_with_aliases`), and never warns.
RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
RELOAD_WARNING = "%s: Failed to load weights"
EXPECTED_UNLOADED = frozenset({"RotaryEmbedding"})
# Hugging Face names of a tied head and the weight it shares (Llama, Qwen2, Mistral, Phi-3...),
# for loads that do not carry the learner's manifest aliases (a plain checkpoint file).
TIED_HEAD_ALIASES = {"lm_head.weight": "model.embed_tokens.weight"}


class ExpectedReloadWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == RELOAD_WARNING and args and args[0] in EXPECTED_UNLOADED)


def quiet_expected_reload_warnings() -> None:
    """Install the filter once per process (vLLM's logger is a process-wide singleton)."""
    logger = logging.getLogger(RELOAD_LOGGER)
    if not any(isinstance(f, ExpectedReloadWarnings) for f in logger.filters):
        logger.addFilter(ExpectedReloadWarnings())


def with_aliases(
    weights: Iterator[tuple[str, Any]], aliases: dict[str, str]
) -> Iterator[tuple[str, Any]]:
    """Each weight, then the same tensor under every alias that shares it (a tied head); a name
    is yielded once (a state dict that already holds the alias loads it as it is)."""
    shared_by: dict[str, list[str]] = {}
    for alias, name in aliases.items():
        shared_by.setdefault(name, []).append(alias)
    done: set[str] = set()
    for name, tensor in weights:
        for key in (name, *shared_by.get(name, ())):
            if key not in done:
                done.add(key)
                yield key, tensor


class WeightReceiver:
    """Receives new policy weights inside a vLLM worker process."""

    def rrr_reload_from_file(
        self, path: str, aliases: dict[str, str] | None = None, adapter_id: int | None = None
    ) -> int:
        """Load a (full or partial) safetensors state dict from `path`, or with `adapter_id` a
        LoRA adapter's tensors; return tensor count."""
        from safetensors.torch import load_file

        def weights() -> Iterator[tuple[str, Any]]:  # read inside the reload, as its failure
            yield from load_file(path).items()

        return self._rrr_reload(weights(), aliases, adapter_id)

    def _rrr_reload(
        self,
        weights: Iterator[tuple[str, Any]],
        aliases: dict[str, str] | None,
        adapter_id: int | None = None,
    ) -> int:
        """vLLM's in-place reload of `weights`, each shared weight also under its aliases; with
        `adapter_id`, `weights` are a LoRA adapter's (`_rrr_load_adapter`). `weights` is lazy:
        whatever fails while producing it (a missing file, no group, a sender that died) fails
        inside the reload, so every failed reload leaves the base model (`_rrr_restore_base`),
        which is what WeightEndpoint then says (version 0)."""
        if adapter_id is not None:
            return self._rrr_load_adapter(weights, adapter_id)
        quiet_expected_reload_warnings()
        count = 0

        def counted() -> Iterator[tuple[str, Any]]:
            nonlocal count
            for item in with_aliases(weights, self._rrr_aliases(aliases)):
                count += 1
                yield item

        try:
            self.reload_weights(weights_iterator=counted())
        except BaseException:
            self._rrr_restore_base()
            raise
        return count

    def _rrr_restore_base(self) -> None:
        """After a reload that failed (the sender died mid-push, a bad file): vLLM's
        layerwise reload has put every layer not yet complete on the meta device, and the next
        forward would kill the engine ("Meta tensors", found by tests/test_sync.py). Finish it
        (layers that got nothing get their old tensors back), then reload the model directory's
        own weights, so the engine holds one known model: the base (WeightEndpoint then says
        version 0, and the next push gives the learner's)."""
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        model_config = self.model_runner.model_config  # type: ignore[attr-defined]
        finalize_layerwise_reload(self.model_runner.get_model(), model_config)  # type: ignore[attr-defined]
        self.reload_weights()  # no iterator: from the model's own directory

    # --- LoRA: the engine serves the learner's adapter, pushed as tensors ----------------------

    def rrr_serve_adapters(self, config: dict[str, Any]) -> None:
        """From now on every weight load is an adapter of this peft config (rank, alpha, target
        modules: rrr/core/lora.py), loaded from memory, never from a path."""
        self._rrr_adapter = config

    def _rrr_load_adapter(self, weights: Iterator[tuple[str, Any]], adapter_id: int) -> int:
        """Build vLLM's LoRA model from the pushed tensors and make it the engine's one adapter,
        under `adapter_id` (the id WeightEndpoint's next requests name). The previous adapter
        goes first: the engine holds one, and a failed load leaves none (the base model)."""
        from vllm.lora.lora_model import LoRAModel
        from vllm.lora.peft_helper import PEFTHelper

        manager = self.model_runner.lora_manager  # type: ignore[attr-defined]
        try:
            tensors = dict(weights)  # drains the whole push (every broadcast) first
            self.rrr_drop_adapters()
            helper = PEFTHelper.from_dict(self._rrr_adapter)
            helper.validate_legal(manager.lora_config)
            model = LoRAModel.from_lora_tensors(
                adapter_id,
                tensors,
                helper,
                device="cpu",  # as vLLM's own loader: moved to the device when activated
                dtype=manager.lora_config.lora_dtype,
                model_vocab_size=manager.vocab_size,
            )
            manager._adapter_manager.add_adapter(model)
        except BaseException:
            self.rrr_drop_adapters()
            raise
        return len(tensors)

    def rrr_drop_adapters(self) -> None:
        """No adapter loaded: requests without one see the base model."""
        manager = self.model_runner.lora_manager._adapter_manager  # type: ignore[attr-defined]
        for adapter_id in list(manager.list_adapters()):
            manager.remove_adapter(adapter_id)

    def _rrr_aliases(self, aliases: dict[str, str] | None) -> dict[str, str]:
        """The sender's manifest aliases, else the tied head of a tied model."""
        if aliases is not None:
            return aliases
        hf_config = self.model_runner.model_config.hf_config  # type: ignore[attr-defined]
        return dict(TIED_HEAD_ALIASES) if getattr(hf_config, "tie_word_embeddings", False) else {}

    # --- collective sync: learner rank 0 -> every vLLM worker (learner/sync_sender.py) ------

    def rrr_info(self) -> dict[str, Any]:
        """This vLLM worker's rank in its engine, weight dtype and device (the sender casts to
        this dtype and the driver tells colocated GPUs apart by their UUID), and the file this
        extension was imported from: the code a worker process runs, which a job's working_dir
        must decide, not another checkout's install (tests/test_import_flows.py)."""
        import torch

        device = self.device  # type: ignore[attr-defined]
        dtype = self.model_runner.model_config.dtype  # type: ignore[attr-defined]
        info = {"rank": int(getattr(self, "rank", 0)), "device": torch.device(device).type,
                "dtype": str(dtype).removeprefix("torch."), "code": __file__}  # fmt: skip
        if info["device"] == "cuda":
            info["gpu_uuid"] = str(torch.cuda.get_device_properties(device).uuid)
        return info

    def rrr_init_group(
        self,
        host: str,
        port: int,
        rank_offset: int,
        world_size: int,
        timeout_s: float,
        plan: list[dict],
        aliases: dict[str, str] | None = None,
    ) -> None:
        """Join a process group made for the weight sync, learner rank 0 being its rank 0:
        gloo on CPU, NCCL on GPU, through the same helper as the sender
        (rrr/core/weights/group.py), never touching vLLM's own groups. The group's bucket plan
        and aliases are kept here until it closes: every push follows them."""
        from rrr.core.weights.backend import collective_backend
        from rrr.core.weights.group import init_group
        from rrr.core.weights.wire import from_wire

        self.rrr_close_group()
        backend = collective_backend(self._rrr_device().type)
        rank = rank_offset + int(getattr(self, "rank", 0))
        self._rrr_group = init_group(host, port, rank, world_size, backend, timeout_s)
        self._rrr_plan, self._rrr_plan_aliases = from_wire(plan), aliases

    def rrr_close_group(self) -> None:
        from rrr.core.weights.group import leave_group

        group, self._rrr_group = getattr(self, "_rrr_group", None), None
        self._rrr_plan = []
        leave_group(group)

    def _rrr_device(self) -> Any:
        import torch

        return torch.device(self.device)  # type: ignore[attr-defined]

    def rrr_reseed(self, seed: int) -> None:
        """Reset the sampler's random state. Requests carry no seed of their own (a per-request
        seed crashes vLLM's CPU sampler), so a seeded batch is made reproducible this way: the
        same weights, batch and seed give the same samples, on a restarted worker too."""
        import random

        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def rrr_receive_buckets(self, adapter_id: int | None = None) -> int:
        """Receive a whole sync (every bucket of the group's plan, in order) from rank 0 and
        load it through the worker's in-place reload, once per sync.

        Every bucket lands in a buffer of its own, never a reused one: vLLM's layerwise reload
        keeps the tensors it is given (views into the buffer) until their whole layer has
        arrived, which may be several buckets later (q, k and v make one `qkv_proj`), or until
        its final pass (an embedding whose vocabulary vLLM pads is never complete before then).
        A bucket's memory is freed when the loader drops its last view; on GPU the caching
        allocator hands the same block to a later bucket, so a fresh buffer costs no
        cudaMalloc. At most: the bucket being received, the partly loaded layers' buckets and
        the buckets of the final pass (`rrr plan` counts them: rrr/core/memory_budget.py).
        """
        import torch
        import torch.distributed as dist

        from rrr.core.weights.wire import unpack_bucket

        group = getattr(self, "_rrr_group", None)
        buckets = getattr(self, "_rrr_plan", [])
        aliases = getattr(self, "_rrr_plan_aliases", None)
        device = self._rrr_device()

        def weights() -> Iterator[tuple[str, Any]]:
            if group is None:
                raise RuntimeError("rrr_receive_buckets before rrr_init_group")
            for bucket in buckets:
                buf = torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
                dist.broadcast(buf, group_src=0, group=group)
                yield from unpack_bucket(buf, bucket)
                del buf  # only the loader's views keep it alive now

        count = self._rrr_reload(weights(), aliases, adapter_id)
        if device.type == "cuda":
            torch.cuda.current_stream().synchronize()
        return count
