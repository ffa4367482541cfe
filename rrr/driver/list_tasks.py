"""List the installed tasks: every entry point of the `rrr.tasks` group (rrr's own tasks and
plugins alike), the class each names, the package that registered it and its error
categories. A plugin that fails to import is listed with the reason, not hidden.

  rrr tasks
  rrr train --config configs/smoke-cpu.yaml data.task=NAME          # a listed name
  rrr train --config configs/smoke-cpu.yaml data.task=pkg.mod:Class # or any class
"""

from __future__ import annotations

import argparse

from rrr.core.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: the config arguments are shared by every command


def describe_tasks() -> list[str]:
    """One block per installed task, in name order."""
    from rrr.core.tasks.registry import installed_tasks, task_class

    lines = []
    for name, info in installed_tasks().items():
        try:
            cats = ", ".join(task_class(name).error_categories)
        except ValueError as exc:  # TaskNotFound: shown, so a broken plugin is visible
            cats = f"(does not load: {exc})"
        lines += [
            f"{name}  {info.target}  [{info.distribution or 'unknown package'}]",
            f"    error categories: {cats}",
        ]
    return lines


def run(args: argparse.Namespace, cfg: Config) -> int:
    lines = describe_tasks()
    print("\n".join(lines) if lines else "no tasks installed (is rrr installed? pip install -e .)")
    return 0
