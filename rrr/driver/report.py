"""Summarise a training run from its metrics.jsonl: curves in a PNG and a short text summary.

Draws reward, first/second-try success, KL, reflection length (plus loss, step seconds and
periodic eval accuracy when logged) with a moving average into RUN_DIR/report.png, and prints:
steps, reward at the start / end / best (means over windows of 10 % of the steps), mean step
time and how it splits across rollout / learn / sync (verify, reflect and retry run inside
rollout), and KL at the end. Malformed lines (e.g. the half-written last line of a crashed
run) are skipped and counted. Works on a live run: it only reads the file.

  rrr report runs/qwen2.5-7b-countdown
  rrr report runs/smoke --out /tmp/smoke.png
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rrr.core.config import Config

# (panel title, metric keys drawn in it); a panel is drawn when any of its keys was logged.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward (retry success)", ("rollout/reward_mean",)),
    ("try success", ("rollout/first_try_success", "rollout/second_try_success")),
    ("KL to reference", ("learner/kl",)),
    ("reflection tokens", ("rollout/reflection_tokens_mean",)),
    ("loss", ("learner/loss",)),
    ("step seconds", ("timing/step_s",)),
    (
        "held-out accuracy vs training reward",
        ("eval/first_try_accuracy", "eval/second_try_accuracy", "rollout/reward_mean"),
    ),
)
# Metrics summarised as start / end / best.
SUMMARY_KEYS = ("rollout/reward_mean", "rollout/first_try_success", "rollout/second_try_success")
# Stages the driver times one after the other: together (plus "other") they make a step.
TOP_LEVEL_STAGES = ("rollout", "learn", "sync")
# Sub-stages timed inside the rollout stage, shown apart so nothing is counted twice.
ROLLOUT_PARTS = ("attempt", "reflect", "retry", "verify")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="run directory (logging.output_dir) or its metrics.jsonl"
    )
    parser.add_argument("--out", help="PNG path (default: RUN_DIR/report.png)")
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="moving-average window in steps (default: 10%% of the steps)",
    )


# ---------------------------------------------------------------- reading


def load_history(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of metrics.jsonl merged per step (the driver may log one step in several calls;
    later lines win), sorted by step, and the number of malformed lines skipped."""
    from rrr.core.metrics import read_jsonl_records

    records, bad = read_jsonl_records(path)
    by_step: dict[int, dict[str, Any]] = {}
    for record in records:
        by_step.setdefault(record["step"], {}).update(record)
    return [by_step[s] for s in sorted(by_step)], bad


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # null (a NaN when logged), strings, lists
    return float(value) if math.isfinite(value) else None


def series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, skipping steps where it is missing or not a number."""
    steps, values = [], []
    for row in history:
        value = _number(row.get(key))
        if value is not None:
            steps.append(row["step"])
            values.append(value)
    return steps, values


def default_window(n: int) -> int:
    return max(1, math.ceil(0.1 * n))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start, never lagging empty)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


# ---------------------------------------------------------------- summary


def summarize(history: Sequence[dict[str, Any]], malformed: int = 0) -> dict[str, Any]:
    """The numbers `rrr report` prints, as a dict (tests and scripts use it directly)."""
    steps = [row["step"] for row in history]
    summary: dict[str, Any] = {
        "steps": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "malformed_lines": malformed,
    }
    for key in SUMMARY_KEYS:
        key_steps, values = series(history, key)
        if not values:
            continue
        k = default_window(len(values))
        windows = [sum(values[i : i + k]) / k for i in range(len(values) - k + 1)]
        best = max(range(len(windows)), key=windows.__getitem__)
        summary[key] = {
            "first": sum(values[:k]) / k,
            "last": sum(values[-k:]) / k,
            "best": windows[best],
            "best_end_step": key_steps[best + k - 1],  # the step where that window ends
            "window": k,
        }
    summary["timing"] = _timing_summary(history)
    _, kl = series(history, "learner/kl")
    if kl:
        k = default_window(len(kl))
        summary["kl_end"] = kl[-1]
        summary["kl_end_mean"] = sum(kl[-k:]) / k
    evals = sorted({key for row in history for key in row if key.startswith("eval/")})
    summary["eval"] = {key: series(history, key)[1][-1] for key in evals if series(history, key)[1]}
    return summary


def _timing_summary(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean seconds per step of each timed stage. Averaged over every step that reports any
    timing, a stage missing on a step counting 0 s (e.g. no sync on that step)."""
    names = sorted(
        {key[len("timing/") :] for row in history for key in row if key.startswith("timing/")}
        - {"step_s", "eval_s"}  # the whole step, and the evaluation after it: not stages
    )
    _, evals = series(history, "timing/eval_s")
    rows = [
        row
        for row in history
        if _number(row.get("timing/step_s")) is not None
        or any(_number(row.get(f"timing/{n}")) is not None for n in names)
    ]
    if not rows:
        return {}
    stages = {}
    for name in names:
        total = sum(_number(row.get(f"timing/{name}")) or 0.0 for row in rows)
        stages[name.removesuffix("_s")] = total / len(rows)
    top = {n: s for n, s in stages.items() if n not in ROLLOUT_PARTS}
    _, step_s = series(rows, "timing/step_s")
    step_mean = sum(step_s) / len(step_s) if step_s else sum(top.values())
    return {
        "step_s_mean": step_mean,
        "stages": top,
        "rollout_parts": {n: s for n, s in stages.items() if n in ROLLOUT_PARTS},
        "other": max(0.0, step_mean - sum(top.values())),
        "evals": len(evals),
        "eval_s_total": sum(evals),
    }


