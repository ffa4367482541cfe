"""Rollout workers as Ray actors, and a fleet that spreads one phase's batch over all of them.

The fleet is what the episode engine sees as its `Generator`: one `generate` call per phase is
split into R contiguous shards (one per worker), sent in parallel, and stitched back in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import ray

from rrr.actors.vllm_engine import EngineStartError, VLLMEngine
from rrr.core.actor_calls import ACTOR_GONE, first_line
from rrr.core.actor_group import ActorGroup
from rrr.core.config import Config
from rrr.core.errors import RRRError
from rrr.core.generation import GenRequest, Sample
from rrr.core.lora import adapter_config, engine_lora_rank

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
        "in_process": r.in_process_engine,
        "trust_remote_code": cfg.model.trust_remote_code,
        "lora": adapter_config(cfg.learner.lora, model_path) if cfg.learner.lora.rank else None,
        "max_lora_rank": engine_lora_rank(cfg),
    }


class RolloutWorkerLost(RRRError, RuntimeError):
    """Rollout workers kept dying: more restarts than rollout.max_restarts allows."""


class GenerateCancelled(RRRError, RuntimeError):
    """A generate call refused because the fleet's `cancel` was set: the rollout that made it
    is being dropped (rrr/driver/rollout_pipeline.py, `close`)."""


class RolloutFleet:
    """R rollout workers; satisfies rrr.core.generation.Generator.

    A worker that dies (node pre-empted, OOM-killed, `ray.kill`) is replaced by a fresh actor:
    `on_restart` gives it the current policy weights (the trainer wires it to the weight
    sync), and its shard of the interrupted call is sent again. Results are collected per
    shard, so a re-sent shard replaces the lost one and no request is answered twice.

    With `seed_base` set, every call reseeds each worker's sampler from (seed_base, call
    number, worker index): a re-sent shard on the new worker samples what the lost worker
    would have, and a resumed run repeats an uninterrupted one (given prefix caching is off,
    see RolloutConfig.seed).
    """

    def __init__(self, group: ActorGroup | list[Any], *, start_timeout_s: float = 900) -> None:
        """`group`: the workers (an ActorGroup from `start`, or actors started elsewhere, which
        cannot be replaced)."""
        if not isinstance(group, ActorGroup):
            group = ActorGroup.adopt(group, name="rollout worker", error=RolloutWorkerLost)
        self.group = group
        self.start_timeout_s = start_timeout_s
        self.on_restart: Callable[[list[int]], None] | None = None
        self.seed_base: int | None = None
        self._calls = 0
        # Set by whoever drops the rollout in progress: its next generate call raises instead
        # of running (a call already on the workers cannot be interrupted and runs to its end).
        self.cancel = threading.Event()

    @property
    def workers(self) -> list[Any]:
        """The live actor handles, slot by slot (a replaced worker's slot holds the new one)."""
        return self.group.actors

    @property
    def restarts(self) -> int:
        return self.group.restarts

    @classmethod
    def start(
        cls, cfg: Config, model_path: str, *, placement_group: Any = None, timeout_s: float = 900
    ) -> RolloutFleet:
        """Start cfg.rollout.num_workers actors (worker i in bundle i of `placement_group`) and
        wait until each engine is up. A start-up failure surfaces as EngineStartError with
        vLLM's cause, never a hang."""
        r = cfg.rollout
        group = ActorGroup(
            RolloutWorker,
            r.num_workers,
            name="rollout worker",
            kwargs=engine_kwargs(cfg, model_path),
            options={"num_cpus": r.num_cpus_per_worker, "num_gpus": r.num_gpus_per_worker},
            placement_group=placement_group,
            error=RolloutWorkerLost,
            start_error=EngineStartError,
            max_restarts=r.max_restarts,
            restarts_key="rollout.max_restarts",
        )
        group.wait_ready(timeout_s=timeout_s)
        return cls(group, start_timeout_s=timeout_s)

    def begin_step(self, seed: int | None) -> None:
        """Seed the calls of one training step (None: unseeded sampling)."""
        self.seed_base, self._calls = seed, 0

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        if self.cancel.is_set():
            raise GenerateCancelled("the rollout was dropped; generate refused")
        if not requests:
            return []
        shards = _split(requests, len(self.workers))
        seeds = self._next_seeds()
        refs = {i: self.workers[i].generate.remote(s, seeds[i]) for i, s in enumerate(shards) if s}
        done: dict[int, list[list[Sample]]] = {}
        while refs:
            lost = []
            for i, ref in refs.items():
                try:
                    done[i] = ray.get(ref)
                except ACTOR_GONE as exc:
                    why = first_line(exc, 200)
                    log.warning("rollout worker %d died during generate (%s)", i, why)
                    lost.append(i)
            self._replace(lost)
            refs = {i: self.workers[i].generate.remote(shards[i], seeds[i]) for i in lost}
        return [sample for i in sorted(done) for sample in done[i]]

    # Fan-outs to every worker, one round-trip each.

    def sleep(self) -> None:
        """Free vLLM's weights and KV cache (cluster.colocate: the learner steps meanwhile)."""
        self.group.run(lambda w: w.sleep.remote(), "sleep")

    def wake_up(self) -> None:
        self.group.run(lambda w: w.wake_up.remote(), "wake-up")

    def reset_prefix_cache(self) -> None:
        self.group.run(lambda w: w.reset_prefix_cache.remote(), "a prefix-cache reset")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load full weights into every worker through the object store (tests, tools)."""
        ref = ray.put(state)
        self.group.run(lambda w: w.load_state_dict.remote(ref), "a weight load")

    def load_weights_file(self, path: str) -> None:
        """Every worker loads a safetensors file that all can read: full weights, or the adapter
        of an engine that serves adapters."""
        self.group.run(lambda w: w.load_weights_file.remote(path), "a weight load")

    def reset_to_base(self) -> None:
        """Every worker back to the base model, version 0, its start seed (a kept stack)."""
        self.group.run(lambda w: w.reset_to_base.remote(), "a reset to the base model")
        self.on_restart, self.seed_base, self._calls = None, None, 0
        self.cancel.clear()

    def replace_dead(self, notify: bool = True) -> list[int]:
        """Ping every worker and replace the dead ones. notify=False: do not call on_restart
        (the caller gives the replacements their weights itself, e.g. a push about to run)."""
        dead = self.group.dead()
        self._replace(dead, notify)
        return dead

    def shutdown(self) -> None:
        self.group.kill()

    def _replace(self, indices: list[int], notify: bool = True) -> None:
        if not indices:
            return
        self.group.replace(indices, timeout_s=self.start_timeout_s)
        if notify and self.on_restart is not None:
            self.on_restart(indices)

    def _next_seeds(self) -> list[int | None]:
        if self.seed_base is None:
            return [None] * len(self.workers)
        self._calls += 1
        # Distinct, stable per (step seed, call, worker); kept below 2**63 for torch.
        return [
            hash((self.seed_base, self._calls, i)) % (1 << 62) for i in range(len(self.workers))
        ]


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """Contiguous shards of near-equal size (order preserved when concatenated)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out
