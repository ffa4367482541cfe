"""The learner's half of the weight sync, owned by each learner rank (learner/group.py exposes
it as explicit actor methods; learner/weight_sync.py drives it from the driver).

Every rank walks the same weight manifest (under ZeRO-3 each module's gather is a collective);
only rank 0 sends. Backends:
  collective    rank 0 joins a torch.distributed group made for the purpose with every vLLM
                worker of every rollout worker (vLLM's stateless_init_torch_distributed_process_
                group: gloo on CPU, NCCL on GPU, one code path) and broadcasts packed buckets.
  object_store  rank 0 writes one safetensors file (/dev/shm) or one Ray object.

Double buffering (collective): bucket k+1 is packed while bucket k's broadcast is in flight
(`async_op=True`); a buffer is reused only after its previous broadcast has completed. Packing
happens on the current stream, so the gathered tensors it reads are freed only after the copy
(no side stream that could still be reading them: the record_stream hazard is gone).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import torch

from rrr.core.shm import free_bytes
from rrr.core.weights.backend import collective_backend
from rrr.core.weights.group import init_group, leave_group
from rrr.core.weights.wire import Bucket, pack_bucket, plan_buckets, to_wire
from rrr.learner.manifest import WeightManifest


def device_info(device: torch.device) -> dict[str, Any]:
    """Where this process's weights live: node, device kind, and (GPU) the device's UUID, so
    the driver can tell two actors that share one GPU (colocated) from two that do not; and the
    free bytes of this node's /dev/shm (the object-store sync's `shm` transport needs room)."""
    import ray

    info: dict[str, Any] = {"node": ray.get_runtime_context().get_node_id(), "device": device.type,
                            "shm_free": free_bytes()}  # fmt: skip
    if device.type == "cuda":
        info["gpu_uuid"] = str(torch.cuda.get_device_properties(device).uuid)
    return info


class WeightSender:
    """Rank-local sender state: the bucket plan and wire dtype (made once per group, at
    `prepare`), the group (rank 0 only) and the two pack buffers."""

    def __init__(self, rank: int, device: torch.device) -> None:
        self.rank, self.device = rank, device
        self.group: Any = None
        self.buckets: list[Bucket] = []
        self.wire_dtype = "float32"
        self.buffers: list[torch.Tensor] = []
        self.exported: str | None = None  # the /dev/shm file of the last `shm` export

    @staticmethod
    def plan(manifest: WeightManifest, bucket_bytes: int, wire_dtype: str) -> list[Bucket]:
        """The buckets of a push of `manifest` in `wire_dtype` (a query: nothing is kept)."""
        return plan_buckets(manifest.metas(getattr(torch, wire_dtype)), bucket_bytes)

    def prepare(self, manifest: WeightManifest, bucket_bytes: int, wire_dtype: str) -> list[dict]:
        """Plan the buckets of every later broadcast, once per group: the sender keeps the
        plan, and the returned wire form goes to the receivers once, when they join."""
        self.wire_dtype = wire_dtype
        self.buckets = self.plan(manifest, bucket_bytes, wire_dtype)
        return to_wire(self.buckets)

    def join(self, host: str, port: int, world_size: int, timeout_s: float) -> None:
        if self.rank != 0:
            return
        backend = collective_backend(self.device.type)
        self.group = init_group(host, port, 0, world_size, backend, timeout_s)

    def broadcast(self, weights: Iterator[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Rank 0 packs and sends the prepared plan's buckets; other ranks only drain
        `weights` (their ZeRO-3 gathers)."""
        if self.rank != 0:
            for _ in weights:
                pass
            return {"gather_s": 0.0, "wire_s": 0.0}
        if self.group is None or not self.buckets:
            raise RuntimeError("weight sync: broadcast before prepare and join")
        buckets = self.buckets
        import torch.distributed as dist

        size = max(b.nbytes for b in buckets)
        if not self.buffers or self.buffers[0].numel() < size:
            self.buffers = [
                torch.empty(size, dtype=torch.uint8, device=self.device) for _ in range(2)
            ]
        pending: list[Any] = [None, None]
        gather_s = wire_s = 0.0
        for i, bucket in enumerate(buckets):
            slot = i % 2
            t0 = time.perf_counter()
            tensors = {}
            for entry in bucket.entries:
                name, t = next(weights)
                if name != entry.name:  # manifest order is the contract; say where it broke
                    raise RuntimeError(f"weight order changed: planned {entry.name}, got {name}")
                tensors[name] = t
            gather_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            if pending[slot] is not None:
                pending[slot].wait()  # bucket i-2's broadcast has left this buffer
            buf = pack_bucket(bucket, tensors, out=self.buffers[slot])
            pending[slot] = dist.broadcast(buf, group_src=0, group=self.group, async_op=True)
            wire_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for work in pending:
            if work is not None:
                work.wait()
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()
        return {"gather_s": gather_s, "wire_s": wire_s + time.perf_counter() - t0}

    def export(
        self, weights: Iterator[tuple[str, torch.Tensor]], mode: str, path: str | None
    ) -> dict[str, Any] | None:
        """object_store: one safetensors file in /dev/shm (`shm`) or one Ray object (`object`).
        Every rank drains `weights`; rank 0 returns where the bytes are."""
        import ray
        from safetensors.torch import save, save_file

        t0 = time.perf_counter()
        state = {k: v.to("cpu").contiguous() for k, v in weights}
        gather_s = time.perf_counter() - t0
        if self.rank != 0:
            return None
        nbytes = sum(v.numel() * v.element_size() for v in state.values())
        t0 = time.perf_counter()
        if mode == "shm":
            assert path is not None
            tmp = f"{path}.{uuid.uuid4().hex[:6]}.part"
            save_file(state, tmp)
            os.replace(tmp, path)  # readers of the previous file keep their (unlinked) inode
            self.exported = path
            out: dict[str, Any] = {"path": path}
        else:
            import numpy as np

            # A numpy array travels out-of-band: receivers on this node map it without a copy.
            # In a list, so the driver only ever holds the ObjectRef, never the bytes.
            out = {"refs": [ray.put(np.frombuffer(save(state), dtype=np.uint8))]}
        return {**out, "gather_s": gather_s, "wire_s": time.perf_counter() - t0, "bytes": nbytes}

    def close(self) -> None:
        """Leave the group (a replaced rollout worker means a new group, with a new port)."""
        group, self.group = self.group, None
        leave_group(group)
        self.buffers = []
        if self.exported is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.exported)
            self.exported = None
