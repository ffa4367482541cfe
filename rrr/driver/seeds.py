"""Does an effect survive a new training seed? The run-level test over R training runs.

`rrr eval --compare` tests two fixed sets of weights: its p-value covers evaluation noise only.
This command takes R trained runs that differ only in their seeds, each evaluated on the same
problems with the same keyed noise as one vanilla evaluation, and tests the R effects
(trained - vanilla, each a mean over problems) with Student's t over runs (df R - 1). Beside it:
the between-seed SD net of evaluation noise, shuffled-reward control runs (`--control`, with
Welch's test of trained against control), the mechanism (`--mechanism`: each trained model
reflecting on the vanilla model's failed first tries, `rrr eval --first-tries-from`), and the
same analysis on the first k samples of every problem (`--k`, what a cheaper evaluation would
have found).

  rrr seeds --vanilla runs/v/eval --trained runs/s1/eval/step_00000015 runs/s2/eval/... \\
      --control runs/c1/eval/step_00000015 ... --mechanism runs/s1-mech ... --k 2 --out runs/seeds

Each path is a results.json of `rrr eval` or its directory. Writes seeds.json and seeds.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rrr.core.config import Config, ConfigError
from rrr.core.stats import MeanTest, RunLevel, run_level, welch_test
from rrr.driver.evaluate import load_results, paired_tests

ATTEMPTS = ("first", "second")


def first_k(results: dict[str, Any], k: int) -> dict[str, Any]:
    """The results as an evaluation of the first k samples of every problem would have given
    them (keyed noise: sample j saw the same noise whatever k was)."""
    if results.get("samples_per_problem", 1) < k:
        raise ConfigError(
            f"--k {k}: {results.get('model')} has "
            f"{results.get('samples_per_problem', 1)} samples per problem"
        )
    per_query = [
        {**q, **{f"{a}_outcomes": q[f"{a}_outcomes"][:k] for a in ATTEMPTS}}
        for q in results["per_query"]
    ]
    return {**results, "samples_per_problem": k, "per_query": per_query}


def effects(vanilla: dict[str, Any], runs: list[dict[str, Any]], attempt: str) -> list[dict]:
    """Each run's paired comparison with vanilla on `attempt`: its effect and evaluation SE."""
    out = []
    for run in runs:
        paired = paired_tests(vanilla, run)
        if paired.get("coupling") != "coupled":
            raise ConfigError(
                f"{run.get('model')}: not evaluated with the vanilla evaluation's keyed noise "
                f"(eval.seed and eval.temperature must match; coupling {paired.get('coupling')})"
            )
        row = paired[attempt]
        n = paired["paired_queries"]
        out.append(
            {
                "model": run.get("model"),
                "effect": row["difference"],
                "se": row["difference_sd"] / math.sqrt(n) if n else math.inf,
                "p_value": row["p_value"],
                "problems": n,
            }
        )
    return out


def _level(rows: list[dict]) -> RunLevel:
    return run_level([r["effect"] for r in rows], [r["se"] for r in rows])


def _test_dict(t: MeanTest) -> dict[str, Any]:
    return {
        "runs": t.n,
        "mean": t.mean,
        "sd": t.sd,
        "interval": list(t.interval),
        "p_value": t.p_value,
    }


