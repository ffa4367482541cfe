"""Build a failure dataset (paper section 4.3): sample K first attempts per query with vLLM
(prefix caching shares each prompt across its K samples), verify them, and keep the queries the
model fails ("any" of K failed, the paper's rule, or "all" of K).

Writes parquet shards plus manifest.json into --out (schema: rrr/core/failure_data.py). Sharded and
resumable: rerunning the same command skips finished shards; a crash loses at most one shard.

  rrr build-failures --config configs/smoke-cpu.yaml --out runs/failures \\
      data.source=data/countdown_sample.jsonl failures.samples_per_query=8
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rrr.core.config import Config

log = logging.getLogger("rrr.build_failures")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: <logging.output_dir>/failures)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "failures"
    summary = build_failures(cfg, out)
    print(json.dumps(summary, indent=2))
    print(f"failure dataset: {out}")
    return 0


def build_failures(cfg: Config, out: Path, stack: Any = None) -> dict[str, Any]:
    """Build (or finish building) the failure dataset at `out`; returns a summary.

    `stack` lets a caller that already runs a generation stack (the trainer, tests) reuse it;
    when every shard is already done, no engine is started at all.
    """
    from rrr.core import failure_data as fd
    from rrr.core.tasks.loading import load_rows
    from rrr.driver.stack import generation_stack, load_model, load_task

    f = cfg.failures
    task = stack.task if stack is not None else load_task(cfg)
    loaded = load_rows(task, cfg.data.source, split=cfg.data.split, limit=cfg.data.limit)
    log.info(loaded.summary())
    rows = loaded.rows
    shards = [rows[i : i + f.shard_size] for i in range(0, len(rows), f.shard_size)]
    done = fd.done_shards(out)
    todo = [i for i in range(len(shards)) if i not in done]
    if todo and stack is None:
        # A bad model (no such path, no chat template) fails before Ray starts, and before the
        # manifest ties `out` to it: a rerun with the model fixed must not be refused.
        load_model(cfg)
    fd.prepare_dir(
        out,
        {
            "model": cfg.model.name_or_path,
            "task": task.name,
            "family": task.family,
            "source": cfg.data.source,
            "split": cfg.data.split,
            "limit": cfg.data.limit,
            "samples_per_query": f.samples_per_query,
            "keep": f.keep,
            "shard_size": f.shard_size,
            "temperature": f.temperature,
            "max_tokens": f.max_tokens,
            "num_queries": len(rows),
        },
    )
    t0 = time.perf_counter()
    counts = {"queries": 0, "kept": 0}
    if todo:
        with generation_stack(cfg) if stack is None else nullcontext(stack) as running:
            _run_shards(cfg, out, running, shards, todo, counts)
    elapsed = time.perf_counter() - t0
    total_records, _ = fd.read_failures(out)
    return {
        "out": str(out),
        "queries": len(rows),
        "skipped_rows": dict(loaded.skipped),
        "shards": len(shards),
        "shards_skipped_as_done": len(shards) - len(todo),
        "queries_this_run": counts["queries"],
        "failures_this_run": counts["kept"],
        "failures_total": len(total_records),
        "samples_this_run": counts["queries"] * f.samples_per_query,
        "seconds": round(elapsed, 2),
        "queries_per_s": round(counts["queries"] / elapsed, 3) if counts["queries"] else None,
    }


def _run_shards(
    cfg: Config,
    out: Path,
    stack: Any,
    shards: list[list[dict[str, Any]]],
    todo: list[int],
    counts: dict[str, int],
) -> None:
    from rrr.core import failure_data as fd
    from rrr.driver.progress import progress_bar

    total = sum(len(s) for s in shards)
    done = total - sum(len(shards[i]) for i in todo)  # shards a run before this one wrote
    bar = progress_bar(cfg.logging.progress, total, "build-failures", "q", initial=done)
    t0 = time.perf_counter()
    for index in todo:
        records = _failures_of(cfg, stack, shards[index])
        fd.write_shard(out, index, records)
        counts["kept"] += len(records)
        counts["queries"] += len(shards[index])
        bar.update(len(shards[index]))
        rate = counts["queries"] / (time.perf_counter() - t0)
        bar.set_postfix(failures=counts["kept"], qps=f"{rate:.2f}")
    bar.close()


def _failures_of(cfg: Config, stack: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sample K per query (one generate call for the shard) and keep the failing queries."""
    from rrr.core import failure_data as fd

    f = cfg.failures
    samples, verdicts, _ = stack.engine.first_attempts(
        rows, n=f.samples_per_query, temperature=f.temperature, max_tokens=f.max_tokens
    )
    return fd.failure_records(rows, samples, verdicts, stack.task, f.keep, cfg.model.name_or_path)
