"""Dynamic sampling with backfill (learner.backfill_max_draws, issue 29): what it buys per second.

`rrr train` twice on one preset in this run, on the same failure dataset (built once, by the
first run) and the same seeds: without backfill (the preset as shipped) and with it. Per run,
over the steps after the first `--warmup` (the first step also pays the engine's warm-up):

- signal groups a step trains: groups whose G rewards are not all equal (without backfill:
  failures x (1 - batch/frac_zero_std); with: rollout/groups_signal), and their share of
  learner.failures_per_step;
- signal groups per second of rollout (timing/rollout_s) and per second of the whole step
  (timing/step_s: rollout, learning, sync);
- failures drawn per step and backfill rounds.

The goal (issue 29): at the replication preset's ~70 % zero-spread groups, a step with
backfill trains on its full failures_per_step signal groups (without: ~30 % of them), and the
signal groups per second of the whole step do not fall below the run without (ratio >= 1).

  .venv/bin/python bench/backfill.py                         # configs/replicate-cpu.yaml
  .venv/bin/python bench/backfill.py --steps 4 --max-draws 64 --config configs/smoke-cpu.yaml

About 25 minutes with the defaults on 2 cores (the failure dataset takes ~1.5 of them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_steps(path: Path) -> list[dict[str, float]]:
    from rrr.core.metrics import read_jsonl_records

    records, _ = read_jsonl_records(path)
    return [m for m in records if "timing/learn_s" in m]  # training steps, not eval lines


def train(config: str, out: Path, overrides: list[str]) -> list[dict[str, float]]:
    cmd = [
        sys.executable, "-m", "rrr.driver.cli", "train", "--config", config,
        f"logging.output_dir={out}", "logging.eval_every=0", "logging.progress=false",
        "cluster.dashboard=false", *overrides,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return read_steps(out / "metrics.jsonl")


def summarize(steps: list[dict[str, float]], want: int) -> dict[str, float]:
    """Totals over the given steps; signal groups as each arm's metrics report them."""

    def signal(m: dict[str, float]) -> float:
        if "rollout/groups_signal" in m:
            return m["rollout/groups_signal"]
        return m["rollout/failures"] * (1 - m["batch/frac_zero_std"])

    groups = sum(signal(m) for m in steps)
    rollout_s = sum(m["timing/rollout_s"] for m in steps)
    step_s = sum(m["timing/step_s"] for m in steps)
    n = len(steps)
    return {
        "steps": n,
        "signal_per_step": groups / n,
        "share_of_want": groups / (n * want),
        "drawn_per_step": sum(m["rollout/failures"] for m in steps) / n,
        "rounds_per_step": sum(m.get("rollout/backfill_rounds", 0.0) for m in steps) / n,
        "short_steps": sum(m.get("rollout/backfill_short", 0.0) for m in steps),
        "rollout_s": rollout_s / n,
        "learn_s": sum(m["timing/learn_s"] for m in steps) / n,
        "step_s": step_s / n,
        "signal_per_rollout_s": groups / rollout_s,
        "signal_per_step_s": groups / step_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/replicate-cpu.yaml")
    p.add_argument("--steps", type=int, default=4, help="steps per run (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="first steps left out (default 1)")
    p.add_argument("--max-draws", type=int, default=None,
                   help="learner.backfill_max_draws (default 4 x failures_per_step)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: temp)")
    args = p.parse_args()
    from rrr.core.config import load_config

    want = load_config(args.config).learner.failures_per_step
    max_draws = args.max_draws if args.max_draws is not None else 4 * want
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        common = [f"learner.max_steps={args.steps}", f"logging.checkpoint_every={args.steps}"]
        off = train(args.config, root / "off", common)
        on = train(args.config, root / "on", [
            *common, f"data.failures={root / 'off' / 'failures'}",
            "learner.drop_zero_std_groups=true", f"learner.backfill_max_draws={max_draws}",
        ])  # fmt: skip
    rows = {
        "without": summarize(off[args.warmup :], want),
        f"with (max_draws {max_draws})": summarize(on[args.warmup :], want),
    }
    print(f"{args.config}: failures_per_step {want}, steps {args.warmup + 1}-{args.steps} of "
          f"each run")  # fmt: skip
    print("| backfill | signal groups/step | of failures_per_step | drawn/step | rounds/step | "
          "short steps | rollout s/step | learn s/step | step s | signal/s rollout | "
          "signal/s step |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, r in rows.items():
        print(f"| {name} | {r['signal_per_step']:.1f} | {r['share_of_want']:.0%} | "
              f"{r['drawn_per_step']:.1f} | {r['rounds_per_step']:.1f} | {r['short_steps']:.0f} "
              f"| {r['rollout_s']:.1f} | {r['learn_s']:.1f} | {r['step_s']:.1f} | "
              f"{r['signal_per_rollout_s']:.3f} | {r['signal_per_step_s']:.3f} |")  # fmt: skip
    a, b = rows.values()
    print(f"ratio with / without: signal groups per second of rollout "
          f"{b['signal_per_rollout_s'] / a['signal_per_rollout_s']:.2f}x, of the whole step "
          f"{b['signal_per_step_s'] / a['signal_per_step_s']:.2f}x (goal >= 1)")  # fmt: skip


if __name__ == "__main__":
    main()
