"""Evaluate a model: first-try accuracy, second-try accuracy after one self-reflection
(paper Tables 1/2), first-try and second-try error categories (Tables 4/5), average reflection
length and example reflections (Figure 2).

Writes results.json, results.md and results.png into --out. With --compare A B, puts two
earlier runs side by side instead (e.g. vanilla vs trained) and starts no model; with
--placebo, compares the model with itself to measure the paired test's false-positive rate.

  rrr eval --config configs/smoke-cpu.yaml --out runs/eval-vanilla
  rrr eval --config configs/smoke-cpu.yaml model.name_or_path=runs/smoke/export \\
      --out runs/eval-trained
  rrr eval --compare runs/eval-vanilla runs/eval-trained --out runs/compare
  rrr eval --placebo --config configs/replicate-cpu.yaml --out runs/placebo

One procedure for every evaluation (this one, and the periodic one inside `rrr train`):

- the held-out problems are the first data.eval_limit *distinct* problems of data.eval_source
  (a generated source draws with replacement; duplicates are dropped and counted, and the
  number of distinct problems the source's settings can generate is reported);
- k = eval.samples_per_problem first tries per problem; each failed one gets its own
  reflection and retry (paper section 3: successful first tries are left alone). A sample
  counts as solved on the second try if its first try was correct or its retry is;
- at eval.temperature > 0 every sample's noise is keyed on (eval.seed, problem, sample index,
  stage, position, token) (rrr/core/crn.py), never on the engine's random stream: the same weights
  give the same outcomes wherever they are evaluated, and two models evaluated with one seed
  share their noise (common random numbers), which is what makes the paired test sharp.

Accuracies are over all n x k samples (= the mean of per-problem rates); intervals and tests
treat the problem as the unit (rrr/core/stats.py). Error shares are over all samples, as in
Tables 4/5.

Each phase (first tries; reflections and retries) runs in chunks of problems, and a progress
bar on stderr ("eval 1st try", "eval 2nd try"; logging.progress) moves as each chunk comes back.
The chunks change no outcome: a sample's noise is keyed on what it is, never on its batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrr.core.config import Config, ConfigError
from rrr.core.crn import EvalNoise
from rrr.core.episodes import Episode, EpisodeEngine, Failure
from rrr.core.stats import (
    discordance,
    minimum_detectable_effect,
    placebo,
    samples_for_mde,
    t_test,
    variance_components,
)
from rrr.core.tasks.base import Task
from rrr.driver.progress import progress_bar
from rrr.verifiers import Verdict

log = logging.getLogger("rrr.eval")

# The effect size the evaluation is sized for (issue 23): k is chosen so the MDE is this.
TARGET_MDE = 0.03

# An evaluation's generate calls (issue 31): each phase is cut into at most PROGRESS_STEPS
# chunks, one call each, so its progress bar moves as chunks come back. The cut changes no
# outcome: every sample's noise is keyed on (eval.seed, problem, sample, stage) (rrr/core/crn.py),
# not on the batch that draws it, and greedy decoding draws none. A chunk holds at least
# CHUNK_PER_WORKER samples per rollout worker, so each engine's batch stays about as full as in
# one call over everything (vLLM batches at most 256 sequences on a CPU by default, 1024 on an
# H100-class GPU); what a chunk costs is its tail, the last sequences decoding in a thin batch.
PROGRESS_STEPS = 20
CHUNK_PER_WORKER = {"cpu": 128, "gpu": 1024}


def chunk_spans(items: int, per_item: int, min_samples: int, steps: int) -> list[range]:
    """Contiguous, near-equal ranges over `items` (problems of `per_item` samples each): at most
    `steps`, of about `min_samples` samples or more each (one range when all are fewer), never
    an empty one."""
    if items <= 0:
        return []
    total = items * per_item
    size = max(min_samples, math.ceil(total / max(1, steps)), 1)
    parts = max(1, min(items, total // size))
    base, extra = divmod(items, parts)
    spans, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        spans.append(range(start, end))
        start = end
    return spans


def _min_chunk(cfg: Config) -> int:
    """Samples a generate call of an evaluation holds at least (CHUNK_PER_WORKER)."""
    device = "gpu" if cfg.rollout.num_gpus_per_worker > 0 else "cpu"
    return CHUNK_PER_WORKER[device] * cfg.rollout.num_workers


def load_eval_rows(cfg: Config, task: Task) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The held-out problems (distinct, at most data.eval_limit) and what the source held."""
    from rrr.core.tasks.loading import load_rows, source_universe

    source = cfg.data.eval_source or cfg.data.source
    split = cfg.data.eval_split if cfg.data.eval_source else cfg.data.split
    loaded = load_rows(task, source, split=split, limit=cfg.data.eval_limit, dedupe=True)
    info = {
        "source": source,
        "rows_read": loaded.total_seen,
        "duplicates_dropped": loaded.skipped.get("duplicate", 0),
        "distinct_problems": len(loaded.rows),
        # How many distinct problems the source's settings can generate at all (None: unknown).
        "source_universe": source_universe(source),
        "skipped_rows": dict(loaded.skipped),
    }
    log.info(
        "held-out: %d distinct problems from %d rows read (%d duplicates dropped; the source "
        "can hold %s distinct problems)", info["distinct_problems"], info["rows_read"],
        info["duplicates_dropped"], info["source_universe"] or "an unknown number of",
    )  # fmt: skip
    return loaded.rows, info


