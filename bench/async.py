"""Rollouts ahead of the learner (rollout.max_staleness, issue 22): what overlap buys.

Measure: `rrr train` twice on one preset in this run, max_staleness 0 then 1, same seeds; per
variant the time of all steps together (with N=1 step 1 also waits for step 2's rollout and the
last step has none ahead, so only the sum is fair), the seconds a rollout ran beside the
learner, and rollout tokens/s; then the ratio of the sums (1 vs 0).

Simulate: from any run's metrics.jsonl (a sequential run: timing/rollout_s, timing/learn_s,
timing/sync_s per step), the step time one-step-off would give on devices of its own,
max(rollout[s+1], learn[s]) + sync[s], against rollout + learn + sync: the speed-up that
disaggregated devices can reach with those stage times.

Predict (no GPU needed): for a GPU preset, the stage times of one step on H100s from a roofline
model of the preset's own shapes and counts (`rrr plan`'s model shape; F failures x G
reflections, R rollout GPUs, L learner GPUs), then the same one-step-off formula. Every
assumption (efficiencies, mean lengths) is printed and can be changed; it predicts, a GPU run's
metrics (`--simulate`) measure.

  .venv/bin/python bench/async.py --config configs/cluster-cpu.yaml --steps 4
  .venv/bin/python bench/async.py --simulate runs/x/metrics.jsonl [more.jsonl ...]
  .venv/bin/python bench/async.py --predict configs/qwen2.5-7b-countdown-8xh100.yaml

On this 2-core machine the learner and the fleet share the cores, so overlapping them cannot
buy speed; the measured ratio says how much the overlap costs or gains here, the simulation what
the same stage times would give on separate devices.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.runs import read_steps  # noqa: E402


def simulate(steps: list[dict[str, float]]) -> dict[str, float]:
    """Sequential vs one-step-off step time from a sequential run's stage times."""
    r = [m["timing/rollout_s"] for m in steps]
    lrn = [m["timing/learn_s"] for m in steps]
    s = [m.get("timing/sync_s", 0.0) for m in steps]
    sequential = sum(r) + sum(lrn) + sum(s)
    # step 1's rollout cannot overlap; afterwards rollout s+1 runs beside learn s
    ahead = r[0] + sum(max(r[i + 1], lrn[i]) + s[i] for i in range(len(r) - 1)) + lrn[-1] + s[-1]
    return {
        "steps": len(steps),
        "rollout_share": sum(r) / sequential,
        "learn_share": sum(lrn) / sequential,
        "sequential_s": sequential,
        "one_step_off_s": ahead,
        "speedup": sequential / ahead,
    }


# H100 SXM (bf16 dense, HBM3, NVLink 4) and the efficiencies the prediction assumes.
H100 = {"flops": 989e12, "hbm": 3.35e12, "nvlink": 300e9}
ASSUME = {
    "mfu": 0.40,  # training and prefill: share of peak bf16 FLOPs reached
    "bw_eff": 0.60,  # decode: share of HBM bandwidth reached reading weights and KV
    "prompt": 150,  # mean prompt tokens (Countdown; an APIGen prompt with its tools: ~800)
    "attempt": 300,  # mean failed-attempt, reflection and retry tokens
    "reflection": 150,
    "retry": 300,
}


def predict(cfg, assume: dict[str, float], dev: dict[str, float] = H100) -> dict[str, float]:
    """One step's rollout, learn and sync seconds on H100s, from a roofline of the preset.

    Rollout, per rollout GPU (F*G/R chains): the reflect phase prefills each failure's context
    once (prefix cache) and decodes its G reflections; the retry phase prefills each reflection
    and decodes the retry. A decode step costs max(read weights + KV, 2*P*b FLOPs); all b
    chains run for the mean length, then the batch's longest runs alone to the cap (max_tokens),
    as a straggler does. Learn, per learner GPU: (2 + 4 policy + 2 reference) * P FLOPs per
    forward token, shared-prefix layout (context once per failure + G reflections), plus ZeRO-3's
    parameter all-gather (forward, backward) and gradient reduce-scatter per micro-batch. Sync:
    the bf16 weights gathered and broadcast over NVLink, then loaded by vLLM."""
    from rrr.core.model_shapes import model_shape

    shape = model_shape(cfg.model.name_or_path)
    P, e = shape.params, cfg.episode
    F, G, R = cfg.learner.failures_per_step, e.num_reflections, cfg.rollout.num_workers
    L, TP = cfg.learner.num_learners, cfg.rollout.tensor_parallel_size
    peak, bw = dev["flops"] * assume["mfu"], dev["hbm"] * assume["bw_eff"]
    kv = shape.kv_bytes_per_token(2, TP)
    context = assume["prompt"] + assume["attempt"]

    def decode(b: float, mean: float, cap: int, ctx: float) -> float:
        """b chains for `mean` tokens at context ~ctx, then one straggler to the cap."""

        def step(n: float) -> float:  # one decode step of n chains on one of TP GPUs
            return max((2 * P / TP + n * ctx * kv) / bw, 2 * P * n / (TP * peak))

        return mean * step(b) + max(cap - mean, 0) * step(1)

    chains = F * G / R
    reflect = 2 * P * (F / R) * context / (TP * peak) + decode(
        chains, assume["reflection"], e.max_reflection_tokens, context + assume["reflection"] / 2
    )
    retry_ctx = context + assume["reflection"] + assume["retry"] / 2
    retry = 2 * P * chains * assume["reflection"] / (TP * peak) + decode(
        chains, assume["retry"], e.max_retry_tokens, retry_ctx
    )
    tokens = F * context + F * G * assume["reflection"]
    micro = max(1.0, F * G / (L * cfg.learner.micro_batch_size))
    zero3 = 3 * 2 * P / dev["nvlink"] * micro if cfg.learner.zero_stage == 3 else 0.0
    learn = 8 * P * tokens / (L * peak) + zero3
    sync = 2 * (2 * P / dev["nvlink"]) + 2 * P / TP / dev["hbm"]  # gather, broadcast, load
    sequential = reflect + retry + learn + sync
    return {
        "rollout_s": reflect + retry, "learn_s": learn, "zero3_comm_s": zero3, "sync_s": sync,
        "sequential_s": sequential,
        "one_step_off_s": max(reflect + retry, learn) + sync,
        "speedup": sequential / (max(reflect + retry, learn) + sync),
    }  # fmt: skip


