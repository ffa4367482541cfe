"""Write one report shaped like the paper from result files: Tables 1/2 (first and second try,
vanilla vs trained), Table 3 (forgetting check), Tables 4/5 (first-try error categories),
Figure 2 (reflections before and after training, with lengths) and the training curves.
Parts with no input are marked "_missing: ..._" with the command that fills them.

RUN_DIR arguments are searched (up to 4 levels, skipping checkpoints/, tb/, failures/) for
`rrr eval` and `rrr eval-general` results.json files and training metrics.jsonl files; files may
also be named directly. Whether an `rrr eval` result is vanilla or trained: --vanilla/--trained
say so; otherwise rrr eval's own record ("trained" in results.json: null for a vanilla model);
for older files, a model directory made by `rrr export` (or a checkpoint) counts as trained and
anything else as vanilla. The report's Sources table lists each file with its role and why.

Writes report.md, report.html (self-contained: curves embedded) and curves-*.png into --out
(default <logging.output_dir>/paper-report).

  rrr paper-report runs/eval-vanilla runs/eval-trained runs/forgetting runs/qwen1.5b-countdown
  rrr paper-report runs/smoke --vanilla runs/calib1 --out runs/paper
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rrr.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="run or eval directories, or results.json / metrics.jsonl files",
    )
    parser.add_argument(
        "--vanilla", action="append", default=[], metavar="PATH",
        help="rrr eval results (file or directory) of a vanilla model",
    )  # fmt: skip
    parser.add_argument(
        "--trained", action="append", default=[], metavar="PATH",
        help="rrr eval results (file or directory) of a trained model",
    )  # fmt: skip
    parser.add_argument(
        "--out", help="output directory (default: <logging.output_dir>/paper-report)"
    )
    parser.add_argument(
        "--examples", type=int, default=3, help="reflections shown per model in Figure 2"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    from rrr import paper_report as pr

    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "paper-report"
    given = [(Path(p), None) for p in args.run_dirs]
    given += [(Path(p), "vanilla") for p in args.vanilla] + [
        (Path(p), "trained") for p in args.trained
    ]
    if not given:
        print(
            "rrr paper-report: name at least one RUN_DIR, --vanilla or --trained", file=sys.stderr
        )
        return 2
    sources: dict[Path, pr.Source] = {}
    for path, role in given:
        try:
            files = pr.discover([path])
        except FileNotFoundError as exc:
            print(f"rrr paper-report: {exc}", file=sys.stderr)
            return 1
        for f in files:
            # An explicit role wins over the same file found again under a RUN_DIR.
            if role is not None or f not in sources:
                sources[f] = pr.load_source(f, role)
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(sources.values(), key=lambda s: str(s.path))
    md = pr.build_report(ordered, out, examples=args.examples)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(pr.markdown_to_html(md, "rrr paper report", base=out))
    used = sum(1 for s in ordered if s.kind != "ignored")
    print(f"{used} result files used ({len(ordered) - used} ignored); "
          f"{md.count('_missing')} parts missing")  # fmt: skip
    print(f"report: {out / 'report.md'}  html: {out / 'report.html'}")
    return 0
