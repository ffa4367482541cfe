"""Weight sync learner -> every vLLM worker of every rollout worker, behind one typed interface.

    link = WeightLink(cfg.sync, learners, fleet)  # decides the backend, connects the sync
    timings = link.push()                         # after every cfg.sync.every_n_steps; a worker
                                                  # found dead is replaced and pushed to again
    link.heal()                                   # the fleet replaced a worker mid-generate
    link.close()

The driver only calls actor methods by name: the sender half lives in each learner rank
(`LearnerActor.sync_*`, learner/sync_sender.py), the receiver half in each rollout worker
(`RolloutWorker.sync_*`, actors/weight_endpoint.py) and its vLLM workers
(actors/worker_extension.py); both speak the wire protocol of rrr/core/weights/.
Both halves read the weights through one manifest (learner/manifest.py).

The backend is decided from where the weights are (each actor reports its node and device), not
from the driver's own machine, which on a cluster is a GPU-less head:
  collective    learner rank 0 broadcasts packed buckets to every vLLM worker over a
                torch.distributed group made for the purpose: gloo on CPU, NCCL on GPU.
                Every learner rank walks the manifest (ZeRO-3 gathers); only rank 0 sends.
  object_store  where no group can form, or where NCCL would need two ranks on one GPU
                (learner and vLLM colocated): rank 0 writes one safetensors file in /dev/shm
                (every rollout worker on its node) or one Ray object (any placement).

Every wait on a sync actor is bounded by `sync.timeout_s`: a rollout worker that does not
answer is a SyncError naming what hung, a learner rank that does not a LearnerLost (its group is
then restarted whole, learner.max_restarts); a dead rollout worker surfaces as Ray's actor error,
which WeightLink answers by replacing it and pushing again. Leaving a group aborts it
(rrr/core/weights/group.py says why), and everyone leaves at once under one deadline, so a
reconnect after a death costs at most two sync.timeout_s, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import ray

from rrr.core.actor_calls import ACTOR_GONE, collect_later, wait_all
from rrr.core.config import SyncConfig
from rrr.core.errors import RRRError
from rrr.core.shm import SHM_DIR, choose_transport
from rrr.core.weights.backend import DeviceRef, choose_sync_backend, collective_backend

log = logging.getLogger(__name__)


class SyncError(RRRError, RuntimeError):
    """The weight sync cannot run (no common group) or a peer did not answer in time."""


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
    name: str

    def init(self, learners: Any, fleet: Any) -> None: ...

    def push(self) -> SyncTimings: ...

    def reconnect(self) -> None:
        """Rollout workers were replaced: include the new ones in the next push."""
        ...

    def close(self) -> None: ...


def _handles(fleet: Any) -> list[Any]:
    """A RolloutFleet (read at every call: it replaces workers that die), or a list."""
    return list(getattr(fleet, "workers", fleet))


def _wait(refs: list[Any], what: str, timeout_s: float) -> list[Any]:
    """The peers' results within sync.timeout_s: a peer that never answers (stuck in a
    collective with a dead one) becomes a SyncError naming the step, never a hang. An actor
    death propagates as Ray raises it (ACTOR_GONE), so the caller can replace the worker."""
    return wait_all(
        refs,
        timeout_s=timeout_s,
        on_timeout=lambda pending: SyncError(
            f"{what}: {pending} of {len(refs)} peers did not answer within "
            f"sync.timeout_s={timeout_s:g} s (a peer died or hangs in the group)"
        ),
    )


def leave_all(refs: list[Any], timeout_s: float) -> int:
    """Wait for the members' `sync_close` calls under one deadline; how many did not answer in
    time. Every answer is collected, an error too (a dead member's is expected, and one never
    collected is printed by Ray as an "Unhandled error" later), the late ones when they come."""
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    collect_later(refs)
    return len(pending)


def endpoints(learners: Any, fleet: Any, timeout_s: float) -> tuple[dict, list[dict]]:
    """Learner rank 0's device info and every rollout worker's (node + its vLLM workers)."""
    (learner,) = learners.ranks.gather(
        [learners.actors[0].sync_info.remote()], "a sync handshake", timeout_s=timeout_s
    )
    receivers = _wait([w.sync_info.remote() for w in _handles(fleet)], "sync handshake", timeout_s)
    return learner, receivers


def decide(requested: str, learner: dict, receivers: list[dict]) -> tuple[str, str]:
    """The backend for these endpoints (rrr.core.weights.backend.choose_sync_backend, the
    rule `rrr plan` applies to a planned placement); SyncError when the requested one cannot
    work."""
    mine = DeviceRef(learner["node"], learner["device"], learner.get("gpu_uuid"))
    theirs = [DeviceRef(r["node"], w["device"], w.get("gpu_uuid"))
              for r in receivers for w in r["workers"]]  # fmt: skip
    try:
        return choose_sync_backend(requested, mine, theirs)
    except ValueError as exc:
        raise SyncError(str(exc)) from exc


def make_weight_sync(cfg: SyncConfig, learners: Any, fleet: Any) -> WeightSync:
    """Ask the actors where their weights are, pick the backend, and connect it."""
    learner, receivers = endpoints(learners, fleet, cfg.timeout_s)
    backend, why = decide(cfg.backend, learner, receivers)
    sync: WeightSync = CollectiveSync(cfg) if backend == "collective" else ObjectStoreSync(cfg)
    sync.init(learners, fleet)
    workers = sum(len(r["workers"]) for r in receivers)
    log.info("weight sync: %s (%s); %d learner rank(s) -> %d rollout worker(s), %d vLLM "
             "worker(s)", sync.describe(), why, len(learners.actors), len(receivers), workers)  # type: ignore[attr-defined]  # fmt: skip
    return sync


class WeightLink:
    """The driver's one handle on the weights between the learner group and the rollout fleet:
    it connects the sync once and owns the recovery of every push.

    - `push()`: every rollout worker gets the learner's weights. A worker found dead on the way
      is replaced (without the fleet's own `on_restart`: this push is its weights) and the push
      repeated once for all. A dead learner raises LearnerLost from the sync itself.
    - `heal()`: the fleet replaced a worker on its own (it died mid-generate): re-form the
      group with the new worker and push the weights the fleet already holds, so the lost
      shard is sampled by the same version as the rest.
    """

    def __init__(self, cfg: SyncConfig, learners: Any, fleet: Any) -> None:
        self.fleet = fleet
        self.sync = make_weight_sync(cfg, learners, fleet)  # logs backend, ranks, workers

    def push(self) -> SyncTimings:
        try:
            timings = self.sync.push()
        except ACTOR_GONE:
            if not self.fleet.replace_dead(notify=False):
                raise
            timings = self.sync.push()
        log.info(
            "sync: %s/%s %.0f MiB to %d rollout worker(s): gather %.2fs wire %.2fs load %.2fs "
            "total %.2fs", timings.backend, timings.transport, timings.bytes / 2**20,
            len(self.fleet.workers), timings.gather_s, timings.wire_s, timings.load_s,
            timings.total_s,
        )  # fmt: skip
        return timings

    def heal(self) -> None:
        self.sync.reconnect()
        self.sync.push()

    def close(self) -> None:
        self.sync.close()


# ---------------------------------------------------------------------------- collective


class CollectiveSync:
    """One torch.distributed group: rank 0 = learner rank 0, then every vLLM worker."""

    name = "collective"

    def __init__(self, cfg: SyncConfig) -> None:
        self.bucket_bytes = cfg.bucket_mb << 20
        self.timeout_s = cfg.timeout_s
        self.learners: Any = None
        self.fleet: Any = []
        self.workers: list[Any] = []
        # What the group's plan adds up to (for logs and timings). The plan itself is made once
        # per group by learner rank 0 and kept by the sender and each receiver, never here.
        self.num_buckets = 0
        self.nbytes = 0
        self.wire_dtype = "float32"
        self.group_backend = ""
        self.world_size = 0

    def describe(self) -> str:
        return (
            f"collective over {self.group_backend}, {self.num_buckets} bucket(s) of "
            f"<= {self.bucket_bytes >> 20} MiB in {self.wire_dtype}"
        )

    def init(self, learners: Any, fleet: Any) -> None:
        self.learners, self.fleet = learners, fleet
        self._connect()

    def _connect(self) -> None:
        workers = _handles(self.fleet)
        learner, receivers = endpoints(self.learners, workers, self.timeout_s)
        self.group_backend = collective_backend(learner["device"])
        # Cast to what the engines hold (bf16 for a GPU vLLM), whatever the learner trains in.
        self.wire_dtype = receivers[0]["workers"][0]["dtype"]
        sizes = [len(r["workers"]) for r in receivers]
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        world = self.world_size = 1 + sum(sizes)
        rank0 = self.learners.actors[0]
        ranks = self.learners.ranks
        # Both asked at once, gathered one by one: each ref is rank 0's, as its error must say.
        address = rank0.address.remote()
        prepared = rank0.sync_prepare.remote(self.bucket_bytes, self.wire_dtype)
        ((host, port),) = ranks.gather([address], "a sync setup", timeout_s=self.timeout_s)
        (planned,) = ranks.gather([prepared], "a sync plan", timeout_s=self.timeout_s)
        plan, aliases = planned["buckets"], planned["aliases"]
        # Everyone blocks in the rendezvous until all have joined: start them together. The
        # receivers get the plan here, once; pushes carry only the version.
        refs = [a.sync_join.remote(host, port, world, self.timeout_s) for a in self.learners.actors]
        refs += [
            w.sync_join.remote(host, port, off, world, self.timeout_s, plan, aliases)
            for w, off in zip(workers, offsets)
        ]
        _wait(refs, f"forming the weight-sync group ({world} ranks at {host}:{port})",
              self.timeout_s)  # fmt: skip
        self.workers = workers
        self.num_buckets, self.nbytes = len(plan), sum(b["nbytes"] for b in plan)

    def push(self) -> SyncTimings:
        if _handles(self.fleet) != self.workers:
            self.reconnect()  # the fleet replaced a worker since the group formed
        t_start = time.perf_counter()
        send = [a.sync_broadcast.remote() for a in self.learners.actors]
        version = self.learners.version  # stamped on every sample the workers draw from now
        recv = [w.sync_receive.remote(version) for w in self.workers]
        try:
            _wait(recv, "receiving weights", self.timeout_s)
        except ACTOR_GONE:
            # A rollout worker died mid-push: the learner's broadcast fails too; the caller
            # replaces the worker and reconnects (learners are fine: their gathers completed).
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(send, timeout=self.timeout_s)
            raise
        except ray.exceptions.RayTaskError:
            # A receiver's broadcast failed: when learner rank 0 died, that is why (its peers
            # see the closed connection before Ray reports the death), and it is LearnerLost.
            self.learners.ranks.raise_if_dead(send, "a weight push")
            raise
        sent = self.learners.ranks.gather(send, "a weight push", timeout_s=self.timeout_s)[0]
        total = time.perf_counter() - t_start
        return SyncTimings(
            gather_s=sent["gather_s"],
            wire_s=sent["wire_s"],
            load_s=max(total - sent["gather_s"] - sent["wire_s"], 0.0),
            bytes=self.nbytes,
            backend=self.name,
            transport=self.group_backend,
            total_s=total,
        )

    def reconnect(self) -> None:
        """A new rollout worker cannot join a running group: everyone leaves it and a new one
        forms (new port) with every current worker."""
        self._leave()
        self._connect()

    def _leave(self) -> None:
        """Every member leaves (aborts) at once, under one deadline: a dead member cannot
        leave (the group dies with it), and one that does not answer in time is left behind
        with a warning (its next call fails or times out on its own bound)."""
        refs = [a.sync_close.remote() for a in self.learners.actors]
        refs += [w.sync_close.remote() for w in self.workers]
        stuck = leave_all(refs, self.timeout_s)
        if stuck:
            log.warning("weight sync: %d of %d member(s) did not leave the group within "
                        "sync.timeout_s=%g s", stuck, len(refs), self.timeout_s)  # fmt: skip

    def close(self) -> None:
        if self.learners is not None:
            self._leave()
        self.workers = []


# -------------------------------------------------------------------------- object store


class ObjectStoreSync:
    """Rank 0 serialises the state dict ONCE to safetensors. Transport `shm` (every rollout
    worker on rank 0's node): a file in /dev/shm each vLLM reads with mmap. Transport `object`
    (any placement): the bytes are `ray.put` inside the learner; the driver hands only the
    ObjectRef to each rollout worker, where Ray resolves it zero-copy from its node's store."""

    name = "object_store"

    def __init__(self, cfg: SyncConfig, transport: str = "auto") -> None:
        if transport not in ("auto", "shm", "object"):
            raise ValueError(f"unknown transport {transport!r} (auto | shm | object)")
        self.transport = transport
        self.timeout_s = cfg.timeout_s
        self.learners: Any = None
        self.fleet: Any = []
        self.wire_dtype = "float32"
        self.path = os.path.join(SHM_DIR, f"rrr-weights-{uuid.uuid4().hex[:8]}.safetensors")

    def describe(self) -> str:
        return f"object_store via {self.transport} in {self.wire_dtype}"

    def init(self, learners: Any, fleet: Any) -> None:
        self.learners, self.fleet = learners, fleet
        learner, receivers = endpoints(learners, fleet, self.timeout_s)
        self.wire_dtype = receivers[0]["workers"][0]["dtype"]
        (push_bytes,) = learners.ranks.gather(
            [learners.actors[0].sync_push_bytes.remote(self.wire_dtype)],
            "a sync plan",
            timeout_s=self.timeout_s,
        )
        same_node = all(r["node"] == learner["node"] for r in receivers)
        requested = self.transport
        try:
            self.transport, why = choose_transport(
                requested, same_node, int(learner.get("shm_free", 0)), push_bytes
            )
        except ValueError as exc:
            raise SyncError(f"object_store sync: {exc}") from exc
        if self.transport == "object" and same_node and requested == "auto":  # a fallback
            log.warning("weight sync: the Ray object store instead of %s: %s", SHM_DIR, why)

    def push(self) -> SyncTimings:
        t_start = time.perf_counter()
        workers = _handles(self.fleet)
        refs = [a.sync_export.remote(self.transport, self.path, self.wire_dtype)
                for a in self.learners.actors]  # fmt: skip
        sent = self.learners.ranks.gather(refs, "a weight export", timeout_s=self.timeout_s)[0]
        t0 = time.perf_counter()
        version = self.learners.version  # stamped on every sample the workers draw from now
        if self.transport == "shm":
            _wait([w.load_weights_file.remote(sent["path"], sent["aliases"], version)
                   for w in workers], "loading weights", self.timeout_s)  # fmt: skip
            write_s = 0.0
        else:
            ref = sent["refs"][0]
            loads = _wait([w.sync_load_blob.remote(ref, sent["aliases"], version)
                           for w in workers], "loading weights", self.timeout_s)  # fmt: skip
            del ref
            write_s = max(x["write_s"] for x in loads)
        load_s = time.perf_counter() - t0 - write_s
        return SyncTimings(
            gather_s=sent["gather_s"],
            wire_s=sent["wire_s"] + write_s,
            load_s=load_s,
            bytes=int(sent["bytes"]),
            backend=self.name,
            transport=self.transport,
            total_s=time.perf_counter() - t_start,
        )

    def reconnect(self) -> None:
        """Nothing to set up: a replaced worker is reached through the fleet at the next push
        (its node is assumed to match the transport chosen at init)."""

    def close(self) -> None:
        # The file lives on learner rank 0's node: its sender removes it.
        if self.learners is not None and self.learners.actors:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(self.learners.actors[0].sync_close.remote(), timeout=self.timeout_s)
        with contextlib.suppress(FileNotFoundError):  # a dead learner cannot: try from here
            os.unlink(self.path)