def measure(config: str, steps: int, staleness: int, out: Path) -> dict[str, float]:
    cmd = [
        sys.executable, "-m", "rrr.driver.cli", "train", "--config", config,
        f"learner.max_steps={steps}", f"rollout.max_staleness={staleness}",
        f"logging.output_dir={out}", "logging.eval_every=0", f"logging.checkpoint_every={steps}",
        "logging.progress=false",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    m = read_steps(out / "metrics.jsonl")
    return {
        "steps_s": sum(x["timing/step_s"] for x in m),
        # a step's overlap is its own (the next rollout beside its learning); the last has none
        "overlap_s": statistics.mean(x.get("rollout/overlap_s", 0.0) for x in m[:-1] or m),
        "staleness": statistics.mean(x.get("rollout/staleness", 0.0) for x in m),
        "tokens_per_s": statistics.mean(x["rollout/tokens_per_s"] for x in m),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/cluster-cpu.yaml")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--simulate", nargs="+", metavar="METRICS", help="metrics.jsonl of runs")
    p.add_argument("--predict", nargs="+", metavar="PRESET", help="GPU presets to predict")
    p.add_argument("--assume", nargs="*", default=[], metavar="KEY=VALUE",
                   help=f"change an assumption of --predict: {ASSUME}")  # fmt: skip
    args = p.parse_args()
    if args.predict:
        from rrr.core.config import load_config

        assume = {**ASSUME, **{k: float(v) for k, v in (a.split("=", 1) for a in args.assume)}}
        print(f"assumed (H100 SXM {H100}): {assume}")
        for preset in args.predict:
            r = predict(load_config(preset), assume)
            print(f"{preset}: rollout {r['rollout_s']:.1f} s, learn {r['learn_s']:.1f} s "
                  f"(ZeRO-3 traffic {r['zero3_comm_s']:.1f} s), sync {r['sync_s']:.2f} s a step; "
                  f"sequential {r['sequential_s']:.1f} s -> one-step-off "
                  f"{r['one_step_off_s']:.1f} s: speed-up {r['speedup']:.2f}x")  # fmt: skip
        return
    if args.simulate:
        for path in args.simulate:
            sim = simulate(read_steps(Path(path)))
            print(f"{path}: {sim['steps']} steps, rollout {sim['rollout_share']:.0%} / learn "
                  f"{sim['learn_share']:.0%} of a sequential step; one-step-off on separate "
                  f"devices: {sim['sequential_s']:.0f} s -> {sim['one_step_off_s']:.0f} s, "
                  f"speed-up {sim['speedup']:.2f}x")  # fmt: skip
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = {n: measure(args.config, args.steps, n, Path(tmp) / f"s{n}") for n in (0, 1)}
        sim = simulate(read_steps(Path(tmp) / "s0" / "metrics.jsonl"))
    print(f"{args.config}, {args.steps} steps each")
    print("| max_staleness | all steps s | rollout beside learner s/step | staleness | "
          "rollout tok/s |\n|---|---|---|---|---|")  # fmt: skip
    for n, r in rows.items():
        print(f"| {n} | {r['steps_s']:.1f} | {r['overlap_s']:.1f} | {r['staleness']:.1f} | "
              f"{r['tokens_per_s']:.0f} |")  # fmt: skip
    print(f"ratio of step time, 1 vs 0: {rows[1]['steps_s'] / rows[0]['steps_s']:.2f} "
          "(< 1: faster; sharing cores, the two sides slow each other down)")
    print(f"simulated from the staleness-0 run on separate devices: speed-up "
          f"{sim['speedup']:.2f}x (rollout {sim['rollout_share']:.0%}, learn "
          f"{sim['learn_share']:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