def _order(names: Sequence[str], preferred: Sequence[str]) -> list[str]:
    return [n for n in preferred if n in names] + sorted(n for n in names if n not in preferred)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"steps: {summary['steps']} (step {summary['first_step']} to {summary['last_step']}); "
        f"malformed lines skipped: {summary['malformed_lines']}"
    ]
    for key in SUMMARY_KEYS:
        if key in summary:
            s = summary[key]
            lines.append(
                f"{key}: first {s['first']:.4f}  last {s['last']:.4f}  best {s['best']:.4f} "
                f"(at step {s['best_end_step']}; means over {s['window']} steps)"
            )
    timing = summary.get("timing") or {}
    if timing:
        step_mean = timing["step_s_mean"]

        def part(name: str, seconds: float) -> str:
            share = 100.0 * seconds / step_mean if step_mean > 0 else 0.0
            return f"{name} {seconds:.2f} s ({share:.0f}%)"

        stages = timing["stages"]
        split = [part(n, stages[n]) for n in _order(list(stages), TOP_LEVEL_STAGES)]
        if timing["other"] > 0.005 * step_mean:
            split.append(part("other", timing["other"]))
        lines.append(f"step time: mean {step_mean:.2f} s = " + " + ".join(split))
        inner = timing["rollout_parts"]
        if inner:
            parts = [part(n, inner[n]) for n in _order(list(inner), ROLLOUT_PARTS)]
            lines.append("  inside rollout: " + ", ".join(parts))
        if timing.get("evals"):
            lines.append(f"held-out evaluations (outside the steps): {timing['evals']}, "
                         f"{timing['eval_s_total']:.0f} s in all")  # fmt: skip
    if "kl_end" in summary:
        lines.append(
            f"kl at end: {summary['kl_end']:.4g} (last step), "
            f"{summary['kl_end_mean']:.4g} (mean of the last 10% of steps)"
        )
    for key, value in summary.get("eval", {}).items():
        lines.append(f"{key} (last): {value:.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def plot(history: Sequence[dict[str, Any]], out: Path, window: int = 0) -> int:
    """Draw the panels whose metrics were logged; returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, keys) for t, keys in PANELS if any(series(history, k)[1] for k in keys)]
    if not panels:
        return 0
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for i, key in enumerate(keys):
            steps, values = series(history, key)
            if not values:
                continue
            color = f"C{i}"
            # A held-out point already averages eval_size queries: never smoothed across steps.
            w = 1 if key.startswith("eval/") else window or default_window(len(values))
            label = key.replace("eval/", "held-out ")
            # Raw values faint, the moving average on top: noisy GRPO curves stay readable.
            # Few points (short runs, sparse periodic eval): mark them, a lone point shows.
            marker = "o" if len(values) <= 30 else None
            ax.plot(
                steps, values, color=color, alpha=0.35, linewidth=0.8, marker=marker, markersize=2.5
            )
            ax.plot(
                steps,
                moving_average(values, w),
                color=color,
                linewidth=1.6,
                label=f"{label} (avg {w})" if w > 1 else label,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return len(panels)


# ---------------------------------------------------------------- command


def run(args: argparse.Namespace, cfg: Config) -> int:
    given = Path(args.run_dir)
    path = given if given.is_file() else given / "metrics.jsonl"
    run_dir = path.parent
    if not path.is_file():
        print(
            f"rrr report: {path} not found; RUN_DIR is the logging.output_dir of `rrr train`",
            file=sys.stderr,
        )
        return 1
    history, malformed = load_history(path)
    if not history:
        why = f"{malformed} malformed lines, no valid ones" if malformed else "it is empty"
        print(f"rrr report: {path} holds no metrics ({why})", file=sys.stderr)
        return 1
    if args.window < 0:
        print("rrr report: --window must be >= 0", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run_dir / "report.png"
    summary = summarize(history, malformed)
    print(f"run: {run_dir}")
    print(format_summary(summary))
    if plot(history, out, args.window):
        print(f"curves: {out}")
    else:
        print("no known training metrics to plot (rollout/reward_mean, learner/kl, ...); "
              "no PNG written")
    return 0
