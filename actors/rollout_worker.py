"""Rollout workers as Ray actors, and a fleet that spreads one phase's batch over all of them.

The fleet is what the episode engine sees as its `Generator`: one `generate` call per phase is
split into R contiguous shards (one per worker), sent in parallel, and stitched back in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ray

from actors.vllm_engine import EngineStartError, VLLMEngine
from rrr.actor_calls import ACTOR_GONE, first_line, wait_all
from rrr.config import Config
from rrr.errors import RRRError
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
        "in_process": r.in_process_engine,
        "trust_remote_code": cfg.model.trust_remote_code,
    }


class RolloutWorkerLost(RRRError, RuntimeError):
    """Rollout workers kept dying: more restarts than rollout.max_restarts allows."""


class RolloutFleet:
    """R rollout workers; satisfies rrr.generation.Generator.

    A worker that dies (node pre-empted, OOM-killed, `ray.kill`) is replaced by a fresh actor:
    `on_restart` gives it the current policy weights (the trainer wires it to the weight
    sync), and its shard of the interrupted call is sent again. Results are collected per
    shard, so a re-sent shard replaces the lost one and no request is answered twice.

    With `seed_base` set, every call reseeds each worker's sampler from (seed_base, call
    number, worker index): a re-sent shard on the new worker samples what the lost worker
    would have, and a resumed run repeats an uninterrupted one (given prefix caching is off,
    see RolloutConfig.seed).
    """

    def __init__(
        self,
        workers: list[Any],
        *,
        factory: Callable[[int], Any] | None = None,
        max_restarts: int = 0,
    ) -> None:
        if not workers:
            raise ValueError("a rollout fleet needs at least one worker")
        self.workers = workers
        self.factory = factory
        self.max_restarts = max_restarts
        self.restarts = 0
        self.on_restart: Callable[[list[int]], None] | None = None
        self.seed_base: int | None = None
        self._calls = 0

    @classmethod
    def start(
        cls, cfg: Config, model_path: str, *, placement_group: Any = None, timeout_s: float = 900
    ) -> RolloutFleet:
        """Start cfg.rollout.num_workers actors and wait until each engine is up.

        A start-up failure surfaces as EngineStartError with vLLM's cause, never a hang.
        """
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        r = cfg.rollout
        kwargs = engine_kwargs(cfg, model_path)

        def factory(i: int) -> Any:
            options: dict[str, Any] = {
                "num_cpus": r.num_cpus_per_worker,
                "num_gpus": r.num_gpus_per_worker,
            }
            if placement_group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=placement_group, placement_group_bundle_index=i
                )
            return RolloutWorker.options(**options).remote(**kwargs)

        workers = [factory(i) for i in range(r.num_workers)]
        _wait_ready(workers, timeout_s)
        return cls(workers, factory=factory, max_restarts=r.max_restarts)

    def begin_step(self, seed: int | None) -> None:
        """Seed the calls of one training step (None: unseeded sampling)."""
        self.seed_base, self._calls = seed, 0

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
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

    # Fan-outs to every worker, one round-trip each (named methods: nothing is called by a
    # method-name string).

    def sleep(self) -> None:
        """Free vLLM's weights and KV cache (cluster.colocate: the learner steps meanwhile)."""
        ray.get([w.sleep.remote() for w in self.workers])

    def wake_up(self) -> None:
        ray.get([w.wake_up.remote() for w in self.workers])

    def reset_prefix_cache(self) -> None:
        ray.get([w.reset_prefix_cache.remote() for w in self.workers])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load full weights into every worker through the object store (tests, tools)."""
        ref = ray.put(state)
        ray.get([w.load_state_dict.remote(ref) for w in self.workers])

    def replace_dead(self, notify: bool = True) -> list[int]:
        """Ping every worker and replace the dead ones. notify=False: do not call on_restart
        (the caller gives the replacements their weights itself, e.g. a push about to run)."""
        dead = []
        for i, w in enumerate(self.workers):
            try:
                ray.get(w.ping.remote())
            except ACTOR_GONE:
                dead.append(i)
        self._replace(dead, notify)
        return dead

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []

    def _replace(self, indices: list[int], notify: bool = True) -> None:
        if not indices:
            return
        if self.factory is None or self.restarts + len(indices) > self.max_restarts:
            raise RolloutWorkerLost(
                f"rollout worker(s) {indices} died and {self.restarts} of "
                f"rollout.max_restarts={self.max_restarts} restarts are used up"
            )
        for i in indices:
            ray.kill(self.workers[i])  # a hung or half-dead actor must not hold its resources
            self.workers[i] = self.factory(i)
        _wait_ready([self.workers[i] for i in indices], timeout_s=900)
        self.restarts += len(indices)
        log.warning("restarted rollout worker(s) %s (%d restarts so far)", indices, self.restarts)
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


def _wait_ready(workers: list[Any], timeout_s: float) -> None:
    """Every worker's engine is up, or EngineStartError with vLLM's cause (never a hang); the
    workers of a failed start are killed, so they hold no resources."""

    def died(i: int, exc: BaseException) -> EngineStartError:
        cause = getattr(exc, "cause", None) or exc  # ActorDiedError carries the init error
        return EngineStartError(f"a rollout worker failed to start: {cause}")

    def too_slow(pending: int) -> EngineStartError:
        return EngineStartError(
            f"{pending} rollout worker(s) not ready after {timeout_s:.0f}s (resources busy?)"
        )

    try:
        wait_all([w.ping.remote() for w in workers], on_gone=died, timeout_s=timeout_s,
                 on_timeout=too_slow)  # fmt: skip
    except BaseException:
        for w in workers:
            ray.kill(w)
        raise


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """Contiguous shards of near-equal size (order preserved when concatenated)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out