def analyse(
    vanilla: dict[str, Any],
    trained: list[dict[str, Any]],
    controls: list[dict[str, Any]],
    mechanism: list[dict[str, Any]],
) -> dict[str, Any]:
    """The run-level tests, per attempt: trained runs, controls, trained - control, and the
    mechanism runs' second try (their first tries are vanilla's, by construction)."""
    if len(trained) < 2:
        raise ConfigError("--trained: a run-level test needs >= 2 runs (pre-registered: >= 4)")
    out: dict[str, Any] = {
        "vanilla": vanilla.get("model"),
        "samples_per_problem": vanilla.get("samples_per_problem", 1),
    }
    for attempt in ATTEMPTS:
        rows = effects(vanilla, trained, attempt)
        level = _level(rows)
        part: dict[str, Any] = {
            "trained": rows,
            "run_level": _test_dict(level.test),
            "eval_se": level.eval_se,
            "between_seed_sd": level.between_seed_sd,
        }
        if controls:
            crows = effects(vanilla, controls, attempt)
            part["controls"] = crows
            part["control_mean"] = sum(r["effect"] for r in crows) / len(crows)
            if len(crows) >= 2:
                part["trained_minus_control"] = _test_dict(
                    welch_test([r["effect"] for r in rows], [r["effect"] for r in crows])
                )
        out[attempt] = part
    if mechanism:
        rows = effects(vanilla, mechanism, "second")
        out["mechanism"] = {"trained": rows, "run_level": _test_dict(_level(rows).test)}
    return out


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def markdown(result: dict[str, Any], title: str) -> str:
    lines = [
        f"## {title}",
        "",
        f"Vanilla: `{result['vanilla']}`, "
        f"{result['samples_per_problem']} keyed samples per problem.",
        "",
    ]
    for attempt in ATTEMPTS:
        part = result[attempt]
        lines += [
            f"### {attempt} try, trained - vanilla (points)",
            "",
            "| run | effect | eval SE | within-run p |",
            "|---|---|---|---|",
        ]
        for kind in ("trained", "controls"):
            for r in part.get(kind, []):
                label = r["model"] if kind == "trained" else f"control: {r['model']}"
                lines.append(
                    f"| {label} | {_pts(r['effect'])} | {100 * r['se']:.2f} | {r['p_value']:.2g} |"
                )
        t = part["run_level"]
        lines += [
            "",
            f"**Run-level (t over {t['runs']} runs, df {t['runs'] - 1}):** mean "
            f"{_pts(t['mean'])} [{_pts(t['interval'][0])}, {_pts(t['interval'][1])}], "
            f"p = {t['p_value']:.3g}; SD of the effects {100 * t['sd']:.2f}, of which "
            f"evaluation noise {100 * part['eval_se']:.2f}: between-seed SD "
            f"{100 * part['between_seed_sd']:.2f} points.",
        ]
        if "trained_minus_control" in part:
            w = part["trained_minus_control"]
            lines.append(
                f"Trained - control (Welch): {_pts(w['mean'])} "
                f"[{_pts(w['interval'][0])}, {_pts(w['interval'][1])}], "
                f"p = {w['p_value']:.3g}."
            )
        elif "control_mean" in part:
            lines.append(f"Control mean: {_pts(part['control_mean'])}.")
        lines.append("")
    if "mechanism" in result:
        t = result["mechanism"]["run_level"]
        lines += [
            "### Mechanism: reflecting on the vanilla model's failed first tries",
            "",
            "| run | second try - vanilla | eval SE | within-run p |",
            "|---|---|---|---|",
        ]
        for r in result["mechanism"]["trained"]:
            lines.append(
                f"| {r['model']} | {_pts(r['effect'])} | {100 * r['se']:.2f} | {r['p_value']:.2g} |"
            )
        lines += [
            "",
            f"Run-level: {_pts(t['mean'])} [{_pts(t['interval'][0])}, "
            f"{_pts(t['interval'][1])}], p = {t['p_value']:.3g}.",
            "",
        ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vanilla",
        required=True,
        metavar="RESULTS",
        help="the vanilla model's evaluation (results.json or its dir)",
    )
    parser.add_argument(
        "--trained",
        nargs="+",
        required=True,
        metavar="RESULTS",
        help="one evaluation per trained run (same problems, eval.seed)",
    )
    parser.add_argument(
        "--control",
        nargs="*",
        default=[],
        metavar="RESULTS",
        help="evaluations of shuffled-reward control runs",
    )
    parser.add_argument(
        "--mechanism",
        nargs="*",
        default=[],
        metavar="RESULTS",
        help="evaluations of the trained runs with --first-tries-from the vanilla results",
    )
    parser.add_argument(
        "--k", type=int, default=None, help="also analyse the first k samples of every problem"
    )
    parser.add_argument("--out", required=True, help="output directory (seeds.json, seeds.md)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    vanilla = load_results(args.vanilla)
    paths = (args.trained, args.control, args.mechanism)
    sets = [[load_results(p) for p in group] for group in paths]
    result = {"all": analyse(vanilla, *sets)}
    md = markdown(result["all"], f"All {result['all']['samples_per_problem']} samples")
    if args.k:
        cut = [[first_k(r, args.k) for r in rs] for rs in sets]
        result[f"first_{args.k}"] = analyse(first_k(vanilla, args.k), *cut)
        md += "\n" + markdown(result[f"first_{args.k}"], f"The first {args.k} samples only")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(result, indent=2))
    (out / "seeds.md").write_text(md)
    print(md)
    print(f"wrote {out / 'seeds.md'} and {out / 'seeds.json'}")
    return 0