def evaluate(
    cfg: Config,
    engine: EpisodeEngine,
    rows: list[dict[str, Any]],
    samples: int | None = None,
    first_tries_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """k first tries per row -> one reflection and one retry per failed try; return results.
    `samples` overrides eval.samples_per_problem (the placebo draws 2k). `first_tries_from`
    (an earlier results dict): reuse its first tries instead of sampling them, so two models
    reflect on the same fixed failures and only the reflection and retry differ."""
    e = cfg.eval
    k = samples or e.samples_per_problem
    if e.temperature == 0 and k > 1:
        raise ConfigError(f"eval.samples_per_problem: {k} greedy samples are all the same")
    noise = EvalNoise(e.seed) if e.temperature > 0 else None
    t0 = time.perf_counter()
    n = len(rows)
    min_chunk = _min_chunk(cfg)
    if first_tries_from is None:
        first_engine = EpisodeEngine(engine.task, engine.renderer, engine.gen, engine.verifier,
                                     cfg.episode, engine.max_model_len, noise=noise)  # fmt: skip
        attempts: list[list[tuple[list[int], str, Any]] | None] = []
        right = 0
        with progress_bar(cfg.logging.progress, n * k, "eval 1st try", "sample") as bar:
            for span in chunk_spans(n, k, min_chunk, PROGRESS_STEPS):
                samples_, verdicts, _ = first_engine.first_attempts(
                    rows[span.start : span.stop], n=k, temperature=e.temperature,
                    max_tokens=e.max_tokens,
                )  # fmt: skip
                attempts += [
                    [(s.token_ids, s.text, v) for s, v in zip(group, vs)] if vs else None
                    for group, vs in zip(samples_, verdicts)
                ]
                right += sum(v.correct for vs in verdicts for v in vs)
                bar.update(len(span) * k)
                bar.set_postfix(right=f"{right / (span.stop * k):.1%}")
    else:
        attempts = reused_first_tries(engine, rows, first_tries_from, k)
    # first[i][j]: sample j of problem i right at the first try (a prompt longer than the
    # context has no samples: every one of its k counts as a context_overflow failure).
    first = [[bool(a[2].correct) for a in tries] if tries else [False] * k for tries in attempts]
    first_errors: Counter[str] = Counter()
    failures: list[Failure] = []
    where: list[tuple[int, int]] = []  # failure -> (problem, sample)
    for i, (row, tries) in enumerate(zip(rows, attempts)):
        if not tries:
            first_errors["context_overflow"] += k
            continue
        for j, (ids, text, v) in enumerate(tries):
            if not v.correct:
                first_errors[v.error or "none"] += 1
                failures.append(Failure(row, ids, text, v, sample_index=j))
                where.append((i, j))
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
                            reflect_cfg, engine.max_model_len, noise=noise)  # fmt: skip
    episodes: list[Episode] = []
    fixed_so_far = 0
    # Over all n x k samples: those right at the first try (or whose prompt overflowed) are done.
    done = n * k - len(failures)
    with progress_bar(cfg.logging.progress, n * k, "eval 2nd try", "sample", done) as bar:
        for span in chunk_spans(len(failures), 1, min_chunk, PROGRESS_STEPS):
            batch = reflect.run(failures[span.start : span.stop])
            # Indices into this chunk's failures -> into all of them.
            episodes += [replace(ep, failure_index=span.start + ep.failure_index)
                         for ep in batch.episodes]  # fmt: skip
            fixed_so_far += sum(bool(ep.verdicts and ep.verdicts[0].correct)
                                for ep in batch.episodes)  # fmt: skip
            bar.update(len(span))
            bar.set_postfix(fixed=f"{fixed_so_far / span.stop:.1%}")
    second = [list(row) for row in first]
    second_errors: Counter[str] = Counter()
    for ep in episodes:
        i, j = where[ep.failure_index]
        if ep.verdicts and ep.verdicts[0].correct:
            second[i][j] = True
        else:
            error = ep.verdicts[0].error if ep.verdicts else "context_overflow"
            second_errors[error or "none"] += 1
    total = n * k
    first_ok = sum(map(sum, first))
    fixed = sum(map(sum, second)) - first_ok
    lengths = [ep.reflection_len for ep in episodes if ep.reflection_len]
    per_query = [
        {
            "key": engine.task.row_key(row),
            "samples": k,
            "first": sum(f),  # correct first tries of this problem's k samples
            "second": sum(s),
            "first_outcomes": [int(x) for x in f],
            "second_outcomes": [int(x) for x in s],
            # The failed first tries' token ids (null where right), for --first-tries-from.
            "failed_first_ids": [
                None if a[2].correct else list(a[0]) for a in tries
            ] if tries else None,
        }
        for row, f, s, tries in zip(rows, first, second, attempts)
    ]
    first_rates = t_test([sum(f) / k for f in first])
    second_rates = t_test([sum(s) / k for s in second])
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
        "samples_per_problem": k,
        "num_samples": total,
        "first_try_accuracy": first_ok / total if total else 0.0,
        "second_try_accuracy": (first_ok + fixed) / total if total else 0.0,
        # 95 % t intervals over the n per-problem rates (the problem is the unit).
        "first_try_interval": _clip(first_rates.interval),
        "second_try_interval": _clip(second_rates.interval),
        "first_try_correct": first_ok,
        "fixed_by_reflection": fixed,
        "first_try_errors": {c: m / total for c, m in sorted(first_errors.items())},
        "second_try_errors": {c: m / total for c, m in sorted(second_errors.items())},
        "first_try_error_counts": dict(sorted(first_errors.items())),
        "avg_reflection_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
        "examples": examples,
        "per_query": per_query,
        "temperature": e.temperature,
        "eval_seed": e.seed,
        # "keyed": common random numbers (rrr/core/crn.py); "greedy": no noise at all.
        "noise": "keyed" if noise else "greedy",
        "first_tries": "sampled" if first_tries_from is None else "reused",
        "seconds": round(time.perf_counter() - t0, 2),
    }


