"""Learner step on CPU: one torch thread (what Ray's OMP_NUM_THREADS gives a one-CPU actor)
against `learner.cpu_threads: 0` (the node's cores while the rollout waits for the step).

Same worker, same batch, same process; the steps alternate between the two thread counts, so
load from other processes hits both alike. Prints each side's median and fastest step and the
ratio of both.

  .venv/bin/python bench/learner_threads.py [--shape smoke|apigen] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learner import SHAPES, make_groups
from rrr.core.config import LearnerConfig
from rrr.core.cpus import usable_cpus
from rrr.core.models import resolve_model
from rrr.core.train_batch import build_train_batch
from rrr.learner.distributed import cpu_threads
from rrr.learner.packing import default_budget, shard_groups
from rrr.learner.worker import LearnerWorker


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--shape", choices=list(SHAPES), default="smoke")
    p.add_argument("--steps", type=int, default=3, help="timed steps per side (after 1 warm-up)")
    args = p.parse_args()

    path = resolve_model(args.model)
    shape = SHAPES[args.shape]
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(path).vocab_size
    batch = build_train_batch(*make_groups(shape, vocab), shape.group_size)
    micro = shard_groups(batch, 1, default_budget(batch, shape.micro_batch_size))[0]
    cfg = LearnerConfig(lr=1e-6, lr_scheduler="constant", warmup_ratio=0.0, max_steps=100,
                        micro_batch_size=shape.micro_batch_size, kl_coef=0.001)  # fmt: skip
    worker = LearnerWorker(path, cfg)
    auto = cpu_threads(0, share_cores=True, reserved=cfg.num_cpus_per_learner, ranks=1,
                       cores=len(usable_cpus()))  # fmt: skip
    sides = {"1 thread (Ray's default)": 1, f"{auto} threads (cpu_threads: 0)": auto}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.steps + 1):
        line = []
        for name, threads in sides.items():
            torch.set_num_threads(threads)
            seconds = worker.step(micro)["step_s"]
            if i:  # the first step of each side warms up allocators and kernels
                times[name].append(seconds)
            line.append(f"{name} {seconds:.2f}s")
        print(f"step {i}: " + "  ".join(line) + f"  (load {os.getloadavg()[0]:.1f})", flush=True)

    print(f"\n[{args.shape}] {batch.size} episodes, {batch.num_tokens} tokens/step, {path}")
    med = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    for name in sides:
        print(f"  {name:28s} median {med[name]:7.2f} s/step (min {best[name]:7.2f})")
    one, many = list(sides)
    print(f"  speed-up: {med[one] / med[many]:.2f}x (min: {best[one] / best[many]:.2f}x)")


if __name__ == "__main__":
    main()
