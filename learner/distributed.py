"""Process-group set-up and RNG state of one learner rank. No model code here."""

from __future__ import annotations

import os
import random
import socket
import sys
from typing import Any

import numpy as np
import torch

from rrr.core.weights.backend import collective_backend


def free_address() -> tuple[str, int]:
    """This node's IP and a free TCP port (for MASTER_ADDR / MASTER_PORT)."""
    # Ray is asked only where it is already imported (a Ray actor): a lone rank on a machine
    # with torch alone, or outside Ray, never imports it (bench/learner_check.py).
    ray = sys.modules.get("ray")
    try:
        addr = ray.util.get_node_ip_address() if ray is not None else "127.0.0.1"
    except Exception:  # outside Ray
        addr = "127.0.0.1"
    with socket.socket() as s:
        s.bind(("", 0))
        return addr, int(s.getsockname()[1])


def cpu_threads(
    requested: int, *, share_cores: bool, reserved: float, ranks: int, cores: int
) -> int:
    """Torch threads for one learner rank on CPU (learner.cpu_threads). Ray sets
    OMP_NUM_THREADS to the CPUs an actor reserves (1), so by default a CPU step ran on one core
    while the others waited for it; when nothing runs beside the learner (`share_cores`: the
    rollout waits for each step), the ranks share the node's cores instead."""
    if requested > 0:
        return requested
    if share_cores:
        return max(1, cores // max(1, ranks))
    return max(1, int(reserved))


def init_distributed(
    rank: int, world_size: int, master_addr: str, master_port: int, device: torch.device
) -> None:
    """The env vars are what DeepSpeed reads; torch.distributed is initialised from them."""
    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK="0",  # Ray exposes exactly the actor's own GPU, as device 0
    )
    import torch.distributed as dist

    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            collective_backend(device.type),
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=rank,
            world_size=world_size,
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG a step may draw from, for a bit-identical resume."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
