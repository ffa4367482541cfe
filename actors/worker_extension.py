"""Methods mixed into every vLLM worker (`LLM(worker_extension_cls="actors.worker_extension.
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
from typing import Any

# vLLM's in-place reload warns "<Layer>: Failed to load weights" for every layer that received
# no tensor, then keeps that layer's current values. Two such layers are expected on every
# sync and harmless: RotaryEmbedding (its cos/sin cache is derived, never in a state dict) and,
# for a model with tied embeddings, ParallelLMHead (its weight IS the embedding, which was
# loaded). Users read the warning as "training is broken", so exactly those lines are dropped;
# the same warning for any other layer (or for an untied head) still shows.
RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
RELOAD_WARNING = "%s: Failed to load weights"


class ExpectedReloadWarnings(logging.Filter):
    def __init__(self, tied_embeddings: bool) -> None:
        super().__init__()
        self.expected = {"RotaryEmbedding"} | ({"ParallelLMHead"} if tied_embeddings else set())

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == RELOAD_WARNING and args and args[0] in self.expected)


def quiet_expected_reload_warnings(tied_embeddings: bool) -> None:
    """Install the filter once per process (vLLM's logger is a process-wide singleton)."""
    logger = logging.getLogger(RELOAD_LOGGER)
    if not any(isinstance(f, ExpectedReloadWarnings) for f in logger.filters):
        logger.addFilter(ExpectedReloadWarnings(tied_embeddings))


class WeightReceiver:
    """Receives new policy weights inside a vLLM worker process."""

    def rrr_reload_from_file(self, path: str) -> int:
        """Load a (full or partial) safetensors state dict from `path`; return tensor count."""
        from safetensors.torch import load_file

        return self._rrr_reload(load_file(path))

    def rrr_reload_from_bytes(self, blob: bytes) -> int:
        from safetensors.torch import load

        return self._rrr_reload(load(blob))

    def _rrr_reload(self, state: dict[str, Any]) -> int:
        self._rrr_quiet_reload()
        self.reload_weights(weights_iterator=iter(state.items()))
        return len(state)

    def _rrr_quiet_reload(self) -> None:
        hf_config = self.model_runner.model_config.hf_config  # type: ignore[attr-defined]
        quiet_expected_reload_warnings(bool(getattr(hf_config, "tie_word_embeddings", False)))

    # --- NCCL broadcast group (GPU): learner rank 0 -> every vLLM worker --------------------

    def rrr_init_broadcast_group(
        self, master_address: str, master_port: int, rank_offset: int, world_size: int
    ) -> None:
        """Join a process group made for weight sync (learner rank 0 is its rank 0).

        Uses vLLM's stateless NCCL communicator so it never touches vLLM's own groups.
        """
        import torch
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        rank = rank_offset + self.rank  # type: ignore[attr-defined]
        group = StatelessProcessGroup.create(
            host=master_address, port=master_port, rank=rank, world_size=world_size
        )
        self._rrr_comm = PyNcclCommunicator(group, device=torch.cuda.current_device())

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

    def rrr_ping(self) -> int:
        """One answer per vLLM worker: the sync sender counts an engine's workers with it."""
        return int(getattr(self, "rank", 0))

    def rrr_receive_buckets(self, plan: list[dict]) -> int:
        """Receive a whole sync (every bucket of learner.buckets' plan, in order) from rank 0 and
        load it through the worker's in-place reload, once per sync.

        Two receive buffers alternate; the broadcast into one and the copies out of the other
        are queued on the same stream, so the host never waits between buckets and a buffer is
        only rewritten after its previous tensors were copied into the model.
        """
        import torch

        from learner.buckets import from_wire, unpack_bucket

        buckets = from_wire(plan)
        size = max(b.nbytes for b in buckets)
        bufs = [torch.empty(size, dtype=torch.uint8, device="cuda") for _ in range(2)]
        stream = torch.cuda.current_stream()
        count = 0

        def weights():
            nonlocal count
            for i, bucket in enumerate(buckets):
                buf = bufs[i % 2][: bucket.nbytes]
                self._rrr_comm.broadcast(buf, src=0, stream=stream)
                tensors = unpack_bucket(buf, bucket)
                count += len(tensors)
                yield from tensors

        self._rrr_quiet_reload()
        self.reload_weights(weights_iterator=weights())
        stream.synchronize()
        return count