def reused_first_tries(
    engine: EpisodeEngine, rows: list[dict[str, Any]], reference: dict[str, Any], k: int
) -> list[list[tuple[list[int], str, Any]] | None]:
    """The first tries of an earlier evaluation, per row: (ids, text, verdict) per sample, or
    None where the prompt overflowed. Correct tries keep no ids and stay correct; failed ones
    are decoded and verified again (deterministic), so their error categories are current."""
    by_key = {q["key"]: q for q in reference.get("per_query", [])}
    out: list[list[tuple[list[int], str, bool]] | None] = []
    flat: list[tuple[dict[str, Any], str]] = []
    for row in rows:
        key = engine.task.row_key(row)
        q = by_key.get(key)
        if q is None or "failed_first_ids" not in q:
            raise ConfigError(f"--first-tries-from: the reference has no first tries of {key!r} "
                              "(a results.json of this task and eval set, written by this "
                              "version of rrr)")  # fmt: skip
        if q["samples"] != k:
            raise ConfigError(f"eval.samples_per_problem: {k}, but the reference drew "
                              f"{q['samples']} first tries per problem")  # fmt: skip
        if q["failed_first_ids"] is None:
            out.append(None)
            continue
        tries = []
        for ok, ids in zip(q["first_outcomes"], q["failed_first_ids"]):
            text = "" if ok else engine.renderer.tokenizer.decode(ids, skip_special_tokens=True)
            tries.append((ids or [], text, bool(ok)))
            if not ok:
                flat.append((row, text))
        out.append(tries)
    verdicts = iter(engine.verifier.verify(flat))
    right = Verdict.ok(detail="right in the reference evaluation")
    return [
        [(ids, text, right if ok else next(verdicts)) for ids, text, ok in tries]
        if tries is not None else None
        for tries in out
    ]  # fmt: skip


