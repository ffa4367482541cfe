"""Verifiable tasks (paper §4): Countdown equations, APIGen function calling, code that must
pass its tests, and any task a plugin installs (docs/plugins.md).

``get_task(name_or_target, family, **options)`` builds a task found through the ``rrr.tasks``
entry points (``rrr.core.tasks.registry``); ``detect_family`` picks the Appendix A.1 prompt family
for
a model; data loading lives in ``rrr.core.tasks.loading``.
"""

from __future__ import annotations

from rrr.core.tasks.apigen import ApiGenTask
from rrr.core.tasks.base import (
    FAMILIES,
    Message,
    RowError,
    Task,
    TaskProtocol,
    check_family,
    detect_family,
)
from rrr.core.tasks.countdown import CountdownTask
from rrr.core.tasks.registry import TaskNotFound, get_task, installed_tasks, task_class

__all__ = [
    "FAMILIES",
    "ApiGenTask",
    "CountdownTask",
    "Message",
    "RowError",
    "Task",
    "TaskNotFound",
    "TaskProtocol",
    "check_family",
    "detect_family",
    "get_task",
    "installed_tasks",
    "task_class",
]
