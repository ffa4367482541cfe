"""Rollouts ahead of the learner (rollout.max_staleness, issue 22): what overlap buys.

Measure: `rrr train` twice on one preset in this run, max_staleness 0 then 1, same seeds; per
variant the time of all steps together (with N=1 step 1 also waits for step 2's rollout and the
last step has none ahead, so only the sum is fair), the seconds a rollout ran beside the
learner, and rollout tokens/s; then the ratio of the sums (1 vs 0).

Simulate: from any run's metrics.jsonl (a sequential run: timing/rollout_s, timing/learn_s,
timing/sync_s per step), the step time one-step-off would give on devices of its own,
max(rollout[s+1], learn[s]) + sync[s], against rollout + learn + sync: the speed-up that
disaggregated devices can reach with those stage times.

  .venv/bin/python bench/async.py --config configs/cluster-cpu.yaml --steps 4
  .venv/bin/python bench/async.py --simulate runs/x/metrics.jsonl [more.jsonl ...]

On this 2-core machine the learner and the fleet share the cores, so overlapping them cannot
buy speed; the measured ratio says how much the overlap costs or gains here, the simulation what
the same stage times would give on separate devices.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_steps(path: Path) -> list[dict[str, float]]:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [m for m in lines if "timing/learn_s" in m]  # training steps, not eval lines


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
        "steps_s": sum(x["step_s"] for x in m),
        "overlap_s": statistics.mean(x.get("rollout/overlap_s", 0.0) for x in m[1:]),
        "staleness": statistics.mean(x.get("rollout/staleness", 0.0) for x in m),
        "tokens_per_s": statistics.mean(x["tokens_per_s"] for x in m),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/cluster-cpu.yaml")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--simulate", nargs="+", metavar="METRICS", help="metrics.jsonl of runs")
    args = p.parse_args()
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
