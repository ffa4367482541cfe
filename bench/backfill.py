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
sys.path.insert(0, str(ROOT))

from bench.runs import read_steps  # noqa: E402


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
    learn_s = sum(m["timing/learn_s"] for m in steps)
    step_s = sum(m["timing/step_s"] for m in steps)
    drawn = sum(m["rollout/failures"] for m in steps)
    # what the learner trained: with the preset's drop_zero_std_groups, signal groups alone
    trained = sum(m["batch/train_seqs"] * m["rollout/failures"] / m["rollout/episodes"]
                  for m in steps)  # fmt: skip
    n = len(steps)
    return {
        "steps": n,
        "signal_per_step": groups / n,
        "share_of_want": groups / (n * want),
        "drawn_per_step": drawn / n,
        "rounds_per_step": sum(m.get("rollout/backfill_rounds", 0.0) for m in steps) / n,
        "short_steps": sum(m.get("rollout/backfill_short", 0.0) for m in steps),
        "rollout_s": rollout_s / n,
        "learn_s": sum(m["timing/learn_s"] for m in steps) / n,
        "step_s": step_s / n,
        "signal_per_rollout_s": groups / rollout_s,
        "signal_per_step_s": groups / step_s,
        # unit costs, which the luck of the draw (how many groups had a signal) does not move
        "signal": groups,
        "drawn": drawn,
        "rollout_per_failure_s": rollout_s / drawn,
        "learn_per_group_s": learn_s / max(trained, 1e-9),
        "other_per_step_s": (step_s - rollout_s - learn_s) / n,
        "unused_share": sum(m.get("rollout/groups_unused", 0.0) for m in steps) / drawn,
    }


def at_share(r: dict[str, float], share: float, want: int, backfill: bool) -> float:
    """Seconds per trained signal group had `share` of the drawn groups carried a signal, from
    the run's unit costs: the two runs' draws differ in luck, not in what a failure costs. With
    backfill, drawn = want / share (plus the surplus the run saw); without, a step of `want`
    failures trains want * share groups (drop_zero_std_groups)."""
    groups_per_step = want if backfill else want * share
    drawn_per_group = (1 + r["unused_share"] / share) / share if backfill else 1 / share
    return (r["rollout_per_failure_s"] * drawn_per_group + r["learn_per_group_s"]
            + r["other_per_step_s"] / groups_per_step)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/replicate-cpu.yaml")
    p.add_argument("--steps", type=int, default=4, help="steps per run (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="first steps left out (default 1)")
    p.add_argument("--max-draws", type=int, default=None,
                   help="learner.backfill_max_draws (default 4 x failures_per_step)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: temp)")
    p.add_argument("--summarize", action="store_true",
                   help="print the tables of the runs kept in --out, without training")  # fmt: skip
    args = p.parse_args()
    from rrr.core.config import load_config

    want = load_config(args.config).learner.failures_per_step
    max_draws = args.max_draws if args.max_draws is not None else 4 * want
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        if args.summarize:  # the runs of an earlier --out
            off, on = (read_steps(root / arm / "metrics.jsonl") for arm in ("off", "on"))
            max_draws = load_config(root / "on" / "config.yaml").learner.backfill_max_draws
            report(args, want, max_draws, off, on)
            return
        common = [f"learner.max_steps={args.steps}", f"logging.checkpoint_every={args.steps}"]
        off = train(args.config, root / "off", common)
        on = train(args.config, root / "on", [
            *common, f"data.failures={root / 'off' / 'failures'}",
            "learner.drop_zero_std_groups=true", f"learner.backfill_max_draws={max_draws}",
        ])  # fmt: skip
    report(args, want, max_draws, off, on)


def report(args: argparse.Namespace, want: int, max_draws: int, off: list, on: list) -> None:
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
    share = (a["signal"] + b["signal"] + b["unused_share"] * b["drawn"]) / (a["drawn"] + b["drawn"])
    print(f"unit costs (s): rollout per failure {a['rollout_per_failure_s']:.2f} vs "
          f"{b['rollout_per_failure_s']:.2f}, learner per trained group "
          f"{a['learn_per_group_s']:.2f} vs {b['learn_per_group_s']:.2f}, other per step "
          f"{a['other_per_step_s']:.2f} vs {b['other_per_step_s']:.2f}; signal groups unused "
          f"with backfill {b['unused_share']:.1%} of the draws")  # fmt: skip
    cost_a, cost_b = at_share(a, share, want, False), at_share(b, share, want, True)
    print(f"at the pooled signal share {share:.2f}: {cost_a:.1f} vs {cost_b:.1f} s per trained "
          f"signal group, ratio {cost_a / cost_b:.2f}x (the draws' luck taken out)")  # fmt: skip


if __name__ == "__main__":
    main()
