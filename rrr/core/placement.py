"""Where a run's actors land on a cluster, computed without starting anything.

The rules are Ray's as rrr uses them (rrr/driver/stack.py, learner/group.py,
actors/rollout_worker.py): the driver runs on the head node; the L learner ranks form one
placement group with strategy PACK (as few nodes as possible: a cheap all-reduce); each
rollout worker is one actor holding `rollout.num_gpus_per_worker` GPUs (its vLLM engine's
tensor-parallel group); verifier actors take CPU anywhere. GPUs are devices with a capacity of
1.0, so fractional requests (the colocated single-GPU preset) share one device as Ray packs them.

`place(cfg, cluster)` returns every actor with its node and devices, or raises PlacementError
naming the key to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from rrr.core.config import Config
from rrr.core.errors import RRRError
from rrr.core.weights.backend import DeviceRef, choose_sync_backend

VERIFIER_CPUS = 0.5  # each verifier actor's CPU reservation (actors/verifier_pool.py)
HEAD_CPUS = 16  # the CPU head of cluster/ray-cluster.yaml (m6i.4xlarge)
GPU_NODE_CPUS = 96  # CPUs Ray offers on a GPU node unless the spec says (p5.48xlarge: 192)
EPS = 1e-9


class PlacementError(RRRError, ValueError):
    """The run cannot be placed on the cluster; the message names the key to change."""


@dataclass
class Node:
    name: str
    cpus: float
    gpu_mem_gib: float = 0.0
    gpus: list[float] = field(default_factory=list)  # free share of each device

    @property
    def free_gpus(self) -> float:
        return sum(self.gpus)


@dataclass
class Cluster:
    """Nodes as Ray sees them; `spec` is the string it was parsed from."""

    spec: str
    nodes: list[Node]
    # A local Ray (`rrr train` without a cluster) is started with at least the logical CPUs the
    # actors reserve (rrr/driver/stack.py): on a laptop they take turns on the real cores.
    grows_cpus: bool = False

    @property
    def has_gpus(self) -> bool:
        return any(n.gpus for n in self.nodes)

    @property
    def gpu_mem_gib(self) -> float:
        return max((n.gpu_mem_gib for n in self.nodes if n.gpus), default=0.0)


def parse_cluster(spec: str, local_cpus: int = 2) -> Cluster:
    """`cpu` or `cpu:N` (one CPU machine, N cores; default this machine's), or
    `NxG@MEM[:CPUS]` (a CPU head plus N nodes of G GPUs with MEM GiB each, CPUS per node),
    e.g. `1x8@80` for one 8xH100 node (cluster/ray-cluster.yaml), `1x1@80` for one GPU."""
    spec = spec.strip()
    cpu = re.fullmatch(r"cpu(?::(\d+))?", spec)
    if cpu:
        return Cluster(spec, [Node("local", float(cpu[1] or local_cpus))], grows_cpus=True)
    gpu = re.fullmatch(r"(\d+)x(\d+)@(\d+(?:\.\d+)?)(?::(\d+))?", spec)
    if not gpu:
        raise PlacementError(
            f"--cluster {spec!r}: expected 'cpu', 'cpu:N' or 'NxG@MEM[:CPUS]' (e.g. 1x8@80)"
        )
    count, per_node, mem = int(gpu[1]), int(gpu[2]), float(gpu[3])
    cpus = float(gpu[4] or GPU_NODE_CPUS)
    nodes = [Node("head", HEAD_CPUS)]
    nodes += [Node(f"gpu-node-{i}", cpus, mem, [1.0] * per_node) for i in range(count)]
    return Cluster(spec, nodes)


def required(cfg: Config) -> dict[str, float]:
    """Logical resources the run's actors reserve (rollout, learner, verifier pool)."""
    r, lr, v = cfg.rollout, cfg.learner, cfg.verifier
    gpus = r.num_workers * r.num_gpus_per_worker + lr.num_learners * lr.num_gpus_per_learner
    cpus = r.num_workers * r.num_cpus_per_worker + lr.num_learners * lr.num_cpus_per_learner
    return {"CPU": cpus + v.num_workers * VERIFIER_CPUS, "GPU": gpus}


def colocated_bundles(cfg: Config) -> list[dict[str, float]]:
    """`cluster.colocate`: learner rank i and rollout worker i share bundle i of one placement
    group (one GPU when their fractions add up to at most 1), so they land together on every
    cluster, not only on a one-GPU machine."""
    r, lr = cfg.rollout, cfg.learner
    if r.num_workers != lr.num_learners:
        raise PlacementError(
            f"cluster.colocate pairs learner rank i with rollout worker i: "
            f"rollout.num_workers={r.num_workers} must equal learner.num_learners="
            f"{lr.num_learners}"
        )
    if r.tensor_parallel_size > 1 and r.num_gpus_per_worker > 0:
        # vLLM starts TP workers through its own Ray executor, which would claim GPUs inside
        # our placement group's bundle, not beside the learner's share of the same devices.
        raise PlacementError(
            f"cluster.colocate with rollout.tensor_parallel_size={r.tensor_parallel_size} is "
            "not supported (vLLM's Ray executor would place its TP workers itself): set "
            "rollout.tensor_parallel_size=1, or cluster.colocate=false with whole GPUs per "
            "rollout worker"
        )
    gpus = r.num_gpus_per_worker + lr.num_gpus_per_learner
    if gpus > 1 + EPS and (r.num_gpus_per_worker % 1 or lr.num_gpus_per_learner % 1):
        raise PlacementError(
            f"cluster.colocate: rollout.num_gpus_per_worker ({r.num_gpus_per_worker:g}) + "
            f"learner.num_gpus_per_learner ({lr.num_gpus_per_learner:g}) share one GPU and "
            "must add up to at most 1"
        )
    bundle = {"CPU": r.num_cpus_per_worker + lr.num_cpus_per_learner}
    if gpus:
        bundle["GPU"] = gpus
    return [dict(bundle) for _ in range(r.num_workers)]


@dataclass
class Placed:
    """One actor: its role, rank, node, the devices it holds (index, share) and its CPUs."""

    role: str
    rank: int
    node: str
    cpus: float
    devices: list[tuple[int, float]] = field(default_factory=list)


def _take_devices(node: Node, gpus: float) -> list[tuple[int, float]] | None:
    """Whole devices for gpus >= 1, else a share of one device (Ray's fractional GPUs)."""
    if gpus <= 0:
        return []
    if gpus >= 1:
        whole = [i for i, free in enumerate(node.gpus) if free >= 1 - EPS]
        if len(whole) < math.ceil(gpus - EPS):
            return None
        picked = whole[: math.ceil(gpus - EPS)]
        for i in picked:
            node.gpus[i] = 0.0
        return [(i, 1.0) for i in picked]
    # Fractional: the fullest device that still fits, so shares pack onto one GPU.
    fits = [i for i, free in enumerate(node.gpus) if free >= gpus - EPS]
    if not fits:
        return None
    i = min(fits, key=lambda j: node.gpus[j])
    node.gpus[i] -= gpus
    return [(i, gpus)]


def _place_one(nodes: list[Node], role: str, rank: int, cpus: float, gpus: float) -> Placed:
    for node in nodes:
        if node.cpus + EPS < cpus or node.free_gpus + EPS < gpus:
            continue
        devices = _take_devices(node, gpus)
        if devices is None:
            continue
        node.cpus -= cpus
        return Placed(role, rank, node.name, cpus, devices)
    raise _unplaceable(role, cpus, gpus)


def _unplaceable(role: str, cpus: float, gpus: float) -> PlacementError:
    keys = {
        "learner": "learner.num_learners / learner.num_gpus_per_learner / "
        "learner.num_cpus_per_learner",
        "rollout": "rollout.num_workers / rollout.num_gpus_per_worker / "
        "rollout.num_cpus_per_worker",
        "verifier": "verifier.num_workers",
    }[role]
    return PlacementError(
        f"no node has room for a {role} actor ({cpus:g} CPU, {gpus:g} GPU) after the actors "
        f"before it: change {keys}, or plan for a larger cluster"
    )


def place(cfg: Config, cluster: Cluster) -> list[Placed]:
    """Learners first (one PACK placement group), then rollout workers, then verifiers, in the
    order rrr starts them. A CPU-only cluster places GPU-less actors only."""
    r, lr = cfg.rollout, cfg.learner
    gpus_asked = r.num_workers * r.num_gpus_per_worker + lr.num_learners * lr.num_gpus_per_learner
    if gpus_asked and not cluster.has_gpus:
        raise PlacementError(
            f"the config asks for {gpus_asked:g} GPUs (rollout.num_gpus_per_worker, "
            f"learner.num_gpus_per_learner) but cluster {cluster.spec!r} has none"
        )
    nodes = [Node(n.name, n.cpus, n.gpu_mem_gib, list(n.gpus)) for n in cluster.nodes]
    if cluster.grows_cpus:
        nodes[0].cpus = max(nodes[0].cpus, math.ceil(required(cfg)["CPU"]))
    placed = _place_learners(nodes, cfg)
    placed += [
        _place_one(_gpu_first(nodes, r.num_gpus_per_worker), "rollout", i,
                   r.num_cpus_per_worker, r.num_gpus_per_worker)
        for i in range(r.num_workers)
    ]  # fmt: skip
    placed += [
        _place_one(nodes, "verifier", i, VERIFIER_CPUS, 0.0)
        for i in range(cfg.verifier.num_workers)
    ]
    return placed


def _gpu_first(nodes: list[Node], gpus: float) -> list[Node]:
    """GPU actors look at GPU nodes only; CPU actors try the head first (Ray's default spreads,
    but on a cluster of this shape the head is where CPU-only work belongs)."""
    return [n for n in nodes if n.gpus] if gpus > 0 else nodes


def _place_learners(nodes: list[Node], cfg: Config) -> list[Placed]:
    """PACK: all ranks on one node when one holds them, else fill nodes in order."""
    lr = cfg.learner
    candidates = _gpu_first(nodes, lr.num_gpus_per_learner)
    need_cpu, need_gpu = lr.num_learners * lr.num_cpus_per_learner, lr.num_learners * (
        lr.num_gpus_per_learner
    )
    whole = [n for n in candidates if n.cpus + EPS >= need_cpu and n.free_gpus + EPS >= need_gpu]
    order = whole[:1] + [n for n in candidates if n not in whole[:1]]
    return [
        _place_one(order, "learner", i, lr.num_cpus_per_learner, lr.num_gpus_per_learner)
        for i in range(lr.num_learners)
    ]


def shared_devices(placed: list[Placed]) -> dict[tuple[str, int], list[str]]:
    """(node, device) -> the actors on it, for devices held by more than one actor."""
    holders: dict[tuple[str, int], list[str]] = {}
    for p in placed:
        for index, _ in p.devices:
            holders.setdefault((p.node, index), []).append(f"{p.role}{p.rank}")
    return {k: v for k, v in holders.items() if len(v) > 1}


def sync_backend(requested: str, placed: list[Placed], gpu: bool) -> tuple[str, str]:
    """choose_sync_backend for a planned placement (`rrr plan`)."""
    kind = "cuda" if gpu else "cpu"

    def refs(p: Placed) -> list[DeviceRef]:
        if not p.devices:
            return [DeviceRef(p.node, kind)]
        return [DeviceRef(p.node, kind, f"{p.node}:{i}") for i, _ in p.devices]

    learner0 = next(p for p in placed if p.role == "learner" and p.rank == 0)
    receivers = [r for p in placed if p.role == "rollout" for r in refs(p)]
    try:
        return choose_sync_backend(requested, refs(learner0)[0], receivers)
    except ValueError as exc:
        raise PlacementError(str(exc)) from exc
