"""Evaluate a model: first-try accuracy, second-try accuracy after one self-reflection
(paper Tables 1/2), first-try and second-try error categories (Tables 4/5), average reflection
length and example reflections (Figure 2).

Writes results.json, results.md and results.png into --out. With --compare A B, puts two
earlier runs side by side instead (e.g. vanilla vs trained) and starts no model.

  rrr eval --config configs/smoke-cpu.yaml --out runs/eval-vanilla
  rrr eval --config configs/smoke-cpu.yaml model.name_or_path=runs/smoke/export \\
      --out runs/eval-trained
  rrr eval --compare runs/eval-vanilla runs/eval-trained --out runs/compare

Second try (the "+ Reflection 2nd Try" column): a query counts as solved if the first try was
correct, or if it failed and the retry after one self-reflection is correct (paper section 3:
successful first tries are left alone). Error shares are over all queries, as in Tables 4/5.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrr.config import Config
from rrr.episodes import EpisodeEngine, Failure
from rrr.stats import mcnemar, wilson_interval

log = logging.getLogger("rrr.eval")


def evaluate(cfg: Config, engine: EpisodeEngine, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Run first try -> (on failure) one reflection -> retry on `rows`; return results."""
    e = cfg.eval
    t0 = time.perf_counter()
    samples, verdicts, _ = engine.first_attempts(
        rows, n=1, temperature=e.temperature, max_tokens=e.max_tokens
    )
    first = [v[0] if v else None for v in verdicts]
    failures = [
        Failure(row, group[0].token_ids, group[0].text, verdict)
        for row, group, verdict in zip(rows, samples, first)
        if verdict is not None and not verdict.correct
    ]
    # One reflection, one retry, at the eval temperature: the paper's second attempt.
    reflect_cfg = replace(
        cfg.episode,
        num_reflections=1,
        retry_depth=1,
        rewarded_reflection=0,
        temperature=e.temperature,
        retry_temperature=e.temperature,
        max_reflection_tokens=e.max_reflection_tokens,
        max_retry_tokens=e.max_tokens,
    )
    reflect = EpisodeEngine(engine.task, engine.renderer, engine.gen, engine.verifier,
                            reflect_cfg, engine.max_model_len)  # fmt: skip
    batch = reflect.run(failures) if failures else None
    episodes = batch.episodes if batch else []
    n = len(rows)
    first_ok = sum(1 for v in first if v is not None and v.correct)
    fixed = sum(1 for ep in episodes if ep.verdicts and ep.verdicts[0].correct)
    second_errors = Counter(
        (ep.verdicts[0].error if ep.verdicts else "context_overflow") or "none"
        for ep in episodes
        if not (ep.verdicts and ep.verdicts[0].correct)
    )
    first_errors = Counter(
        (v.error if v else "context_overflow") for v in first if v is None or not v.correct
    )
    lengths = [ep.reflection_len for ep in episodes if ep.reflection_len]
    # Per query, in row order: what a paired test (`rrr eval --compare`) matches on.
    fixed_rows = {
        id(failures[ep.failure_index].row)
        for ep in episodes
        if ep.verdicts and ep.verdicts[0].correct
    }
    per_query = [
        {
            "key": engine.task.row_key(row),
            "first": bool(v is not None and v.correct),
            "second": bool(v is not None and v.correct) or id(row) in fixed_rows,
        }
        for row, v in zip(rows, first)
    ]
    examples = [
        {
            "row": failures[ep.failure_index].row,
            "first_try": failures[ep.failure_index].attempt_text,
            "first_error": failures[ep.failure_index].first_verdict.error,  # type: ignore[union-attr]
            "reflection": ep.reflection_text,
            "reflection_tokens": ep.reflection_len,
            "retry": ep.retry_texts[0] if ep.retry_texts else "",
            "retry_correct": bool(ep.verdicts and ep.verdicts[0].correct),
        }
        for ep in episodes[: e.num_examples]
    ]
    return {
        "model": cfg.model.name_or_path,
        "task": engine.task.name,
        "family": engine.task.family,
        "source": cfg.data.eval_source or cfg.data.source,
        "num_queries": n,
        "first_try_accuracy": first_ok / n if n else 0.0,
        "second_try_accuracy": (first_ok + fixed) / n if n else 0.0,
        "first_try_correct": first_ok,
        "fixed_by_reflection": fixed,
        "first_try_errors": {k: c / n for k, c in sorted(first_errors.items())},
        "second_try_errors": {k: c / n for k, c in sorted(second_errors.items())},
        "first_try_error_counts": dict(sorted(first_errors.items())),
        "avg_reflection_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
        "examples": examples,
        "per_query": per_query,
        "temperature": cfg.eval.temperature,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ----------------------------------------------------------------------------- outputs


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown_table(results: list[dict[str, Any]], labels: list[str]) -> str:
    """Tables 1/2 (first vs second try) and 4/5 (first-try error shares), one row per run."""
    cats = sorted({k for r in results for k in r["first_try_errors"]})
    lines = [
        f"## {results[0]['task']}: accuracy (paper Tables 1/2)",
        "",
        "| run | model | n | 1st try | + reflection 2nd try | avg reflection tokens |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in zip(labels, results):
        lines.append(
            f"| {label} | {r['model']} | {r['num_queries']} | {_pct(r['first_try_accuracy'])} | "
            f"{_pct(r['second_try_accuracy'])} | {r['avg_reflection_tokens']:.1f} |"
        )
    lines += [
        "",
        "## First-try error categories (paper Tables 4/5)",
        "",
        "| run | " + " | ".join(cats) + " |",
        "|---|" + "---|" * len(cats),
    ]
    for label, r in zip(labels, results):
        cells = " | ".join(_pct(r["first_try_errors"].get(c, 0.0)) for c in cats)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n"


def bar_chart(results: list[dict[str, Any]], labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(results)
    for i, (label, r) in enumerate(zip(labels, results)):
        values = [100 * r["first_try_accuracy"], 100 * r["second_try_accuracy"]]
        bars = ax.bar([x + i * width for x in (0, 1)], values, width, label=label)
        ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xticks(
        [width * (len(results) - 1) / 2 + x for x in (0, 1)], ["1st try", "+ reflection 2nd try"]
    )
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{results[0]['task']} ({results[0]['num_queries']} queries)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(paths["json"])
    paths["md"].write_text(markdown_table([results], ["this run"]) + _examples_md(results))
    bar_chart([results], [results["model"]], paths["png"])
    return paths


def compare(a: Path, b: Path, out: Path) -> dict[str, Path]:
    """Side by side: e.g. vanilla (A) vs trained (B), with 95 % intervals and, over the
    problems both evaluated, an exact McNemar test of each difference (compare.json)."""
    runs = [json.loads(_results_file(p).read_text()) for p in (a, b)]
    labels = [f"A: {a}", f"B: {b}"]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "compare.md", "png": out / "compare.png", "json": out / "compare.json"}
    paired = paired_tests(runs[0], runs[1])
    paths["md"].write_text(markdown_table(runs, labels) + paired_markdown(runs, paired))
    paths["json"].write_text(json.dumps(paired, indent=2))
    bar_chart(runs, ["A", "B"], paths["png"])
    return paths


def _keyed(per_query: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # A generated source can repeat a problem: the i-th occurrence pairs with the i-th.
    seen: Counter[str] = Counter()
    out = {}
    for q in per_query:
        seen[q["key"]] += 1
        out[f"{q['key']}#{seen[q['key']]}"] = q
    return out


def paired_tests(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Exact McNemar per attempt over the problems both runs judged, matched by row key."""
    if "per_query" not in a or "per_query" not in b:
        return {}
    ka, kb = _keyed(a["per_query"]), _keyed(b["per_query"])
    common = [k for k in ka if k in kb]
    out: dict[str, Any] = {"paired_queries": len(common)}
    for attempt in ("first", "second"):
        t = mcnemar([ka[k][attempt] for k in common], [kb[k][attempt] for k in common])
        lo, hi = t.difference_interval()
        out[attempt] = {
            "a_accuracy": t.a_correct / t.n if t.n else 0.0,
            "b_accuracy": t.b_correct / t.n if t.n else 0.0,
            "a_interval": wilson_interval(t.a_correct, t.n),
            "b_interval": wilson_interval(t.b_correct, t.n),
            "difference": t.difference,
            "difference_interval": (lo, hi),
            "only_a": t.only_a,
            "only_b": t.only_b,
            "p_value": t.p_value,
        }
    return out


def paired_markdown(runs: list[dict[str, Any]], paired: dict[str, Any]) -> str:
    if not paired:
        return "\n(no per-query outcomes in one of the runs: no paired test)\n"
    n = paired["paired_queries"]
    lines = [
        "",
        f"## B vs A on the same {n} problems (95 % intervals, exact McNemar test)",
        "",
        "| attempt | A | B | B - A | A right, B wrong | B right, A wrong | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for attempt, name in (("first", "1st try"), ("second", "+ reflection 2nd try")):
        t = paired[attempt]
        lo, hi = t["difference_interval"]
        lines.append(
            f"| {name} | {_pct_ci(t['a_accuracy'], t['a_interval'])} | "
            f"{_pct_ci(t['b_accuracy'], t['b_interval'])} | "
            f"{100 * t['difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
            f"{t['only_a']} | {t['only_b']} | {t['p_value']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def _pct_ci(p: float, interval: tuple[float, float]) -> str:
    return f"{100 * p:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _results_file(p: Path) -> Path:
    return p / "results.json" if p.is_dir() else p


def _examples_md(results: dict[str, Any]) -> str:
    if not results["examples"]:
        return ""
    lines = ["", "## Example reflections (paper Figure 2)", ""]
    for ex in results["examples"]:
        mark = "fixed" if ex["retry_correct"] else "not fixed"
        text = ex["reflection"].strip().replace("\n", " ")
        lines.append(f"- ({ex['reflection_tokens']} tokens, {mark}) {text[:400]}")
    return "\n".join(lines) + "\n"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: <logging.output_dir>/eval)")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="compare two results.json (or their dirs)"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:

    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "eval"
    if args.compare:
        paths = compare(Path(args.compare[0]), Path(args.compare[1]), out)
        print(paths["md"].read_text())
        print(f"wrote {paths['md']} and {paths['png']}")
        return 0

    from rrr.driver.stack import generation_stack
    from rrr.models import trained_provenance
    from rrr.tasks.loading import load_rows

    with generation_stack(cfg) as stack:
        source = cfg.data.eval_source or cfg.data.source
        split = cfg.data.eval_split if cfg.data.eval_source else cfg.data.split
        loaded = load_rows(stack.task, source, split=split, limit=cfg.data.eval_limit)
        log.info(loaded.summary())
        results = evaluate(cfg, stack.engine, loaded.rows)
        results["skipped_rows"] = dict(loaded.skipped)
    # Vanilla or trained, for `rrr paper-report`: null for a model rrr did not train, else the
    # export/checkpoint it came from (step, run directory, base model).
    results["trained"] = trained_provenance(cfg.model.name_or_path)
    paths = write_results(results, out)
    print(paths["md"].read_text())
    print(f"results: {paths['json']}  table: {paths['md']}  chart: {paths['png']}")
    return 0
