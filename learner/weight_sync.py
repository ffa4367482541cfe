"""Weight sync learner -> every rollout worker, behind one two-sided interface.

    sync = make_weight_sync(cfg.sync, gpu=...)
    sync.init(learner_group, fleet)          # once, after both sides are up
    timings = sync.push()                    # after every cfg.sync.every_n_steps steps
    sync.close()

Backends (the learner and the driver never branch on which one runs):

  object_store  CPU, works anywhere. Learner rank 0 gathers the full state dict (ZeRO-3: one
                submodule at a time, all ranks taking part) and serialises it ONCE to safetensors.
                transport "shm" (every rollout worker on rank 0's node): one file in /dev/shm,
                each worker's vLLM reads it with mmap. transport "object" (any placement): the
                bytes are `ray.put` inside the learner; the driver hands only the ObjectRef to
                each rollout worker; Ray resolves it worker-side, which writes its node's
                /dev/shm file for vLLM (vLLM's own RPC is a slow carrier for 500 MB,
                docs/cpu-stack.md). "auto" picks shm when it can (bench/sync.py measures
                both).
  nccl          GPU. Learner rank 0 and every vLLM worker of every RolloutWorker form one NCCL
                group (vLLM's StatelessProcessGroup + PyNcclCommunicator, rank 0 = learner, as
                OpenRLHF does); rank 0 broadcasts packed buckets of `bucket_mb` (learner.buckets,
                double-buffered on two CUDA streams), each vLLM worker loads every bucket through
                its in-place reload in ONE RPC, then the prefix cache is reset.

Every push is timed as gather (collecting full tensors) / wire (serialise + transport) /
load (the engines' reload).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import ray

from learner.buckets import from_wire, pack_bucket, plan_buckets, to_wire
from rrr.config import SyncConfig

SHM_DIR = "/dev/shm"


@dataclass
class SyncTimings:
    gather_s: float
    wire_s: float
    load_s: float
    bytes: int
    backend: str = ""
    transport: str = ""
    total_s: float = 0.0  # wall clock of the whole push, as the driver saw it

    def as_metrics(self, prefix: str = "sync/") -> dict[str, float]:
        return {
            f"{prefix}{k}": float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))
        }


class WeightSync(Protocol):
    def init(self, learners: Any, fleet: Any) -> None: ...

    def push(self) -> SyncTimings: ...

    def reconnect(self) -> None:
        """Rollout workers were replaced: include the new ones in the next push."""
        ...

    def close(self) -> None: ...


def make_weight_sync(
    cfg: SyncConfig, *, gpu: bool | None = None, transport: str = "auto"
) -> WeightSync:
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if gpu else "object_store")
    if backend == "nccl":
        if not gpu:
            raise ValueError("sync.backend=nccl needs CUDA GPUs; use object_store on CPU")
        return NcclSync(bucket_bytes=cfg.bucket_mb << 20)
    return ObjectStoreSync(transport=transport)


def _handles(fleet: Any) -> list[Any]:
    """A RolloutFleet, or a list of RolloutWorker handles."""
    return list(getattr(fleet, "workers", fleet))


def _node_id(_: Any) -> str:
    return ray.get_runtime_context().get_node_id()


# ------------------------------------------------------------------------- object store


def _sender_export(actor: Any, mode: str, path: str | None) -> dict[str, Any] | None:
    """Runs in every learner actor; rank 0 returns what the rollout workers need."""
    from safetensors.torch import save, save_file

    worker = actor.worker
    t0 = time.perf_counter()
    state = worker.state_dict_cpu()  # ZeRO-3: a collective every rank takes part in
    gather_s = time.perf_counter() - t0
    if worker.rank != 0:
        return None
    # Views that share storage (e.g. a tensor saved twice) are refused by safetensors.
    state = {k: v.contiguous() for k, v in state.items()}
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    t0 = time.perf_counter()
    if mode == "shm":
        tmp = f"{path}.{uuid.uuid4().hex[:6]}.part"
        save_file(state, tmp)
        os.replace(tmp, path)  # readers of the previous file keep their (unlinked) inode
        out: dict[str, Any] = {"path": path}
    else:
        import numpy as np

        # A numpy array travels out-of-band: receivers on this node map it without a copy.
        # In a list, so the driver only ever holds the ObjectRef, never the bytes.
        out = {"refs": [ray.put(np.frombuffer(save(state), dtype=np.uint8))]}
    return {**out, "gather_s": gather_s, "wire_s": time.perf_counter() - t0, "bytes": nbytes}


def _receiver_load_file(engine: Any, path: str) -> dict[str, float]:
    t0 = time.perf_counter()
    engine.load_weights_file(path)  # also resets vLLM's prefix cache
    return {"fetch_s": 0.0, "load_s": time.perf_counter() - t0}


def _receiver_load_blob(engine: Any, blob: Any, t_sent: float) -> dict[str, float]:
    """Ray resolved the ObjectRef into `blob` (zero-copy from this node's object store);
    one /dev/shm file hands it to vLLM's worker process."""
    t0 = time.perf_counter()
    fetch_s = max(0.0, time.time() - t_sent)  # when the call started vs when it was sent
    directory = SHM_DIR if os.path.isdir(SHM_DIR) else None
    if directory is None:  # no tmpfs: vLLM's RPC carries the bytes (slower, but works)
        engine.load_weights_bytes(bytes(blob))
        return {"fetch_s": fetch_s, "load_s": time.perf_counter() - t0}
    with tempfile.NamedTemporaryFile(suffix=".safetensors", dir=directory) as f:
        f.write(memoryview(blob))
        f.flush()
        write_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        engine.load_weights_file(f.name)
    return {"fetch_s": fetch_s + write_s, "load_s": time.perf_counter() - t1}


class ObjectStoreSync:
    name = "object_store"

    def __init__(self, transport: str = "auto") -> None:
        if transport not in ("auto", "shm", "object"):
            raise ValueError(f"unknown transport {transport!r} (auto | shm | object)")
        self.requested = transport
        self.transport = transport
        self.learners: Any = None
        self.fleet: Any = []
        self.path = os.path.join(SHM_DIR, f"rrr-weights-{uuid.uuid4().hex[:8]}.safetensors")

    @property
    def workers(self) -> list[Any]:
        # Read at every push: the fleet replaces workers that die.
        return _handles(self.fleet)

    def init(self, learners: Any, fleet: Any) -> None:
        self.learners, self.fleet = learners, fleet
        if self.transport == "auto":
            learner_node = ray.get(learners.actors[0].call.remote(_node_id))
            worker_nodes = ray.get([w.__ray_call__.remote(_node_id) for w in self.workers])
            same_node = all(n == learner_node for n in worker_nodes)
            self.transport = "shm" if same_node and os.path.isdir(SHM_DIR) else "object"

    def push(self) -> SyncTimings:
        t_start = time.perf_counter()
        results = self.learners.call_all(_sender_export, self.transport, self.path)
        sent = results[0]
        if self.transport == "shm":
            loads = ray.get(
                [w.__ray_call__.remote(_receiver_load_file, sent["path"]) for w in self.workers]
            )
        else:
            ref = sent["refs"][0]
            now = time.time()
            loads = ray.get(
                [w.__ray_call__.remote(_receiver_load_blob, ref, now) for w in self.workers]
            )
            del ref
        return SyncTimings(
            gather_s=sent["gather_s"],
            wire_s=sent["wire_s"] + max(x["fetch_s"] for x in loads),
            load_s=max(x["load_s"] for x in loads),
            bytes=int(sent["bytes"]),
            backend=self.name,
            transport=self.transport,
            total_s=time.perf_counter() - t_start,
        )

    def reconnect(self) -> None:
        """Nothing to set up: a replaced worker is reached through the fleet at the next push
        (its node is assumed to match the transport chosen at init)."""

    def close(self) -> None:
        # The file lives on the learner's node; the usual case is that this is the same node.
        if self.learners is not None and self.transport == "shm" and self.learners.actors:
            try:
                ray.get(self.learners.actors[0].call.remote(_unlink, self.path))
            except ray.exceptions.RayError:  # the learner died: remove it from here instead
                _unlink(None, self.path)


def _unlink(_: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ------------------------------------------------------------------------- NCCL (GPU)


def _engine_rpc(engine: Any, method: str, args: tuple) -> list[Any]:
    return engine.llm.collective_rpc(method, args=args)


def _engine_world_size(engine: Any) -> int:
    """vLLM workers behind one engine (tensor x pipeline parallel)."""
    return len(engine.llm.collective_rpc("rrr_ping"))


def _sender_address(actor: Any) -> tuple[str, int]:
    from learner.distributed import free_address

    return free_address()


def _sender_init(actor: Any, address: str, port: int, world_size: int) -> None:
    if actor.worker.rank != 0:
        return
    from vllm.distributed.weight_transfer.nccl_common import trainer_init

    # vLLM's own trainer-side helper: StatelessProcessGroup rank 0 + PyNcclCommunicator.
    actor._sync = {
        "comm": trainer_init(
            {"master_address": address, "master_port": port, "world_size": world_size}
        ),
        "buffers": None,
    }


def _weight_metas(worker: Any) -> list[tuple[str, Any, tuple[int, ...]]]:
    """(name, dtype, full shape) in iter_weights order, without gathering ZeRO-3 shards."""
    metas, seen = [], set()
    module = getattr(worker.engine.module, "module", worker.engine.module)
    if worker.backend == "deepspeed" and worker.cfg.zero_stage == 3:
        for name, p in module.named_parameters():
            metas.append((name, p.dtype, tuple(getattr(p, "ds_shape", p.shape))))
        return metas
    for name, t in worker.iter_weights():
        if name not in seen:
            seen.add(name)
            metas.append((name, t.dtype, tuple(t.shape)))
    return metas


def _sender_plan(actor: Any, bucket_bytes: int) -> list[dict] | None:
    if actor.worker.rank != 0:
        return None
    return to_wire(plan_buckets(_weight_metas(actor.worker), bucket_bytes))


def _sender_broadcast(actor: Any, plan_wire: list[dict]) -> dict[str, float]:
    """Pack bucket k+1 while bucket k is on the wire: two CUDA streams, two buffers."""
    import torch

    worker = actor.worker
    weights = worker.iter_weights()  # every rank iterates (ZeRO-3 gathers are collectives)
    gather_s = wire_s = 0.0
    buckets = from_wire(plan_wire)
    if worker.rank != 0:
        for _ in weights:
            pass
        return {"gather_s": 0.0, "wire_s": 0.0}
    state = actor._sync
    comm = state["comm"]
    size = max(b.nbytes for b in buckets)
    if state["buffers"] is None or state["buffers"][0].numel() < size:
        state["buffers"] = [torch.empty(size, dtype=torch.uint8, device="cuda") for _ in range(2)]
        state["streams"] = [torch.cuda.Stream() for _ in range(2)]
    bufs, streams = state["buffers"], state["streams"]
    for i, bucket in enumerate(buckets):
        slot = i % 2
        t0 = time.perf_counter()
        tensors = {}
        for entry in bucket.entries:
            name, t = next(weights)
            if name != entry.name:
                raise RuntimeError(f"weight order changed: planned {entry.name}, got {name}")
            tensors[name] = t
        gather_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        stream = streams[slot]
        stream.synchronize()  # bucket i-2's broadcast from this buffer has finished
        stream.wait_stream(torch.cuda.current_stream())  # the gathered tensors are ready
        with torch.cuda.stream(stream):
            buf = pack_bucket(bucket, tensors, out=bufs[slot])
            comm.broadcast(buf, src=0, stream=stream)
        wire_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in streams:
        s.synchronize()
    wire_s += time.perf_counter() - t0
    return {"gather_s": gather_s, "wire_s": wire_s}


class NcclSync:
    name = "nccl"

    def __init__(self, bucket_bytes: int = 512 << 20) -> None:
        self.bucket_bytes = bucket_bytes
        self.learners: Any = None
        self.fleet: Any = []
        self.workers: list[Any] = []

    def init(self, learners: Any, fleet: Any) -> None:
        self.learners, self.fleet, self.workers = learners, fleet, _handles(fleet)
        address, port = ray.get(learners.actors[0].call.remote(_sender_address))
        sizes = ray.get([w.__ray_call__.remote(_engine_world_size) for w in self.workers])
        world = 1 + sum(sizes)
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        # Both sides block in the NCCL rendezvous, so start them together.
        receivers = [
            w.__ray_call__.remote(
                _engine_rpc, "rrr_init_broadcast_group", (address, port, off, world)
            )
            for w, off in zip(self.workers, offsets)
        ]
        senders = [a.call.remote(_sender_init, address, port, world) for a in learners.actors]
        ray.get(senders + receivers)

    def push(self) -> SyncTimings:
        t_start = time.perf_counter()
        plan = ray.get(self.learners.actors[0].call.remote(_sender_plan, self.bucket_bytes))
        t_recv = time.perf_counter()
        receivers = [
            w.__ray_call__.remote(_engine_rpc, "rrr_receive_buckets", (plan,)) for w in self.workers
        ]
        senders = [a.call.remote(_sender_broadcast, plan) for a in self.learners.actors]
        sent = ray.get(senders)[0]
        ray.get(receivers)
        load_s = time.perf_counter() - t_recv - sent["gather_s"] - sent["wire_s"]
        ray.get([w.reset_prefix_cache.remote() for w in self.workers])
        return SyncTimings(
            gather_s=sent["gather_s"],
            wire_s=sent["wire_s"],
            load_s=max(load_s, 0.0),
            bytes=sum(b["nbytes"] for b in plan),
            backend=self.name,
            transport="nccl",
            total_s=time.perf_counter() - t_start,
        )

    def reconnect(self) -> None:
        """A new worker cannot join the running NCCL group: build a fresh group with every
        current worker (learner side re-initialises its sender too)."""
        self.init(self.learners, self.fleet)

    def close(self) -> None:
        self.workers = []
