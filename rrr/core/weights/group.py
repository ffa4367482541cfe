"""Joining and leaving the process group a weight sync broadcasts in: learner rank 0 is its
rank 0, every vLLM worker of every rollout worker one more rank. Both halves (learner/
sync_sender.py, actors/worker_extension.py) call these, so they agree on how the group is made.
The group is never the global one the learner ranks train with, nor one of vLLM's own.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any


def init_group(
    host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float
) -> Any:
    """A process group of its own (never the global one the learner ranks train with)."""
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    def make() -> Any:
        return stateless_init_torch_distributed_process_group(
            host, port, rank, world_size, backend, timeout=timedelta(seconds=timeout_s)
        )

    if backend != "nccl":
        return make()
    # vLLM's own NCCL environment handling, on both sides, so sender and receivers agree.
    from vllm.utils.nccl import unpinned_nccl_env

    with unpinned_nccl_env():
        return make()


def leave_group(group: Any) -> None:
    """Destroy a sync group (both halves call this; a None group is a no-op) with vLLM's
    counterpart of the helper that made it. Its `shutdown()` aborts an NCCL communicator, so a
    peer that died or left cannot hang a reconnect or the process's exit in NCCL's teardown;
    `torch.distributed.destroy_process_group` does not know a stateless group and only raised.
    """
    if group is None:
        return
    from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

    # A group whose peer is already gone may fail to shut down cleanly; it is dropped anyway.
    with contextlib.suppress(RuntimeError, ValueError):
        stateless_destroy_torch_distributed_process_group(group)