def _clip(interval: tuple[float, float]) -> tuple[float, float]:
    lo, hi = interval
    return (max(0.0, lo) if math.isfinite(lo) else 0.0, min(1.0, hi) if math.isfinite(hi) else 1.0)


# ----------------------------------------------------------------------------- outputs


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown_table(results: list[dict[str, Any]], labels: list[str]) -> str:
    """Tables 1/2 (first vs second try) and 4/5 (first-try error shares), one row per run."""
    cats = sorted({k for r in results for k in r["first_try_errors"]})
    lines = [
        f"## {results[0]['task']}: accuracy (paper Tables 1/2)",
        "",
        "| run | model | problems x samples | 1st try | + reflection 2nd try | "
        "avg reflection tokens |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in zip(labels, results):
        lines.append(
            f"| {label} | {r['model']} | {r['num_queries']} x {r.get('samples_per_problem', 1)} "
            f"| {_acc(r, 'first')} | {_acc(r, 'second')} | {r['avg_reflection_tokens']:.1f} |"
        )
    lines.append("")
    lines.append("(95 % intervals over problems; error shares below are over all samples)")
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


def _acc(r: dict[str, Any], attempt: str) -> str:
    value = r[f"{attempt}_try_accuracy"]
    interval = r.get(f"{attempt}_try_interval")
    return _pct_ci(value, interval) if interval else _pct(value)


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
    """Side by side: e.g. vanilla (A) vs trained (B), and over the problems both evaluated a
    paired t test on the per-problem rate differences, its minimum detectable effect, and
    the discordance of paired samples (compare.json)."""
    runs = [load_results(p) for p in (a, b)]
    labels = [f"A: {a}", f"B: {b}"]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "compare.md", "png": out / "compare.png", "json": out / "compare.json"}
    paired = paired_tests(runs[0], runs[1])
    paths["md"].write_text(markdown_table(runs, labels) + paired_markdown(runs, paired))
    paths["json"].write_text(json.dumps(paired, indent=2))
    bar_chart(runs, ["A", "B"], paths["png"])
    return paths


def _outcomes(q: dict[str, Any], attempt: str) -> list[int]:
    """A problem's per-sample outcomes (results.json of before issue 23: one bool)."""
    listed = q.get(f"{attempt}_outcomes")
    return [int(x) for x in listed] if listed is not None else [int(bool(q[attempt]))]


