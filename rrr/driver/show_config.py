"""Print the resolved configuration (preset + overrides) as YAML, or every key with its help.

rrr config --config configs/smoke-cpu.yaml learner.lr=1e-6
rrr config --keys
"""

from __future__ import annotations

import argparse

import yaml

from rrr.core.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys", action="store_true", help="list every key with its type, default and meaning"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.keys:
        from rrr.driver.cli import config_keys_text

        print(config_keys_text())
    else:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
