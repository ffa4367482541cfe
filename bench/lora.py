"""LoRA against full fine-tuning on the same model, in one run (issue 30):

  push    bytes and seconds of one weight sync, learner -> a vLLM rollout worker, over the
          collective backend (gloo): the full model into a plain engine, the adapter alone into
          an engine that serves adapters. Goal: the adapter's push moves >= 20x fewer bytes.
  step    the learner's optimizer step on the smoke preset's batch shape (bench/learner.py):
          median seconds and peak memory above the step's start (CPU: RSS sampled every few
          ms), full and LoRA steps alternating so that load from other processes hits both.

Both sides get the same model, batch, micro-batching and KL term (the full side's reference is
a second model; LoRA's is the base with the adapter off). The 7B's figures, which this machine
cannot run, come from `rrr plan` (configs/qwen2.5-7b-countdown-lora-1xh100.yaml).

  .venv/bin/python bench/lora.py [--model smollm2-135m] [--ranks 8,64] [--repeats 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUSH_GOAL = 20.0  # the adapter's push moves at least this many times fewer bytes


def bench_push(path: str, ranks: list[int], repeats: int) -> dict[str, dict[str, float]]:
    import ray

    from rrr.actors.rollout_worker import RolloutWorker
    from rrr.core.config import LearnerConfig, LoraConfig, SyncConfig
    from rrr.core.lora import adapter_config
    from rrr.learner.group import LearnerGroup
    from rrr.learner.weight_sync import CollectiveSync

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    learner = LearnerConfig(kl_coef=0.0, gradient_checkpointing=False)
    out: dict[str, dict[str, float]] = {}
    for rank in [0, *ranks]:  # one side at a time: two engines and learners at most in memory
        lora = LoraConfig(rank=rank)
        serve = {"lora": adapter_config(lora, path), "max_lora_rank": max(8, rank)} if rank else {}
        worker = RolloutWorker.options(num_cpus=1).remote(
            model_path=path, max_model_len=1024, kv_cache_gib=1, seed=0, **serve
        )
        group = LearnerGroup(replace(learner, lora=lora), path)
        ray.get(worker.ping.remote())
        sync = CollectiveSync(SyncConfig(bucket_mb=64))
        sync.init(group, [worker])
        sync.push()  # warm-up: first touch of buffers
        timings = [sync.push() for _ in range(repeats)]
        sync.close()
        group.shutdown()
        ray.kill(worker)
        name = f"lora r={rank}" if rank else "full"
        out[name] = {
            "bytes": timings[0].bytes,
            "total_s": statistics.median(t.total_s for t in timings),
            "wire_s": statistics.median(t.wire_s for t in timings),
            "load_s": statistics.median(t.load_s for t in timings),
        }
        print(f"[push] {name}: {out[name]}", flush=True)
    ray.shutdown()
    return out


def bench_step(path: str, ranks: list[int], steps: int) -> dict[str, dict[str, float]]:
    import torch

    from bench.learner import SHAPES, PeakMemory, make_groups
    from rrr.core.config import LearnerConfig, LoraConfig
    from rrr.core.train_batch import build_train_batch
    from rrr.learner.packing import default_budget, shard_groups
    from rrr.learner.worker import LearnerWorker

    shape = SHAPES["smoke"]
    batch = build_train_batch(*make_groups(shape, 49152), shape.group_size)
    micro = shard_groups(batch, 1, default_budget(batch, shape.micro_batch_size))[0]
    base = LearnerConfig(lr=1e-6, lr_scheduler="constant", warmup_ratio=0.0, max_steps=100,
                         micro_batch_size=shape.micro_batch_size, kl_coef=0.001)  # fmt: skip
    sides = {"full": LearnerWorker(path, base)}
    for rank in ranks:
        sides[f"lora r={rank}"] = LearnerWorker(path, replace(base, lora=LoraConfig(rank=rank)))
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(steps + 1):
        for name, worker in sides.items():
            seconds = worker.step(micro)["step_s"]
            if i:  # the first step of each side warms allocators up
                times[name].append(seconds)
        print(f"[step] {i}: " + "  ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items() if t)
              + f"  (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    out = {}
    for name, worker in sides.items():
        with PeakMemory(torch.device("cpu")) as mem:
            worker.step(micro)
        trained = sum(p.numel() for p in worker.hf_model.parameters() if p.requires_grad)
        out[name] = {"step_s": statistics.median(times[name]), "min_s": min(times[name]),
                     "peak_mib": mem.peak_mib, "trained_params": trained}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--ranks", default="8,64", help="LoRA ranks to compare with full (comma list)")
    p.add_argument("--repeats", type=int, default=3, help="pushes per side (after a warm-up)")
    p.add_argument("--steps", type=int, default=3, help="learner steps per side (after one)")
    args = p.parse_args()

    from rrr.core.models import resolve_model

    path = resolve_model(args.model)
    ranks = [int(r) for r in args.ranks.split(",")]
    push = bench_push(path, ranks, args.repeats)
    step = bench_step(path, ranks, args.steps)

    full = push["full"]
    print(f"\nmodel {Path(path).name}; push: collective (gloo) to 1 vLLM worker, median of "
          f"{args.repeats}; step: smoke shape, median of {args.steps}")  # fmt: skip
    print(f"  {'side':<10} {'push MB':>9} {'push s':>8} {'bytes x':>8} {'time x':>7} "
          f"{'step s':>7} {'peak MiB':>9} {'trained':>12}")  # fmt: skip
    for name in push:
        b, s = push[name], step[name]
        print(f"  {name:<10} {b['bytes'] / 1e6:9.1f} {b['total_s']:8.3f} "
              f"{full['bytes'] / b['bytes']:7.1f}x {full['total_s'] / b['total_s']:6.1f}x "
              f"{s['step_s']:7.2f} {s['peak_mib']:9.0f} {s['trained_params']:12,}")  # fmt: skip
    for rank in ranks:
        ratio = full["bytes"] / push[f"lora r={rank}"]["bytes"]
        verdict = "PASS" if ratio >= PUSH_GOAL else "below the goal"
        print(f"  r={rank}: the push moves {ratio:.1f}x fewer bytes (goal >= {PUSH_GOAL:g}x: "
              f"{verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
