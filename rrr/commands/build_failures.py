"""Build a failure dataset (paper section 4.3): sample K first attempts per query with vLLM
(prefix caching shares each prompt across its K samples), verify them, and keep the queries the
model fails ("any" of K failed, the paper's rule, or "all" of K).

Writes parquet shards plus manifest.json into --out (schema: rrr/failure_data.py). Sharded and
resumable: rerunning the same command skips finished shards; a crash loses at most one shard.

  rrr build-failures --config configs/smoke-cpu.yaml --out runs/failures \\
      data.source=../shared/data/countdown_sample.jsonl failures.samples_per_query=8
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from rrr.config import Config

log = logging.getLogger("rrr.build_failures")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", help="output directory (default: <logging.output_dir>/failures)"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "failures"
    summary = build_failures(cfg, out)
    print(json.dumps(summary, indent=2))
    print(f"failure dataset: {out}")
    return 0


def build_failures(cfg: Config, out: Path, stack: Any = None) -> dict[str, Any]:
    """Build (or finish building) the failure dataset at `out`; returns a summary.

    `stack` lets a caller that already runs a generation stack (the trainer) reuse it.
    """
    from rrr.runtime import generation_stack

    if stack is not None:
        return _build(cfg, out, stack)
    with generation_stack(cfg) as stack:
        return _build(cfg, out, stack)


def _build(cfg: Config, out: Path, stack: Any) -> dict[str, Any]:
    from tqdm import tqdm

    from rrr import failure_data as fd
    from rrr.tasks.loading import load_rows

    f = cfg.failures
    loaded = load_rows(stack.task, cfg.data.source, split=cfg.data.split, limit=cfg.data.limit)
    log.info(loaded.summary())
    rows = loaded.rows
    fd.prepare_dir(out, {
        "model": cfg.model.name_or_path, "task": stack.task.name, "family": stack.task.family,
        "source": cfg.data.source, "split": cfg.data.split, "limit": cfg.data.limit,
        "samples_per_query": f.samples_per_query, "keep": f.keep, "shard_size": f.shard_size,
        "temperature": f.temperature, "max_tokens": f.max_tokens, "num_queries": len(rows),
    })  # fmt: skip
    shards = [rows[i : i + f.shard_size] for i in range(0, len(rows), f.shard_size)]
    done = fd.done_shards(out)
    kept = queries = samples = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(rows), desc="build-failures", unit="q", disable=not cfg.logging.progress)
    bar.update(sum(len(s) for i, s in enumerate(shards) if i in done))
    for index, shard in enumerate(shards):
        if index in done:
            continue
        records = _failures_of(cfg, stack, shard)
        fd.write_shard(out, index, records)
        kept += len(records)
        queries += len(shard)
        samples += len(shard) * f.samples_per_query
        bar.update(len(shard))
        bar.set_postfix(failures=kept, qps=f"{queries / (time.perf_counter() - t0):.2f}")
    bar.close()
    elapsed = time.perf_counter() - t0
    total_records, _ = fd.read_failures(out)
    return {
        "out": str(out),
        "queries": len(rows),
        "skipped_rows": dict(loaded.skipped),
        "shards": len(shards),
        "shards_skipped_as_done": len(done),
        "queries_this_run": queries,
        "failures_this_run": kept,
        "failures_total": len(total_records),
        "samples_this_run": samples,
        "seconds": round(elapsed, 2),
        "queries_per_s": round(queries / elapsed, 3) if queries and elapsed > 0 else None,
    }


def _failures_of(cfg: Config, stack: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sample K per query (one generate call for the shard) and keep the failing queries."""
    f = cfg.failures
    samples, verdicts, _ = stack.engine.first_attempts(
        rows, n=f.samples_per_query, temperature=f.temperature, max_tokens=f.max_tokens
    )
    records = []
    for row, group, group_verdicts in zip(rows, samples, verdicts):
        failed = [(s, v) for s, v in zip(group, group_verdicts) if not v.correct]
        keep = bool(failed) if f.keep == "any" else len(failed) == len(group)
        if not keep:
            continue
        sample, verdict = failed[0]
        records.append({
            "query_key": stack.task.row_key(row), "row": json.dumps(row),
            "failed_response": sample.text, "failed_token_ids": list(sample.token_ids),
            "failed_error": verdict.error or "", "num_samples": len(group),
            "num_failed": len(failed), "model": cfg.model.name_or_path,
            "task": stack.task.name, "family": stack.task.family,
        })  # fmt: skip
    return records