def _keyed(per_query: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # Older results could repeat a problem (a generated source draws with replacement): the
    # i-th occurrence pairs with the i-th. Current ones hold each problem once.
    seen: Counter[str] = Counter()
    out = {}
    for q in per_query:
        seen[q["key"]] += 1
        out[f"{q['key']}#{seen[q['key']]}"] = q
    return out


def coupling(a: dict[str, Any], b: dict[str, Any]) -> str:
    """'coupled': both runs drew keyed noise with one seed and temperature, so sample j of a
    problem saw the same noise in both; 'greedy': neither drew noise; else 'independent'."""
    if a.get("noise") == b.get("noise") == "greedy":
        return "greedy"
    same = a.get("eval_seed") == b.get("eval_seed") and a.get("temperature") == b.get(
        "temperature"
    )
    return "coupled" if a.get("noise") == b.get("noise") == "keyed" and same else "independent"


def paired_tests(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Paired t test over the problems both runs judged (matched by row key), on d_i =
    rate_B(i) - rate_A(i); never on the flattened samples, which are clustered by problem."""
    if "per_query" not in a or "per_query" not in b:
        return {}
    ka, kb = _keyed(a["per_query"]), _keyed(b["per_query"])
    common = [key for key in ka if key in kb]
    out: dict[str, Any] = {
        "paired_queries": len(common),
        "samples_a": a.get("samples_per_problem", 1),
        "samples_b": b.get("samples_per_problem", 1),
        "coupling": coupling(a, b),
        "target_mde": TARGET_MDE,
    }
    for attempt in ("first", "second"):
        xa = [_outcomes(ka[key], attempt) for key in common]
        xb = [_outcomes(kb[key], attempt) for key in common]
        rate_a = [sum(x) / len(x) for x in xa]
        rate_b = [sum(x) / len(x) for x in xb]
        t = t_test([rb - ra for ra, rb in zip(rate_a, rate_b)])
        ta, tb = t_test(rate_a), t_test(rate_b)
        row: dict[str, Any] = {
            "a_accuracy": ta.mean,
            "b_accuracy": tb.mean,
            "a_interval": _clip(ta.interval),
            "b_interval": _clip(tb.interval),
            "difference": t.mean,
            "difference_interval": t.interval,
            "difference_sd": t.sd,
            "p_value": t.p_value,
            "only_a": sum(1 for ra, rb in zip(rate_a, rate_b) if ra > rb),  # problems A did better
            "only_b": sum(1 for ra, rb in zip(rate_a, rate_b) if rb > ra),
            # What this comparison could see: the true difference it detects with 80 % power.
            "mde_80": minimum_detectable_effect(t.sd, t.n),
            # Paired samples (problem, sample j) whose outcomes differ; with coupled noise this
            # is the coupled discordance.
            "discordance": discordance(xa, xb),
        }
        row["samples_for_target_mde"] = _samples_needed(xa, xb, t.n, t.sd)
        out[attempt] = row
    return out


def _samples_needed(xa: list[list[int]], xb: list[list[int]], n: int, sd: float) -> dict:
    """k for an MDE of TARGET_MDE over these n problems, with this pair's coupling."""
    k = min((len(x) for x in xa + xb), default=0)
    if k >= 2 and n >= 2:
        comps = variance_components([[y - x for x, y in zip(ra[:k], rb[:k])]
                                     for ra, rb in zip(xa, xb)])  # fmt: skip
        return {"k": samples_for_mde(TARGET_MDE, n, comps), "between_var": comps.between,
                "within_var": comps.within, "basis": "variance components"}  # fmt: skip
    if k == 1 and n >= 2:
        # One sample: between and within cannot be told apart. Treating all of Var(d) as
        # within-problem noise (which k divides) gives the fewest samples that could do.
        mde1 = minimum_detectable_effect(sd, n)
        return {"k": max(1, math.ceil((mde1 / TARGET_MDE) ** 2)), "basis": "lower bound (k=1)"}
    return {"k": None, "basis": "too few problems"}


def paired_markdown(runs: list[dict[str, Any]], paired: dict[str, Any]) -> str:
    if not paired:
        return "\n(no per-query outcomes in one of the runs: no paired test)\n"
    n = paired["paired_queries"]
    ka, kb = paired["samples_a"], paired["samples_b"]
    noise = {
        "coupled": "common random numbers: same eval seed, sample j saw the same noise",
        "greedy": "greedy decoding: no noise",
        "independent": "independent noise: different eval seeds or decoding",
    }[paired["coupling"]]
    lines = [
        "",
        f"## B vs A on the same {n} problems (k = {ka} vs {kb} samples; {noise})",
        "",
        "Paired t test over problems on the per-problem success-rate differences; 95 % "
        "intervals. MDE: the smallest true difference this n and k detect with 80 % power.",
        "",
        "| attempt | A | B | B - A | p | MDE (80 %) | discordance | k for a "
        f"{100 * paired['target_mde']:.0f}-pt MDE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attempt, name in (("first", "1st try"), ("second", "+ reflection 2nd try")):
        t = paired[attempt]
        lo, hi = t["difference_interval"]
        need = t["samples_for_target_mde"]
        need_k = "-" if need["k"] is None else (
            f">= {need['k']}" if need["basis"].startswith("lower") else str(need["k"])
        )
        lines.append(
            f"| {name} | {_pct_ci(t['a_accuracy'], t['a_interval'])} | "
            f"{_pct_ci(t['b_accuracy'], t['b_interval'])} | "
            f"{100 * t['difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
            f"{t['p_value']:.3g} | {100 * t['mde_80']:.1f} pts | {t['discordance']:.3f} | "
            f"{need_k} |"
        )
    return "\n".join(lines) + "\n"


def _pct_ci(p: float, interval: tuple[float, float]) -> str:
    return f"{100 * p:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _results_file(p: Path) -> Path:
    return p / "results.json" if p.is_dir() else p


def load_results(p: str | Path) -> dict[str, Any]:
    """An evaluation's results.json, given it or its directory."""
    return json.loads(_results_file(Path(p)).read_text())


def _examples_md(results: dict[str, Any]) -> str:
    if not results["examples"]:
        return ""
    lines = ["", "## Example reflections (paper Figure 2)", ""]
    for ex in results["examples"]:
        mark = "fixed" if ex["retry_correct"] else "not fixed"
        text = ex["reflection"].strip().replace("\n", " ")
        lines.append(f"- ({ex['reflection_tokens']} tokens, {mark}) {text[:400]}")
    return "\n".join(lines) + "\n"



def run_placebo(results: dict[str, Any], k: int, splits: int, seed: int = 0) -> dict[str, Any]:
    """The paired test's false-positive rate, model vs itself, from an evaluation that drew
    >= 2k samples per problem (each with its own keyed noise: independent draws). Every split
    assigns each problem's samples at random to two disjoint k-sample runs A and B
    (rrr.core.stats.placebo), i.e. two evaluations of one model under different noise; the share of
    splits with p < 0.05 should be near 5 %."""
    out: dict[str, Any] = {"model": results["model"], "num_queries": results["num_queries"],
                           "k": k, "pool": results.get("samples_per_problem", 1),
                           "splits": splits, "alpha": 0.05}  # fmt: skip
    for attempt in ("first", "second"):
        pools = [_outcomes(q, attempt) for q in results["per_query"]]
        pl = placebo(pools, k, splits=splits, alpha=0.05, seed=seed)
        out[attempt] = {"false_positive_rate": pl.rate, "false_positives": pl.false_positives,
                        "problems": pl.n}  # fmt: skip
    return out


def placebo_markdown(p: dict[str, Any]) -> str:
    lines = [
        f"## Placebo: {p['model']} vs itself ({p['num_queries']} problems, k = {p['k']} "
        f"samples a side from {p['pool']} per problem, {p['splits']} splits)",
        "",
        "Share of splits where the paired t test says p < 0.05 (its false-positive rate; "
        "a calibrated test gives about 5 %):",
        "",
        "| attempt | false positives | rate |",
        "|---|---|---|",
    ]
    for attempt, name in (("first", "1st try"), ("second", "+ reflection 2nd try")):
        r = p[attempt]
        lines.append(f"| {name} | {r['false_positives']} / {p['splits']} | "
                     f"{100 * r['false_positive_rate']:.1f} % |")  # fmt: skip
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        help="output directory (default: <logging.output_dir>/eval; with --compare A B, "
        "B's directory/compare, beside the results it compares)",
    )
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="compare two results.json (or their dirs)"
    )
    parser.add_argument(
        "--placebo", action="store_true",
        help="compare the model with itself: evaluate 2k samples per problem "
        "(k = eval.samples_per_problem), split them into two k-sample runs --splits times and "
        "report the paired test's false-positive rate at alpha 0.05 (placebo.json/.md)",
    )  # fmt: skip
    parser.add_argument(
        "--placebo-from", metavar="RESULTS",
        help="with --placebo: reuse the samples of an earlier results.json (or its dir) "
        "instead of evaluating",
    )  # fmt: skip
    parser.add_argument("--splits", type=int, default=200, help="placebo splits (default 200)")
    parser.add_argument(
        "--first-tries-from", metavar="RESULTS",
        help="reuse the first tries of an earlier results.json (or its dir), e.g. the vanilla "
        "model's: both models then reflect on the same fixed failures, and --compare measures "
        "the reflection and retry alone",
    )  # fmt: skip


def run(args: argparse.Namespace, cfg: Config) -> int:
    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "eval"
    if args.compare:
        # Beside B (the new model's results), not in the config's run directory, which a
        # compare of two finished evaluations has nothing to do with.
        if not args.out:
            out = _results_file(Path(args.compare[1])).parent / "compare"
        paths = compare(Path(args.compare[0]), Path(args.compare[1]), out)
        print(paths["md"].read_text())
        print(f"wrote {paths['md']} and {paths['png']}")
        return 0
    k = cfg.eval.samples_per_problem
    if args.placebo and cfg.eval.temperature == 0:
        raise ConfigError("eval.temperature: the placebo needs sampling (> 0); greedy decoding "
                          "gives one outcome per problem, identical on both sides")  # fmt: skip
    if args.placebo and args.first_tries_from:
        raise ConfigError("--placebo samples its own first tries; drop --first-tries-from")
    if args.placebo and args.placebo_from:
        results = load_results(args.placebo_from)
        pool = results.get("samples_per_problem", 1)
        if pool < 2 * k:
            raise ConfigError(
                f"eval.samples_per_problem={k}: a placebo splits each problem's samples into "
                f"two runs of k, so it needs 2k = {2 * k}; {args.placebo_from} has {pool} per "
                f"problem (set eval.samples_per_problem={pool // 2} or lower)"
            )
    else:
        reference = None
        if args.first_tries_from:
            reference = load_results(args.first_tries_from)
        results = evaluate_model(
            cfg, samples=2 * k if args.placebo else None, first_tries_from=reference
        )
        paths = write_results(results, out)
        print(paths["md"].read_text())
        print(f"results: {paths['json']}  table: {paths['md']}  chart: {paths['png']}")
    if args.placebo:
        p = run_placebo(results, k, args.splits)
        out.mkdir(parents=True, exist_ok=True)
        (out / "placebo.json").write_text(json.dumps(p, indent=2))
        (out / "placebo.md").write_text(placebo_markdown(p))
        print(placebo_markdown(p))
        print(f"placebo: {out / 'placebo.json'}")
    return 0


def evaluate_model(
    cfg: Config, samples: int | None = None, first_tries_from: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Start the generation stack, evaluate cfg.model on the held-out problems, tear down."""
    from rrr.core.models import trained_provenance
    from rrr.driver.stack import generation_stack

    with generation_stack(cfg) as stack:
        rows, info = load_eval_rows(cfg, stack.task)
        results = evaluate(
            cfg, stack.engine, rows, samples=samples, first_tries_from=first_tries_from
        )
        results.update(info)
    # Vanilla or trained, for `rrr paper-report`: null for a model rrr did not train, else the
    # export/checkpoint it came from (step, run directory, base model).
    results["trained"] = trained_provenance(cfg.model.name_or_path)
    return results
