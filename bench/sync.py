"""Weight-sync seconds, learner -> TWO vLLM rollout workers, for each backend, against the bound
of one plain in-memory copy of the same bytes (torch.clone of every tensor), in one run.

  collective        learner rank 0 broadcasts packed buckets over a gloo group to both
                    engines' vLLM workers (learner/sync_sender.py)
  object_store/shm  one safetensors file in /dev/shm that both engines read
  bound             torch.clone of every tensor once (a receiver must at least write the
                    bytes once; two receivers on one machine write them twice, in parallel)

Each push is split into gather (reading the learner's weights), wire (serialise + transport)
and load (vLLM's in-place reload, the same for every backend).

  .venv/bin/python bench/sync.py [--model smollm2-135m] [--repeats 3] [--bucket-mb 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bound(state: dict) -> float:
    import torch

    t0 = time.perf_counter()
    copies = {k: torch.clone(v) for k, v in state.items()}
    elapsed = time.perf_counter() - t0
    del copies
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bucket-mb", type=int, default=64)
    args = p.parse_args()

    import ray

    from rrr.actors.rollout_worker import RolloutWorker
    from rrr.core.config import LearnerConfig, SyncConfig
    from rrr.core.models import resolve_model
    from rrr.learner.group import LearnerGroup
    from rrr.learner.weight_sync import CollectiveSync, ObjectStoreSync

    path = resolve_model(args.model)
    # A private local Ray, even if another cluster runs on this machine.
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    workers = [
        RolloutWorker.options(num_cpus=1).remote(
            model_path=path, max_model_len=1024, kv_cache_gib=1, seed=0
        )
        for _ in range(2)
    ]
    learners = LearnerGroup(LearnerConfig(kl_coef=0.0, gradient_checkpointing=False), path)
    ray.get([w.ping.remote() for w in workers])

    state = learners.state_dict()  # what one sync moves (a tied weight once)
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    bounds = [_bound(state) for _ in range(args.repeats)]
    cfg = SyncConfig(bucket_mb=args.bucket_mb)
    rows: dict[str, list] = {}
    for name, sync in (("collective (gloo)", CollectiveSync(cfg)),
                       ("object_store/shm", ObjectStoreSync(cfg, transport="shm"))):  # fmt: skip
        sync.init(learners, workers)
        sync.push()  # warm-up: first-touch of buffers and files
        rows[name] = [sync.push() for _ in range(args.repeats)]
        sync.close()

    bound = statistics.median(bounds)
    print(f"\nmodel {Path(path).name}: {nbytes / 1e6:.1f} MB per sync, {len(state)} tensors, "
          f"2 receivers, median of {args.repeats}")  # fmt: skip
    print(f"  bound (torch.clone of every tensor): {bound:.3f}s = {nbytes / bound / 1e9:.2f} GB/s")
    for name, timings in rows.items():
        tot = statistics.median(t.total_s for t in timings)
        g = statistics.median(t.gather_s for t in timings)
        w = statistics.median(t.wire_s for t in timings)
        ld = statistics.median(t.load_s for t in timings)
        print(f"  {name}: total {tot:.3f}s = {tot / bound:.1f}x bound (gather {g:.3f}, wire "
              f"{w:.3f} = {w / bound:.1f}x bound, load {ld:.3f})")  # fmt: skip
    learners.shutdown()
    for w in workers:
        ray.kill(w)
    ray.shutdown()


if __name__ == "__main__":
    main()
