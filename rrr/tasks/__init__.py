"""Verifiable tasks (paper §4): Countdown equations and APIGen function calling.

``get_task(name, family, **options)`` builds a task; ``detect_family`` picks the Appendix A.1
prompt family for a model; data loading lives in ``rrr.tasks.loading``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rrr.tasks.apigen import ApiGenTask
from rrr.tasks.base import FAMILIES, Message, RowError, Task, check_family, detect_family
from rrr.tasks.countdown import CountdownTask

# Registry (name -> constructor taking the family plus task-specific keyword options).
TASKS: dict[str, Callable[..., Task]] = {
    CountdownTask.name: CountdownTask,
    ApiGenTask.name: ApiGenTask,
}


def get_task(name: str, family: str = "qwen", **options: Any) -> Task:
    """Build a task; unknown names or families raise ``ValueError``, unknown options
    ``TypeError`` (e.g. ``get_task("apigen", "llama", retry_user="query")``)."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}") from None
    return factory(check_family(family), **options)


__all__ = [
    "FAMILIES",
    "TASKS",
    "ApiGenTask",
    "CountdownTask",
    "Message",
    "RowError",
    "Task",
    "detect_family",
    "get_task",
]
