"""The CPUs this process may use: its affinity mask, not the machine's count.

`os.cpu_count()` counts the machine. A process started under `taskset`, in a container with a
cpuset, by Slurm with `--cpus-per-task`, or by a parent that pinned itself, may run on fewer;
threads sized or bound from the machine's count then pile onto the allowed cores (or leave
them) and spin against each other. Children inherit the mask, so every actor a pinned Ray
head starts sees the same set.
"""

from __future__ import annotations

import os


def usable_cpus() -> list[int]:
    """The ids of the CPUs this process may run on, ascending."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS has no affinity mask
        return list(range(os.cpu_count() or 1))
