"""Plan a run without starting anything: where each actor lands, which weight sync it gets,
its bucket plan, and the memory of every GPU (weights, gradients and Adam state per ZeRO
stage, the reference model, logits and activations, vLLM's KV budget). A config that cannot
run on the cluster is refused with the key to change, before anyone waits for a node.

  rrr plan --config configs/qwen2.5-7b-countdown-8xh100.yaml --cluster 1x8@80
  rrr plan --config configs/single-gpu.yaml --cluster 1x1@80
  rrr plan --config configs/smoke-cpu.yaml                    # this machine's CPUs

--cluster: `cpu[:N]` (one CPU machine) or `NxG@MEM[:CPUS]`: a CPU head (the driver's node in
cluster/ray-cluster.yaml) plus N nodes of G GPUs of MEM GiB (e.g. 1x8@80: one 8xH100 node).
"""

from __future__ import annotations

import argparse
import os
import sys

from rrr.core.config import Config, ConfigError
from rrr.core.lora import engine_lora_rank, refuse_unknown_targets
from rrr.core.memory_budget import (
    GIB,
    VLLM_SLEEPING_GIB,
    Budget,
    VllmBudget,
    learner_budget,
    sync_buffer_bytes,
    vllm_budget,
)
from rrr.core.model_shapes import ModelShapeError, model_shape
from rrr.core.placement import (
    PlacementError,
    colocated_bundles,
    parse_cluster,
    place,
    shared_devices,
    sync_backend,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        help="the cluster to plan for (default: this machine's CPUs, `cpu`)",
        default=None,
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        cluster = parse_cluster(args.cluster or "cpu", local_cpus=os.cpu_count() or 1)
        shape = model_shape(cfg.model.name_or_path)
        lines = plan_lines(cfg, cluster, shape)
    except (PlacementError, ModelShapeError, ConfigError) as exc:
        print(f"rrr plan: refused: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def plan_lines(cfg: Config, cluster, shape) -> list[str]:
    """The plan as text; raises PlacementError on a config the cluster cannot run."""
    from rrr.core.weights.wire import plan_buckets  # torch: imported only when planning

    if cfg.cluster.colocate:
        colocated_bundles(cfg)  # the pairing the driver's placement group needs
    check_model_fits(cfg, shape)
    placed = place(cfg, cluster)
    gpu = cluster.has_gpus and any(p.devices for p in placed)
    shared = shared_devices(placed)
    learner_devices = {(p.node, i) for p in placed if p.role == "learner" for i, _ in p.devices}
    colocated = any(k in learner_devices for k in shared)
    if colocated and not cfg.cluster.colocate:
        raise PlacementError(
            "a learner and a rollout worker share a GPU: set cluster.colocate=true (vLLM "
            "sleeps while the learner trains), or give them whole GPUs "
            "(rollout.num_gpus_per_worker, learner.num_gpus_per_learner)"
        )
    if cfg.cluster.colocate and gpu and not colocated:
        raise PlacementError(
            "cluster.colocate=true but no learner shares a GPU with a rollout worker: use "
            "fractional GPUs that add up to 1 (rollout.num_gpus_per_worker + "
            "learner.num_gpus_per_learner), or cluster.colocate=false"
        )
    backend, why = sync_backend(cfg.sync.backend, placed, gpu)
    dtype = "bfloat16" if gpu and cfg.learner.bf16 else "float32"
    lora = cfg.learner.lora
    pushed = shape.lora_tensors(lora.rank, lora.target_modules) if lora.rank else shape.tensors()
    buckets = plan_buckets(((n, dtype, s) for n, s in pushed), cfg.sync.bucket_mb << 20)
    out = [
        f"model      {shape.name}: {shape.params / 1e9:.3f} B parameters, "
        f"{shape.layers} layers, {'tied' if shape.tied else 'untied'} embeddings",
        *lora_lines(cfg, shape),
        f"cluster    {cluster.spec}: "
        + ", ".join(f"{n.name} ({n.cpus:g} CPU, {len(n.gpus)} GPU)" for n in cluster.nodes),
        "",
        "placement  (driver on the head node: " + cluster.nodes[0].name + ")",
    ]
    for p in placed:
        devices = ", ".join(f"GPU{i}" + ("" if share == 1 else f"x{share:g}")
                            for i, share in p.devices) or "-"  # fmt: skip
        out.append(f"  {p.role:<9}{p.rank:>3}  node {p.node:<12} CPU {p.cpus:<4g} {devices}")
    out += [
        "",
        f"sync       {backend} ({why}); {len(buckets)} bucket(s) of <= {cfg.sync.bucket_mb} MiB"
        f", {sum(b.nbytes for b in buckets) / 2**20:,.0f} MiB in {dtype} per push",
    ]
    sync_bytes = (0, 0)
    if backend == "collective":
        sync_bytes = sync_buffer_bytes([b.nbytes for b in buckets], cfg.sync.bucket_mb << 20)
        largest = max(b.nbytes for b in buckets)
        out.append(f"           buffers: {sync_bytes[0] / 2**20:,.0f} MiB on learner rank 0, "
                   f"{sync_bytes[1] / 2**20:,.0f} MiB on each vLLM worker during a push "
                   f"(largest bucket {largest / 2**20:,.0f} MiB)")  # fmt: skip
    out += memory_lines(cfg, cluster, shape, placed, gpu, sync_bytes)
    return out


def lora_lines(cfg: Config, shape) -> list[str]:
    """What a LoRA run trains and pushes (nothing without one)."""
    lora = cfg.learner.lora
    if not lora.rank:
        return []
    trained = shape.lora_params(lora.rank, lora.target_modules)
    return [
        f"lora       r={lora.rank} alpha={lora.alpha:g} on {', '.join(lora.target_modules)}: "
        f"{trained / 1e6:,.1f} M trained parameters ({100 * trained / shape.params:.2f} % of "
        f"the model); vLLM engines built for rank {engine_lora_rank(cfg)}"
    ]


def check_model_fits(cfg: Config, shape) -> None:
    from rrr.core.placement import PlacementError

    refuse_unknown_targets(cfg.learner.lora, set(shape.linear_shapes()), shape.name)

    tp = cfg.rollout.tensor_parallel_size
    if shape.heads % tp or (shape.kv_heads % tp and tp % shape.kv_heads):
        raise PlacementError(
            f"rollout.tensor_parallel_size={tp} does not divide the model's {shape.heads} "
            f"attention heads / {shape.kv_heads} KV heads (vLLM refuses it)"
        )
    gpus = cfg.rollout.num_gpus_per_worker
    if gpus and tp > 1 and gpus != tp:
        raise PlacementError(
            f"rollout.tensor_parallel_size={tp} needs rollout.num_gpus_per_worker={tp}, "
            f"got {gpus:g}"
        )


def memory_lines(
    cfg: Config, cluster, shape, placed, gpu: bool, sync_bytes: tuple[int, int] = (0, 0)
) -> list[str]:
    """Every GPU's budget; `sync_bytes`: the collective sync's buffers (learner rank 0, each
    vLLM worker), allocated outside vLLM's gpu_memory_utilization share."""
    from rrr.core.placement import PlacementError

    if not gpu:
        b = learner_budget(cfg, shape, gpu=False)
        return [
            "",
            f"memory     CPU run: about {b.total:.1f} GiB of host memory per learner rank "
            f"(float32), plus each vLLM engine's rollout.kv_cache_gib={cfg.rollout.kv_cache_gib}",
        ]
    mem = cluster.gpu_mem_gib
    out = ["", f"memory per GPU (GiB of {mem:g}; estimates, rrr/core/memory_budget.py)"]
    on_device: dict[tuple[str, int], list[Budget]] = {}
    for p in placed:
        if not p.devices:
            continue
        budget = learner_budget(cfg, shape) if p.role == "learner" else vllm_budget(cfg, shape, mem)
        extra = sync_bytes[1] if p.role != "learner" else sync_bytes[0] if p.rank == 0 else 0
        if extra:
            budget.parts["sync buffers"] = extra / GIB
        for index, _ in p.devices:
            on_device.setdefault((p.node, index), []).append(budget)
    for (node, index), budgets in sorted(on_device.items()):
        parts = "; ".join(
            f"{b.role}: " + ", ".join(f"{k} {v:.1f}" for k, v in b.parts.items() if v >= 0.05)
            for b in budgets
        )
        peak = device_peak(budgets)
        out.append(f"  {node} GPU{index}: peak {peak:.1f}  ({parts})")
        if peak > mem:
            raise PlacementError(
                f"{node} GPU{index} needs about {peak:.0f} GiB of {mem:g}: "
                + over_budget_hint(cfg, budgets)
            )
        for b in budgets:
            if isinstance(b, VllmBudget):
                if b.kv_tokens < cfg.model.max_model_len:
                    raise PlacementError(
                        f"vLLM's KV cache holds {b.kv_tokens} tokens, less than one "
                        f"model.max_model_len={cfg.model.max_model_len} sequence: raise "
                        "rollout.gpu_memory_utilization or lower model.max_model_len"
                    )
                full = b.kv_tokens // cfg.model.max_model_len
                out.append(f"    vLLM KV cache: {b.kv_tokens:,} tokens ({full} full-length rows)")
    return out


def device_peak(budgets: list[Budget]) -> float:
    """Colocated: while one role computes, the others hold only their resident state (a
    sleeping vLLM almost nothing, the learner its weights and optimizer)."""

    def idle(b: Budget) -> float:
        return VLLM_SLEEPING_GIB if b.role == "vllm" else b.resident

    return max(a.total + sum(idle(b) for b in budgets if b is not a) for a in budgets)


def over_budget_hint(cfg: Config, budgets) -> str:
    roles = {b.role for b in budgets}
    hints = []
    if "learner" in roles:
        if cfg.learner.zero_stage != 3:
            hints.append("learner.zero_stage=3")
        if not cfg.learner.offload_optimizer:
            hints.append("learner.offload_optimizer=true")
        hints.append("a lower learner.micro_batch_size")
        if cfg.learner.num_learners == 1:
            hints.append("more learner.num_learners")
    if "vllm" in roles:
        hints.append("a lower rollout.gpu_memory_utilization")
    return "try " + ", ".join(hints)
