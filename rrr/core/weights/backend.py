"""Which transport a weight sync takes, decided once per connect from where the weights live:
the device kind and node of learner rank 0 and of every vLLM worker. One rule for `rrr plan`
(a planned placement) and for the driver at run time (devices the actors report)."""

from __future__ import annotations

from dataclasses import dataclass


def collective_backend(device_kind: str) -> str:
    """The torch.distributed backend for tensors on `device_kind`: NCCL between GPUs, gloo on
    CPUs. The one place this is decided; the same code runs on both, only this differs."""
    return "nccl" if device_kind == "cuda" else "gloo"


@dataclass(frozen=True)
class DeviceRef:
    """Where one process's weights live: node, device kind ("cuda"/"cpu") and, for a GPU, an id
    that is equal exactly when two processes share the device (its UUID at run time, the
    planned node:index in `rrr plan`)."""

    node: str
    kind: str
    device_id: str | None = None


def choose_sync_backend(
    requested: str, learner: DeviceRef, receivers: list[DeviceRef]
) -> tuple[str, str]:
    """The weight-sync backend, and why, for learner rank 0 and every vLLM worker. One rule for
    `rrr plan` and for the driver at run time. ValueError when the requested backend cannot
    work here (with the reason and the key to change).

    `collective`: a torch.distributed group of learner rank 0 and every vLLM worker (NCCL on
    GPUs, gloo on CPUs). NCCL cannot put two ranks on one device, so where learner rank 0
    shares its GPU with a vLLM worker (colocated) the weights go through `object_store`.
    """
    if requested == "object_store":
        return "object_store", "sync.backend=object_store"
    kinds = {r.kind for r in receivers}
    if kinds != {learner.kind}:
        if requested != "auto":
            raise ValueError(
                f"sync.backend={requested}: learner rank 0 holds its weights on {learner.kind}, "
                f"the vLLM workers on {', '.join(sorted(kinds))}: no common group; use "
                "sync.backend=object_store (or auto)"
            )
        return "object_store", "learner and vLLM workers on different device kinds"
    gpu = learner.kind == "cuda"
    if requested == "nccl" and not gpu:
        raise ValueError(
            "sync.backend=nccl needs the weights on GPUs; they are on cpu here "
            "(sync.backend=collective uses gloo on CPU, or auto)"
        )
    shared = [r for r in receivers if gpu and r.node == learner.node and r.device_id is not None
              and r.device_id == learner.device_id]  # fmt: skip
    if shared:
        if requested != "auto":
            raise ValueError(
                f"sync.backend={requested}: learner rank 0 shares its GPU with a vLLM worker "
                "(colocated) and NCCL cannot form a group of two ranks on one device; use "
                "sync.backend=auto or object_store"
            )
        return "object_store", (
            "learner rank 0 shares its GPU with a vLLM worker (colocated): NCCL cannot form a "
            "group of two ranks on one device, so the weights go through /dev/shm"
        )
    return "collective", f"{collective_backend(learner.kind)} broadcast from rrr.learner rank 0"
