"""Rollout workers as Ray actors, and a fleet that spreads one phase's batch over all of them.

The fleet is what the episode engine sees as its `Generator`: one `generate` call per phase is
split into R contiguous shards (one per worker), sent in parallel, and stitched back in order.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from actors.vllm_engine import EngineStartError, VLLMEngine
from rrr.config import Config
from rrr.generation import GenRequest, Sample

log = logging.getLogger(__name__)


@ray.remote
class RolloutWorker(VLLMEngine):
    """A Ray actor owning one vLLM engine (see VLLMEngine for the API)."""


def engine_kwargs(cfg: Config, model_path: str) -> dict[str, Any]:
    r = cfg.rollout
    return {
        "model_path": model_path,
        "dtype": cfg.model.dtype,
        "max_model_len": cfg.model.max_model_len,
        "tensor_parallel_size": r.tensor_parallel_size,
        "gpu_memory_utilization": r.gpu_memory_utilization,
        "kv_cache_gib": r.kv_cache_gib,
        "cpu_threads": r.cpu_threads,
        "enforce_eager": r.enforce_eager,
        "enable_prefix_caching": r.enable_prefix_caching,
        "enable_sleep_mode": r.enable_sleep_mode,
        "seed": r.seed,
        "trust_remote_code": cfg.model.trust_remote_code,
    }


class RolloutFleet:
    """R rollout workers; satisfies rrr.generation.Generator."""

    def __init__(self, workers: list[Any]) -> None:
        if not workers:
            raise ValueError("a rollout fleet needs at least one worker")
        self.workers = workers

    @classmethod
    def start(
        cls, cfg: Config, model_path: str, *, placement_group: Any = None, timeout_s: float = 900
    ) -> RolloutFleet:
        """Start cfg.rollout.num_workers actors and wait until each engine is up.

        A start-up failure surfaces as EngineStartError with vLLM's cause, never a hang.
        """
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        r = cfg.rollout
        workers = []
        for i in range(r.num_workers):
            options: dict[str, Any] = {
                "num_cpus": r.num_cpus_per_worker,
                "num_gpus": r.num_gpus_per_worker,
            }
            if placement_group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=placement_group, placement_group_bundle_index=i
                )
            workers.append(
                RolloutWorker.options(**options).remote(**engine_kwargs(cfg, model_path))
            )
        try:
            ray.get([w.ping.remote() for w in workers], timeout=timeout_s)
        except ray.exceptions.RayActorError as exc:
            for w in workers:
                ray.kill(w)
            cause = exc.cause if getattr(exc, "cause", None) else exc
            raise EngineStartError(f"a rollout worker failed to start: {cause}") from exc
        except ray.exceptions.GetTimeoutError as exc:
            for w in workers:
                ray.kill(w)
            raise EngineStartError(
                f"rollout workers not ready after {timeout_s:.0f}s (resources busy?)"
            ) from exc
        return cls(workers)

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        if not requests:
            return []
        shards = _split(requests, len(self.workers))
        refs = [w.generate.remote(s) for w, s in zip(self.workers, shards) if s]
        results: list[list[Sample]] = []
        for part in ray.get(refs):
            results.extend(part)
        return results

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return ray.get([getattr(w, method).remote(*args) for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """Contiguous shards of near-equal size (order preserved when concatenated)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out
