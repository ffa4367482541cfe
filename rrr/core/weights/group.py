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
    """Leave a sync group (both halves call this; a None group is a no-op) by aborting it.

    Abort, never shut down. In torch 2.13 `ProcessGroup.shutdown()` is the normal exit
    (torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp:980-981, "Destroy (shutdown) this
    backend -- normal exit"): it flushes (`ncclCommFinalize`) and then `ncclCommDestroy`s,
    and it blocks by design (pytorch PR #141510: "for a bad program, a hang is expected").
    Once a peer has crashed, that destroy can hang the healthy ranks (pytorch PR #180611), and
    NCCL wants every surviving rank on a node to abort (NCCL issue #863). `abort()`
    (ProcessGroupNCCL.hpp:983-985, "similar to ncclCommAbort") is the call that cannot wait on a
    peer; it is itself bounded by the group's timeout (sync.timeout_s).

    Nothing is lost by aborting a healthy group: it carries nothing between pushes (both halves
    wait for every broadcast of a push before anyone leaves), so there is nothing to flush. So
    every leave aborts, whether or not a peer is known dead: one path, and a peer that died
    unnoticed cannot hang it. vLLM's `stateless_destroy_torch_distributed_process_group` calls
    `shutdown()`, which is why it is not used here. On gloo both calls are no-ops
    (c10d/Backend.hpp:522-529, not overridden by ProcessGroupGloo): a dead gloo peer shows as
    "Connection closed by peer" on the next collective, and leaving returns at once.
    """
    if group is None:
        return
    # The group was made unnamed (never registered with c10d), so there is nothing to
    # unregister; a group whose communicator already failed may raise here: dropped anyway.
    with contextlib.suppress(RuntimeError):
        group.abort()
