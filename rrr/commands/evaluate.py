"""Evaluate a model: first-try accuracy, second-try accuracy after one self-reflection
(paper Tables 1/2), first-try and second-try error categories (Tables 4/5), average reflection
length and example reflections (Figure 2).

Writes results.json, results.md and results.png into --out. With --compare A B, puts two
earlier runs side by side instead (e.g. vanilla vs trained) and starts no model.

  rrr eval --config configs/smoke-cpu.yaml --out runs/eval-vanilla
  rrr eval --config configs/smoke-cpu.yaml model.name_or_path=runs/smoke/export \\
      --out runs/eval-trained
  rrr eval --compare runs/eval-vanilla runs/eval-trained --out runs/compare
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rrr.config import Config

log = logging.getLogger("rrr.eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: <logging.output_dir>/eval)")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="compare two results.json (or their dirs)"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    from rrr import evaluation

    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "eval"
    if args.compare:
        paths = evaluation.compare(Path(args.compare[0]), Path(args.compare[1]), out)
        print(paths["md"].read_text())
        print(f"wrote {paths['md']} and {paths['png']}")
        return 0

    from rrr.models import trained_provenance
    from rrr.runtime import generation_stack
    from rrr.tasks.loading import load_rows

    with generation_stack(cfg) as stack:
        source = cfg.data.eval_source or cfg.data.source
        split = cfg.data.eval_split if cfg.data.eval_source else cfg.data.split
        loaded = load_rows(stack.task, source, split=split, limit=cfg.data.eval_limit)
        log.info(loaded.summary())
        results = evaluation.evaluate(cfg, stack.engine, loaded.rows)
        results["skipped_rows"] = dict(loaded.skipped)
    # Vanilla or trained, for `rrr paper-report`: null for a model rrr did not train, else the
    # export/checkpoint it came from (step, run directory, base model).
    results["trained"] = trained_provenance(cfg.model.name_or_path)
    paths = evaluation.write_results(results, out)
    print(paths["md"].read_text())
    print(f"results: {paths['json']}  table: {paths['md']}  chart: {paths['png']}")
    return 0
