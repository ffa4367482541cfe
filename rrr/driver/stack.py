"""Bring up what a command needs: Ray, the model, the task, rollout workers, verifiers.

Shared by `rrr build-failures`, `rrr eval` and `rrr train`, so all three start the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rrr.core.chat import ChatRenderer
from rrr.core.config import Config, ConfigError
from rrr.core.episodes import EpisodeEngine
from rrr.core.errors import RRRError
from rrr.core.lora import ADAPTER_WEIGHTS, adapter_config, engine_lora_rank, serving_config
from rrr.core.models import ModelError, resolve_model
from rrr.core.placement import VERIFIER_CPUS, colocated_bundles, required
from rrr.core.tasks import TaskNotFound, detect_family, get_task
from rrr.core.tasks.base import Task

log = logging.getLogger(__name__)


def init_ray(cfg: Config) -> Any:
    """Join the cluster a job was submitted to, or start a local Ray.

    Never passes a runtime_env: under `ray job submit` the job carries it, and a second one
    fails to merge (docs/cpu-stack.md).
    """
    import ray

    if ray.is_initialized():
        # Someone (a test session, a notebook) already joined a cluster: it still has to hold
        # the run, or the first actor that does not fit would wait forever.
        check_resources(cfg, ray.cluster_resources())
        return ray
    address = cfg.cluster.address
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto")  # inside `ray job submit`, or pointed at a cluster
    elif address in ("auto", "local"):
        # "local", not None: ray.init() with no address would join whatever cluster a stale
        # /tmp/ray/ray_current_cluster names, and hang if that cluster is gone. Logical CPUs
        # are raised to what the actors reserve: on a 2-core laptop they mostly take turns.
        num_cpus = cfg.cluster.num_cpus or max(os.cpu_count() or 1, math.ceil(required(cfg)["CPU"]))
        c = cfg.cluster
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=c.dashboard,
            dashboard_host="127.0.0.1",  # a laptop's dashboard is not for the network
            dashboard_port=c.dashboard_port,
            _metrics_export_port=c.metrics_export_port,
        )
    else:
        ray.init(address=address)
    log.info("ray: %s", ray.cluster_resources())
    log_monitoring_urls(ray)
    check_resources(cfg, ray.cluster_resources())
    return ray


def monitoring_urls(ray: Any) -> dict[str, str]:
    """Where a user watches the run: the dashboard, and this node's Prometheus endpoint (the
    ray_rrr_* series are there; the dashboard's Metrics tab reads them through Prometheus)."""
    urls = {}
    dashboard = _dashboard_url()
    if dashboard:
        urls["dashboard"] = dashboard if "://" in dashboard else f"http://{dashboard}"
    me = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == me and node.get("MetricsExportPort"):
            urls["metrics"] = (
                f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            )
    return urls


def _dashboard_url() -> str | None:
    # The dashboard address ray.init reported (host:port); None when no dashboard runs. Ray
    # keeps it on the connected node only, also for a cluster joined with address="auto".
    from ray._private.worker import global_worker

    node = getattr(global_worker, "node", None)
    return getattr(node, "webui_url", None) or None


def log_monitoring_urls(ray: Any) -> None:
    urls = monitoring_urls(ray)
    if "dashboard" in urls:
        # Ray's token auth is on by default: the browser asks for the token once.
        log.info("Ray dashboard: %s  (token: `ray get-auth-token`)", urls["dashboard"])
    else:
        log.info("Ray dashboard: off (cluster.dashboard=true starts it with a local Ray)")
    if "metrics" in urls:
        log.info("Prometheus metrics (ray_rrr_*): %s", urls["metrics"])


def check_resources(cfg: Config, available: dict[str, float]) -> None:
    """Refuse a run the cluster cannot hold before any actor starts (an actor that can never be
    scheduled would otherwise wait forever)."""
    # The config-only check first: its message names the one key to fix.
    tp, gpus = cfg.rollout.tensor_parallel_size, cfg.rollout.num_gpus_per_worker
    if gpus and tp > 1 and gpus != tp:
        raise ResourceError(
            f"rollout.tensor_parallel_size={tp} needs rollout.num_gpus_per_worker={tp}, "
            f"got {gpus:g}"
        )
    need = required(cfg)
    for key, amount in need.items():
        have = available.get(key, 0.0)
        if amount > have + 1e-9:
            raise ResourceError(
                f"the config asks for {amount:g} {key} but the Ray cluster has {have:g} "
                f"(rollout.num_workers={cfg.rollout.num_workers} x "
                f"rollout.num_{key.lower()}s_per_worker, learner.num_learners="
                f"{cfg.learner.num_learners} x learner.num_{key.lower()}s_per_learner"
                + (
                    f", verifier.num_workers={cfg.verifier.num_workers} x {VERIFIER_CPUS}"
                    if key == "CPU"
                    else ""
                )
                + ")"
            )


class ResourceError(RRRError, RuntimeError):
    """The config asks for more than the cluster has."""


