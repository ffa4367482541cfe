"""AdamW step time, fused vs foreach, on SmolLM2-135M-shaped parameters (fp32, as the learner
keeps them). Both optimizers step the same parameter shapes with the same gradients, taking
turns, after one untimed step each (state allocated); prints each side's times and the ratio.

  python bench/optimizer.py [--threads 2] [--reps 5]

Why it matters: the optimizer step is a fixed cost of every learner step, the same whatever the
batch layout, so it bounds what the shared-prefix layout can gain (issue 14, bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import time

import torch

# SmolLM2-135M: tied 49152 x 576 embedding, 30 layers of attention (576 -> 9 heads, 3 KV heads
# of 64) and a 1536-wide MLP, two RMSNorm weights per layer.
LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536),
         (576,), (576,)]  # fmt: skip
SHAPES = [(49152, 576), *LAYER * 30, (576,)]


def optimizer(fused: bool) -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    kind = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.AdamW(params, lr=1e-5, **kind)
    opt.step()  # allocates exp_avg / exp_avg_sq: not timed
    return opt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    opts = {name: optimizer(name == "fused") for name in ("foreach", "fused")}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(args.reps):
        for name, opt in opts.items():  # taking turns: load changes hit both sides alike
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    n = sum(torch.Size(s).numel() for s in SHAPES)
    print(f"AdamW step over {n / 1e6:.1f}M fp32 parameters, {args.threads} thread(s)")
    for name, ts in times.items():
        print(f"  {name:8s} min {min(ts):.3f} s  median {sorted(ts)[len(ts) // 2]:.3f} s")
    print(f"foreach / fused (fastest steps): {min(times['foreach']) / min(times['fused']):.2f}x")


if __name__ == "__main__":
    main()
