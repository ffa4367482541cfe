"""The `rrr` command line: one subcommand per module, a YAML config plus dotted overrides.

Subcommand modules are imported only when chosen, so `rrr --help` never pays for vLLM, Ray or
torch imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap

from rrr.core.config import ConfigError, describe, load_config
from rrr.core.errors import RRRError

# name -> (module with add_arguments(parser) and run(args, cfg) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build-failures": (
        "rrr.driver.build_failures",
        "sample K first attempts per query with vLLM and keep the failures (paper 4.3)",
    ),
    "calibrate": (
        "rrr.driver.calibrate",
        "does a task carry a GRPO signal? first-try rate, retry success, frac_zero_std",
    ),
    "train": (
        "rrr.driver.train",
        "GRPO on reflection tokens: rollout, verify, learn, sync, checkpoint (the Ray job)",
    ),
    "eval": (
        "rrr.driver.evaluate",
        "first-try and second-try (after one reflection) accuracy, error categories (Tables 1-5)",
    ),
    "seeds": (
        "rrr.driver.seeds",
        "the run-level test over training seeds: trained - vanilla per run, t over runs, controls",
    ),
    "plan": (
        "rrr.driver.plan",
        "placement, sync backend and per-GPU memory of a config on a cluster; starts nothing",
    ),
    "tasks": ("rrr.driver.list_tasks", "list the installed tasks (plugins included)"),
    "config": ("rrr.driver.show_config", "print the resolved config, or every key with --keys"),
    "report": ("rrr.driver.report", "training curves (report.png) and summary of metrics.jsonl"),
    "export": (
        "rrr.driver.export",
        "write a run's trained policy (newest valid checkpoint) as a Hugging Face directory",
    ),
    "eval-general": (
        "rrr.driver.eval_general",
        "forgetting check: lm-eval benchmarks, vanilla vs trained, differences (Table 3)",
    ),
    "paper-report": (
        "rrr.driver.paper_report",
        "one Markdown/HTML report shaped like the paper (Tables 1-5, Figure 2, curves)",
    ),
}

EPILOG = """\
Every command takes --config FILE (a YAML preset from configs/) and dotted overrides:
  rrr eval --config configs/smoke-cpu.yaml data.eval_limit=20 episode.num_reflections=1
List every key with its default and meaning: rrr config --keys
"""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML preset (configs/*.yaml); defaults if absent")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the file, e.g. learner.lr=1e-6",
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrr",
        description=(
            "rrr: Reflect, Retry, Reward. Train a language model to write self-reflections that "
            "turn failed attempts at verifiable tasks into successes (GRPO on reflection tokens "
            "only), on Ray with vLLM rollouts and a DeepSpeed learner."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=textwrap.dedent(module.__doc__ or help_text),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_config_args(p)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if hasattr(args, "run_dirs"):
        # Two "*" positionals (overrides, then the command's paths): argparse gives every word
        # to the first. Words without "=" are paths (`rrr paper-report DIR DIR key=value`).
        args.run_dirs = [w for w in args.overrides if "=" not in w] + args.run_dirs
        args.overrides = [w for w in args.overrides if "=" in w]
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"rrr {args.command}: bad config: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args, cfg) or 0)
    except RRRError as exc:  # a message that says what to do; a traceback would bury it
        logging.getLogger("rrr").debug("traceback", exc_info=True)
        print(f"rrr {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def config_keys_text() -> str:
    lines = []
    for key, tp, default, help_text in describe():
        lines.append(f"{key} ({tp}, default {default!r})")
        lines.extend("    " + line for line in textwrap.wrap(help_text, 88))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