@dataclass
class Stack:
    """A running generation stack: everything the episode logic needs."""

    cfg: Config
    model_path: str
    task: Task
    renderer: ChatRenderer
    fleet: Any  # rrr.actors.rollout_worker.RolloutFleet
    verifier: Any  # rrr.actors.verifier_pool.VerifierPool
    engine: EpisodeEngine
    # cluster.colocate: bundle i holds rollout worker i and learner rank i (None otherwise).
    placement_group: Any = None

    def shutdown(self) -> None:
        self.fleet.shutdown()
        self.verifier.shutdown()
        if self.placement_group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.placement_group)


def load_task(cfg: Config) -> Task:
    """The configured task in the model's prompt family (paper A.1: chosen per model family)."""
    options = {"fewshot": cfg.data.fewshot} if cfg.data.fewshot else {}
    try:
        task = get_task(
            cfg.data.task, detect_family(cfg.model.name_or_path, cfg.model.family), **options
        )
    except TaskNotFound as exc:  # a plugin that will not import or build: name the key
        raise ConfigError(f"data.task: {exc}") from exc
    # A slow verifier (the code task runs programs) declares its worst case per item; a batch
    # that cannot finish inside the pool's deadline would score every item verifier_error.
    worst = getattr(task, "max_verify_s", None)
    v = cfg.verifier
    if worst is not None and v.batch_size * worst > v.timeout_s:
        raise ConfigError(
            f"verifier.batch_size: {v.batch_size} items x up to {worst:g} s each ({task.name} "
            f"task) exceed verifier.timeout_s={v.timeout_s:g}; lower the batch size "
            f"(e.g. verifier.batch_size={max(1, int(v.timeout_s // worst))}) or raise the time-out"
        )
    return task


def load_model(cfg: Config) -> tuple[str, ChatRenderer]:
    """The model's local path and chat renderer. A missing path, a tokenizer that will not load
    or one without a chat template fails here, naming the model, before Ray or any actor."""
    from transformers import AutoTokenizer

    model_path = resolve_model(cfg.model.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, trust_remote_code=cfg.model.trust_remote_code
        )
    except (OSError, ValueError) as exc:  # transformers' messages do not name the model
        cause = " ".join(str(exc).split())  # theirs span lines; the CLI prints one
        raise ModelError(
            f"cannot load the tokenizer of model.name_or_path={cfg.model.name_or_path!r} "
            f"({model_path}): {cause}"
        ) from exc
    return model_path, ChatRenderer(tokenizer)


def colocated_placement_group(cfg: Config, timeout_s: float = 900) -> Any:
    """One bundle per (rollout worker i, learner rank i) pair: they land on the same node and,
    with fractional GPUs, on the same device."""
    import ray
    from ray.util.placement_group import placement_group

    pg = placement_group(colocated_bundles(cfg), strategy="PACK")
    ray.get(pg.ready(), timeout=timeout_s)
    return pg


# Rollout settings that a kept stack takes from each run instead of being built with:
# max_staleness is the driver's (how far rollouts run ahead), max_restarts the fleet's restart
# budget, set afresh for every run that reuses the fleet (generation_stack).
_RUN_ROLLOUT_KEYS = ("max_staleness", "max_restarts")


def _stack_key(cfg: Config, model_path: str) -> str:
    """What a generation stack is made of: a kept stack serves a run whose key is equal. The
    model, rollout, verifier and cluster sections count (engine arguments, seeds, worker
    counts, placement), but for the rollout settings each run sets (_RUN_ROLLOUT_KEYS), and
    the task; the episode, learner and sync settings do not (the episode engine is rebuilt for
    each run, and the learner is never kept)."""
    rollout = {k: v for k, v in asdict(cfg.rollout).items() if k not in _RUN_ROLLOUT_KEYS}
    parts = {
        "model_path": model_path,
        "model": asdict(cfg.model),
        "rollout": rollout,
        "verifier": asdict(cfg.verifier),
        "cluster": asdict(cfg.cluster),
        "task": [cfg.data.task, cfg.data.fewshot],
        # An engine that serves adapters is built for them (rrr/core/lora.py): a training run's
        # kept stack serves the evaluation of its exported adapter.
        "lora": [engine_lora_rank(cfg), adapter_config(cfg.learner.lora)]
        if engine_lora_rank(cfg)
        else 0,
    }
    return json.dumps(parts, sort_keys=True, default=str)


