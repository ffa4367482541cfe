"""The weight-receiving endpoint of a rollout worker: live weight updates into its vLLM engine,
from a file, an object-store blob or a collective broadcast. Split from the generator
(actors/vllm_engine.py, which inherits it) so that each file has one job; the driver's side of
the sync is learner/weight_sync.py, the wire protocol rrr/core/weights/.

Every method fans out to each vLLM worker of the engine (one per tensor-parallel rank) through
`collective_rpc` into the worker extension (actors/worker_extension.py), and records the policy
version the new weights are, which the generator stamps on every sample from then on.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrr.core.shm import tmpfs_dir_for

# vLLM's LoRARequest must name a path; the adapters rrr pushes are loaded from memory
# (worker_extension._rrr_load_adapter) before any request names them, so it is never read.
IN_MEMORY_ADAPTER = "rrr:in-memory"


class WeightEndpoint:
    """Needs `self.llm` (a vLLM LLM), `self.version`, `self.model_path`, `self.seed`,
    `self.serves_adapters` and `self.reset_prefix_cache()` from the class it is mixed into
    (VLLMEngine).

    An engine that serves adapters (learner.lora) keeps its base weights for life: every load
    is the learner's adapter, under a new id, and `lora_request` names the one that the
    generator's requests use (None: the base model, policy version 0)."""

    llm: Any
    version: int
    model_path: str
    seed: int
    serves_adapters: bool
    lora_request: Any = None
    _adapter_loads: int = 0

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Load a full or partial state dict (name -> tensor) into the live engine."""
        from safetensors.torch import save_file

        # Tied embeddings share storage; safetensors refuses shared tensors, so clone.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        directory = tmpfs_dir_for(sum(t.numel() * t.element_size() for t in tensors.values()))
        with tempfile.NamedTemporaryFile(suffix=".safetensors", dir=directory) as f:
            save_file(tensors, f.name)
            return self.load_weights_file(f.name)

    def load_weights_file(
        self, path: str, aliases: dict[str, str] | None = None, version: int | None = None
    ) -> int:
        """Load a safetensors file of (some) weights; every vLLM worker reads it. `aliases`
        (tied name -> shared weight) come from the learner's manifest; None: the model's own
        tied head, if any. `version`: the policy version these weights are (None: unchanged)."""
        return self._reload("rrr_reload_from_file", (path, aliases), version)

    def reset_to_base(self) -> int:
        """The engine as a fresh start leaves it: the model directory's own weights (policy
        version 0), an empty prefix cache, the sampler seeded with the engine's seed. What a
        generation stack kept for the next run goes through (rrr/driver/stack.py, StackPool)."""
        if self.serves_adapters:  # the base weights never changed: drop the adapter
            self.llm.collective_rpc("rrr_drop_adapters")
            self._loaded(0)
            loaded = 0
        else:
            files = sorted(Path(self.model_path).glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no *.safetensors in {self.model_path} to reset from")
            loaded = sum(self.load_weights_file(str(f), version=0) for f in files)
        self.llm.collective_rpc("rrr_reseed", args=(self.seed,))
        return loaded

    def adapter_id(self) -> int | None:
        """The vLLM id of the adapter the requests name now; None: the base model."""
        return None if self.lora_request is None else int(self.lora_request.lora_int_id)

    def _reload(self, method: str, args: tuple[Any, ...], version: int | None) -> int:
        """One reload on every vLLM worker; the count of tensors loaded. A reload that fails, at
        any point, leaves the workers on the base model (worker_extension._rrr_reload): the
        version says so, and the error goes on."""
        adapter_id = self._adapter_loads + 1 if self.serves_adapters else None
        try:
            counts = self.llm.collective_rpc(method, args=(*args, adapter_id))
        except BaseException:
            self._loaded(0)
            raise
        self._loaded(version, adapter_id)
        return int(counts[0])

    def _loaded(self, version: int | None, adapter_id: int | None = None) -> None:
        """After a load: the prefix cache emptied (its KV was computed by the old weights), the
        version recorded, and the adapter the requests name from now on (version 0: none)."""
        from vllm.lora.request import LoRARequest

        self.reset_prefix_cache()
        if version is not None:
            self.version = version
        if adapter_id is not None:
            self._adapter_loads = adapter_id
            self.lora_request = LoRARequest(f"rrr-{adapter_id}", adapter_id, IN_MEMORY_ADAPTER)
        elif version == 0:
            self.lora_request = None

    # ------------------------------------------------------------------ weight sync (receiver)
    # Explicit methods the driver's sync (learner/weight_sync.py) calls by name; each fans out
    # to every vLLM worker of this engine (one per tensor-parallel rank) through collective_rpc.

    def sync_info(self) -> dict[str, Any]:
        """This engine's node and its vLLM workers (rank, device, dtype, GPU UUID)."""
        import ray

        return {
            "node": ray.get_runtime_context().get_node_id(),
            "workers": self.llm.collective_rpc("rrr_info"),
        }

    def sync_join(
        self,
        host: str,
        port: int,
        rank_offset: int,
        world_size: int,
        timeout_s: float,
        plan: list[dict],
        aliases: dict[str, str] | None = None,
    ) -> None:
        """Join the sync group; every vLLM worker keeps the bucket plan and the aliases for
        as long as the group lasts (each push then carries no more than its version)."""
        self.llm.collective_rpc(
            "rrr_init_group", args=(host, port, rank_offset, world_size, timeout_s, plan, aliases)
        )

    def sync_receive(self, version: int | None = None) -> int:
        """Receive one push over the group's plan; `version`: the policy version it is."""
        return self._reload("rrr_receive_buckets", (), version)

    def sync_close(self) -> None:
        self.llm.collective_rpc("rrr_close_group")

    def sync_load_blob(
        self, blob: Any, aliases: dict[str, str] | None = None, version: int | None = None
    ) -> dict[str, float]:
        """The object transport: Ray resolved the ObjectRef into `blob` (zero-copy from this
        node's object store); one /dev/shm file hands it to vLLM's workers (vLLM's RPC is a
        slow carrier for hundreds of MB, docs/cpu-stack.md)."""
        t0 = time.perf_counter()
        # /dev/shm when it has room (a container's 64 MiB does not), else the temp directory.
        directory = tmpfs_dir_for(memoryview(blob).nbytes)
        with tempfile.NamedTemporaryFile(suffix=".safetensors", dir=directory) as f:
            f.write(memoryview(blob))
            f.flush()
            write_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            self.load_weights_file(f.name, aliases, version)
        return {"write_s": write_s, "load_s": time.perf_counter() - t1}
