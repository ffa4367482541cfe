"""Bring up what a command needs: Ray, the model, the task, rollout workers, verifiers.

Shared by `rrr build-failures`, `rrr eval` and `rrr train`, so all three start the same way.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rrr.chat import ChatRenderer
from rrr.config import Config
from rrr.episodes import EpisodeEngine
from rrr.models import resolve_model
from rrr.tasks import detect_family, get_task
from rrr.tasks.base import Task

log = logging.getLogger(__name__)


def init_ray(cfg: Config) -> Any:
    """Join the cluster a job was submitted to, or start a local Ray.

    Never passes a runtime_env: under `ray job submit` the job carries it, and a second one
    fails to merge (NOTES-cpu.md).
    """
    import ray

    if ray.is_initialized():
        return ray
    address = cfg.cluster.address
    if address == "local":
        ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False)
    elif address == "auto":
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address="auto")
        else:
            ray.init(num_cpus=cfg.cluster.num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    log.info("ray: %s", ray.cluster_resources())
    return ray


@dataclass
class Stack:
    """A running generation stack: everything the episode logic needs."""

    cfg: Config
    model_path: str
    task: Task
    renderer: ChatRenderer
    fleet: Any  # actors.rollout_worker.RolloutFleet
    verifier: Any  # actors.verifier_pool.VerifierPool
    engine: EpisodeEngine

    def shutdown(self) -> None:
        self.fleet.shutdown()
        self.verifier.shutdown()


def load_task(cfg: Config, model_path: str) -> Task:
    """The configured task in the model's prompt family (paper A.1: chosen per model family)."""
    del model_path  # the family comes from the configured name, which users recognise
    options = {"fewshot": cfg.data.fewshot} if cfg.data.fewshot else {}
    return get_task(
        cfg.data.task, detect_family(cfg.model.name_or_path, cfg.model.family), **options
    )


@contextmanager
def generation_stack(cfg: Config):
    """Ray + model + task + R rollout workers + verifier pool + episode engine; torn down after."""
    from transformers import AutoTokenizer

    from actors.rollout_worker import RolloutFleet
    from actors.verifier_pool import VerifierPool

    model_path = resolve_model(cfg.model.name_or_path)
    task = load_task(cfg, model_path)
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, trust_remote_code=cfg.model.trust_remote_code
    )
    renderer = ChatRenderer(tokenizer)
    init_ray(cfg)
    fleet = RolloutFleet.start(cfg, model_path)
    v = cfg.verifier
    verifier = VerifierPool(
        task, num_workers=v.num_workers, timeout_s=v.timeout_s, batch_size=v.batch_size
    )
    engine = EpisodeEngine(task, renderer, fleet, verifier, cfg.episode, cfg.model.max_model_len)
    stack = Stack(cfg, model_path, task, renderer, fleet, verifier, engine)
    try:
        yield stack
    finally:
        stack.shutdown()
