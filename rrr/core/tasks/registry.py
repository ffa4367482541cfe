"""Find tasks: installed plugins (Python entry points, group ``rrr.tasks``) or ``pkg.module:Class``.

Every task, Countdown and APIGen included, is registered the way a third-party one is: an entry
point in its distribution's metadata (rrr's own are in pyproject.toml). Listing reads metadata
only; a task's module is imported when the task is built, so a broken plugin cannot break
``rrr --help`` or another task's run.

    [project.entry-points."rrr.tasks"]
    wordle = "my_pkg.tasks:WordleTask"
"""

from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distributions
from typing import Any

from rrr.core.errors import RRRError
from rrr.core.tasks.base import Task, check_family, check_task_class

ENTRY_POINT_GROUP = "rrr.tasks"
# `pkg.module:Class` (dotted module, one attribute): what `data.task` takes besides a name.
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class TaskNotFound(RRRError, ValueError):
    """``data.task`` names no installed task, or a ``pkg.module:Class`` that does not import."""


@dataclass(frozen=True)
class TaskInfo:
    """One installed task as its entry point declares it (nothing imported)."""

    name: str
    target: str  # "pkg.module:Class"
    distribution: str | None  # the package that registered it


def _entry_points() -> list[EntryPoint]:
    """Every ``rrr.tasks`` entry point of every distribution on sys.path.

    Not ``importlib.metadata.entry_points(group=...)``: that keeps one distribution per name, the
    first on sys.path, so a stale ``rrr.egg-info`` in the working directory (left by an old
    build, found first when Python runs from the checkout) would hide the installed metadata
    and with it every task.
    """
    found: list[EntryPoint] = []
    for dist in distributions():
        found += [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    return found


def installed_tasks() -> dict[str, TaskInfo]:
    """Name -> where it lives, for every task registered under ``rrr.tasks``, sorted by name.

    Two distributions registering one name is a packaging mistake; the first one found wins,
    as importlib.metadata orders them (sys.path order).
    """
    found: dict[str, TaskInfo] = {}
    for ep in _entry_points():
        if ep.name not in found:
            dist = ep.dist.name if ep.dist is not None else None
            found[ep.name] = TaskInfo(ep.name, ep.value, dist)
    return dict(sorted(found.items()))


def is_target(spec: str) -> bool:
    """Whether ``spec`` is written as ``pkg.module:Class`` rather than a registered name."""
    return ":" in spec


def check_spec(spec: str) -> str | None:
    """Why ``spec`` cannot name a task, or None. Cheap: names are checked against metadata,
    targets only for their shape (importing is left to ``task_class``)."""
    if is_target(spec):
        if not _TARGET.fullmatch(spec):
            return f"{spec!r} is not of the form pkg.module:Class"
        return None
    installed = installed_tasks()
    if spec not in installed:
        return (
            f"unknown task {spec!r}; installed: {sorted(installed)} (`rrr tasks` lists "
            "them), or give a class as pkg.module:Class"
        )
    return None


def task_class(spec: str) -> type[Task]:
    """The class a registered name or a ``pkg.module:Class`` stands for, checked against the
    task protocol (``rrr.core.tasks.base.check_task_class``)."""
    problem = check_spec(spec)
    if problem:
        raise TaskNotFound(problem)
    target = spec if is_target(spec) else installed_tasks()[spec].target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskNotFound(f"task {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise TaskNotFound(f"task {spec!r}: module {module_name!r} has no {attr!r}") from None
    problem = check_task_class(cls)
    if problem:
        raise TaskNotFound(f"task {spec!r} ({target}) does not follow the task protocol: {problem}")
    return cls


def get_task(spec: str, family: str = "qwen", **options: Any) -> Task:
    """Build a task from a registered name or ``pkg.module:Class``.

    Unknown names or families raise ``ValueError`` (``TaskNotFound`` for the task), unknown
    options ``TypeError``. The task must pickle: the verifier pool ships it to its actors.
    """
    cls = task_class(spec)
    task = cls(check_family(family), **options)
    try:
        pickle.dumps(task)
    except Exception as exc:  # pickle raises TypeError, AttributeError, PicklingError...
        raise TaskNotFound(
            f"task {spec!r} does not pickle ({type(exc).__name__}: {exc}); it runs in the "
            "verifier pool's actors, so keep open files, locks and lambdas out of its attributes"
        ) from exc
    return task