class StackPool:
    """Generation stacks kept between runs in one process, so that commands run one after
    another in the same Ray session (a test session, a notebook sweeping evaluations) start
    the rollout workers and verifiers once per configuration instead of once per command.

    A run that ends cleanly hands its stack back; the fleet is reset to what a fresh start
    gives (the base model's weights from its directory, policy version 0, an empty prefix
    cache, the engine's seed: RolloutFleet.reset_to_base) and kept under its key. A run that
    raised, a colocated stack (its placement group is shared with the run's learner) and a
    stack with a replaced worker are shut down instead.

    At most `max_idle` stacks are kept, the most recently used, and none while a run that
    could not use them starts its own (`take`): an idle engine still holds its
    weights and KV cache and its actors still take CPU time (measured on 2 cores: four kept
    tiny-model stacks slowed the learnability run that ran beside them from 566 s to over
    900 s), and a run with settings of its own is rarely followed by another with the same."""

    def __init__(self, max_idle: int = 1) -> None:
        self.max_idle = max_idle
        self.idle: dict[str, Stack] = {}  # oldest first
        self.started = 0  # stacks built
        self.reused = 0  # runs served by a kept stack

    def take(self, key: str) -> Stack | None:
        """The kept stack for `key`, or None; on a miss the kept stacks are shut down first, so
        the run that starts its own does not share the cores with idle engines."""
        stack = self.idle.pop(key, None)
        if stack is not None:
            self.reused += 1
        else:
            self.close()
        return stack

    def give_back(self, key: str, stack: Stack) -> None:
        if stack.placement_group is not None or stack.fleet.restarts:
            stack.shutdown()
            return
        stack.fleet.reset_to_base()
        old = self.idle.pop(key, None)
        if old is not None:
            old.shutdown()
        self.idle[key] = stack
        while len(self.idle) > self.max_idle:
            self.idle.pop(next(iter(self.idle))).shutdown()

    def close(self) -> None:
        for stack in self.idle.values():
            stack.shutdown()
        self.idle.clear()


_pool: list[StackPool] = []  # the active pool, if any (shared_stacks)


@contextmanager
def shared_stacks(max_idle: int = 1):
    """Within this block, generation_stack() keeps each finished run's stack and serves the
    next run with the same configuration from it (StackPool). Opt-in: a command run from the
    shell starts and tears down its own stack as before."""
    pool = StackPool(max_idle)
    _pool.append(pool)
    try:
        yield pool
    finally:
        _pool.remove(pool)
        pool.close()


@contextmanager
def fresh_stacks():
    """Within a shared_stacks() block, runs that must start their own engine (a test of what
    a fresh engine gives) bypass the pool."""
    saved = _pool[:]
    _pool.clear()
    try:
        yield
    finally:
        _pool[:] = saved


@contextmanager
def generation_stack(cfg: Config):
    """Ray + model + task + R rollout workers + verifier pool + episode engine; torn down after
    (or, inside shared_stacks(), kept for the next run with the same configuration).

    `model.name_or_path` may be an adapter directory (`rrr export --adapter`, a LoRA run's
    checkpoint): the engines start on its base model and serve the adapter on every request."""
    cfg, adapter = serving_config(cfg)
    model_path, renderer = load_model(cfg)
    task = load_task(cfg)
    init_ray(cfg)
    pool = _pool[-1] if _pool else None
    key = _stack_key(cfg, model_path)
    kept = pool.take(key) if pool is not None else None
    if kept is not None:
        log.info("generation stack: reusing the kept rollout workers and verifiers")
        fleet, verifier, pg = kept.fleet, kept.verifier, kept.placement_group
        fleet.group.max_restarts = cfg.rollout.max_restarts  # this run's budget (a kept
        # stack has used none: one with a replaced worker is never kept, StackPool.give_back)
    else:
        fleet, verifier, pg = _start_generation(cfg, model_path, task)
        if pool is not None:
            pool.started += 1
    engine = EpisodeEngine(task, renderer, fleet, verifier, cfg.episode, cfg.model.max_model_len)
    stack = Stack(cfg, model_path, task, renderer, fleet, verifier, engine, pg)
    try:
        if adapter is not None:
            serve_adapter(fleet, adapter)
        yield stack
    except BaseException:  # a run that raised (or was closed) never hands its stack back
        stack.shutdown()
        raise
    if pool is None:
        stack.shutdown()
    else:
        pool.give_back(key, stack)


def serve_adapter(fleet: Any, adapter: Path) -> None:
    """Every rollout worker serves `adapter` from now on, a replacement worker too (its engine
    starts on the base; the adapter file is small, so all reload it). The version stays 0: no
    run's policy version applies."""
    weights = str(adapter / ADAPTER_WEIGHTS)
    log.info("serving the adapter %s", adapter)
    fleet.load_weights_file(weights)
    fleet.on_restart = lambda replaced: fleet.load_weights_file(weights)


def _start_generation(cfg: Config, model_path: str, task: Task) -> tuple[Any, Any, Any]:
    from rrr.actors.rollout_worker import RolloutFleet
    from rrr.actors.verifier_pool import VerifierPool

    pg = colocated_placement_group(cfg) if cfg.cluster.colocate else None
    fleet = RolloutFleet.start(cfg, model_path, placement_group=pg)
    v = cfg.verifier
    verifier = VerifierPool(
        task,
        num_workers=v.num_workers,
        timeout_s=v.timeout_s,
        batch_size=v.batch_size,
        num_cpus=VERIFIER_CPUS,
    )
    return fleet, verifier, pg
