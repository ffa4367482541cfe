"""Weight-sync seconds (learner -> one vLLM rollout worker, object_store backend) vs the bound of
one plain in-memory copy of the same bytes (torch.clone of every tensor), measured in one run.

Transports compared: "shm" (one safetensors file in /dev/shm, read by vLLM), "object"
(bytes in Ray's object store, one /dev/shm file written on the receiving node) and, once, the
naive carrier (the bytes handed to vLLM's own RPC via load_weights_bytes).

  .venv/bin/python bench/sync.py [--model smollm2-135m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bound(state) -> float:
    import torch

    t0 = time.perf_counter()
    copies = {k: torch.clone(v) for k, v in state.items()}
    elapsed = time.perf_counter() - t0
    del copies
    return elapsed


def _rpc_bytes_push(engine, blob) -> float:
    t0 = time.perf_counter()
    engine.load_weights_bytes(bytes(blob))
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    import ray
    from safetensors.torch import save

    from actors.rollout_worker import RolloutWorker
    from learner.group import LearnerGroup
    from learner.weight_sync import ObjectStoreSync
    from rrr.config import LearnerConfig
    from rrr.models import resolve_model

    path = resolve_model(args.model)
    # A private local Ray, even if another cluster runs on this machine.
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    worker = RolloutWorker.options(num_cpus=1).remote(
        model_path=path, max_model_len=2048, kv_cache_gib=1, seed=0
    )
    learners = LearnerGroup(LearnerConfig(kl_coef=0.0, gradient_checkpointing=False), path)
    ray.get(worker.ping.remote())

    state = learners.state_dict()  # what one sync moves (tied weights once)
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    bounds = [_bound(state) for _ in range(args.repeats)]
    rows: dict[str, list] = {}
    for transport in ("shm", "object"):
        sync = ObjectStoreSync(transport=transport)
        sync.init(learners, [worker])
        rows[transport] = [sync.push() for _ in range(args.repeats)]
        sync.close()
    blob = ray.put(np.frombuffer(save({k: v.contiguous() for k, v in state.items()}), np.uint8))
    rpc_s = ray.get(worker.__ray_call__.remote(_rpc_bytes_push, blob))

    bound = statistics.median(bounds)
    print(f"\nmodel {Path(path).name}: {nbytes / 1e6:.1f} MB per sync, {len(state)} tensors")
    print(f"  bound (torch.clone of every tensor): {bound:.3f}s = {nbytes / bound / 1e9:.2f} GB/s")
    for transport, timings in rows.items():
        tot = statistics.median(t.total_s for t in timings)
        g = statistics.median(t.gather_s for t in timings)
        w = statistics.median(t.wire_s for t in timings)
        ld = statistics.median(t.load_s for t in timings)
        print(
            f"  object_store/{transport}: total {tot:.3f}s (gather {g:.3f} wire {w:.3f} "
            f"load {ld:.3f}) = {tot / bound:.1f}x bound"
        )
    print(
        f"  vLLM RPC carrying the bytes (load_weights_bytes): {rpc_s:.3f}s = "
        f"{rpc_s / bound:.1f}x bound"
    )
    learners.shutdown()
    ray.kill(worker)
    ray.shutdown()


if __name__ == "__main__":
    main()
