"""`LearnerGroup`: L learner ranks as Ray actors in one placement group and one
torch.distributed group. Every call is ONE Ray round-trip per rank (batches travel as a list of
micro-batches per rank; weights travel as one blob or one broadcast plan, never per tensor).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray

from rrr.core.actor_group import ActorGroup
from rrr.core.config import LearnerConfig
from rrr.core.errors import RRRError
from rrr.core.metrics import under
from rrr.core.train_batch import TrainBatch
from rrr.learner import checkpoint as ckpt
from rrr.learner.distributed import free_address
from rrr.learner.packing import default_budget, shard_batch, shard_groups
from rrr.learner.sync_sender import device_info
from rrr.learner.worker import ADDITIVE_KEYS, TIS_MEAN_KEYS, TOKEN_MEAN_KEYS, LearnerWorker

log = logging.getLogger(__name__)


@ray.remote
class LearnerActor:
    """A Ray shell around `LearnerWorker`; construction is deferred to `setup` so that rank 0
    can be asked for its address first."""

    def __init__(self) -> None:
        self.worker: LearnerWorker | None = None

    def address(self) -> tuple[str, int]:
        return free_address()

    def pid(self) -> int:
        return os.getpid()

    def setup(
        self,
        model_path: str,
        cfg: LearnerConfig,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        import torch

        self.worker = LearnerWorker(
            model_path,
            cfg,
            rank=rank,
            world_size=world_size,
            master_addr=master_addr,
            master_port=master_port,
            **kwargs,
        )
        return {
            "backend": self.worker.backend,
            "shared_prefix": self.worker.shared_prefix,
            "cpu_threads": torch.get_num_threads(),
        }

    def step(self, micro_batches: list[TrainBatch]) -> dict[str, float]:
        return self.worker.step(micro_batches)

    def save_state(self, directory: str) -> None:
        self.worker.save_state(directory)

    def load_state(self, directory: str) -> int:
        return self.worker.load_state(directory)

    def state_dict_cpu(self) -> dict[str, Any]:
        return self.worker.state_dict_cpu()

    def logprobs(self, batch: TrainBatch) -> Any:
        return self.worker.logprobs(batch)

    # --- weight sync, sender half (learner/sync_sender.py; driven by
    # learner/weight_sync.py)

    def sync_info(self) -> dict[str, Any]:
        """Node and device of this rank's weights (the driver decides the backend from them)."""
        return device_info(self.worker.device)

    def sync_prepare(self, bucket_bytes: int, wire_dtype: str) -> dict[str, Any]:
        """Plan the buckets once per sync group (the sender keeps them); the plan and the
        manifest's aliases (a tied head) go to the receivers once, as they join."""
        return {
            "buckets": self.worker.sender.prepare(self.worker.manifest, bucket_bytes, wire_dtype),
            "aliases": dict(self.worker.manifest.aliases),
        }

    def sync_push_bytes(self, wire_dtype: str) -> int:
        """The bytes of one whole push in `wire_dtype` (one unbounded bucket, padding
        included): what the object-store sync must find room for."""
        (whole,) = self.worker.sender.plan(self.worker.manifest, 1 << 62, wire_dtype)
        return whole.nbytes

    def sync_join(self, host: str, port: int, world_size: int, timeout_s: float) -> None:
        self.worker.sender.join(host, port, world_size, timeout_s)

    def sync_broadcast(self) -> dict[str, float]:
        """One push over the prepared plan (ranks other than 0 only walk their weights)."""
        sender = self.worker.sender
        return sender.broadcast(self.worker.iter_weights(sender.wire_dtype))

    def sync_export(self, mode: str, path: str | None, wire_dtype: str) -> dict[str, Any] | None:
        sent = self.worker.sender.export(self.worker.iter_weights(wire_dtype), mode, path)
        return None if sent is None else {**sent, "aliases": dict(self.worker.manifest.aliases)}

    def sync_close(self) -> None:
        self.worker.sender.close()

    def release_memory(self) -> None:
        """Hand the CUDA allocator's cached blocks back to the device, so that a colocated vLLM
        can wake up into them (the learner's live tensors stay)."""
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class LearnerLost(RRRError, RuntimeError):
    """A learner rank died. Its optimizer state is gone, so the run cannot go on; it resumes
    from the newest complete checkpoint when `rrr train` is started again."""


class LearnerGroup:
    """L learner ranks. `step(batch)` shards the step batch over the ranks and returns metrics
    aggregated over them; checkpoints go through rrr.learner.checkpoint (atomic + manifest)."""

    def __init__(
        self,
        cfg: LearnerConfig,
        model_path: str,
        *,
        placement_group: Any = None,
        bundle_offset: int = 0,
        total_steps: int | None = None,
        max_tokens_norm: int | None = None,
        temperature: float = 1.0,
        trust_remote_code: bool = False,
        share_cores: bool = True,
        timeout_s: float = 1800,
    ) -> None:
        from ray.util.placement_group import placement_group as make_pg

        self.cfg, self.model_path = cfg, model_path
        # The policy version of the weights the ranks hold: the learner step they come from
        # (0 = the base model; a skipped step counts, its weights are the previous ones). The
        # weight sync stamps it on the rollout workers, which stamp it on every sample.
        self.version = 0
        n = cfg.num_learners
        bundle = {"CPU": cfg.num_cpus_per_learner}
        if cfg.num_gpus_per_learner:
            bundle["GPU"] = cfg.num_gpus_per_learner
        self._own_pg = placement_group is None
        if placement_group is None:
            # PACK: ranks land on as few nodes as possible (cheap all-reduce, shared /dev/shm).
            placement_group = make_pg([dict(bundle) for _ in range(n)], strategy="PACK")
            ray.get(placement_group.ready(), timeout=timeout_s)
            bundle_offset = 0
        self.placement_group = placement_group
        # No restarts here: a rank's optimizer state dies with it, so the group is restarted
        # whole from a checkpoint (train(), learner.max_restarts).
        self.ranks = ActorGroup(
            LearnerActor,
            n,
            name="learner rank",
            options={"num_cpus": cfg.num_cpus_per_learner, "num_gpus": cfg.num_gpus_per_learner},
            placement_group=placement_group,
            bundle_offset=bundle_offset,
            error=LearnerLost,
        )
        ((addr, port),) = self.ranks.gather(
            [self.actors[0].address.remote()], "start-up", timeout_s=timeout_s
        )
        kwargs = {
            "total_steps": total_steps,
            "max_tokens_norm": max_tokens_norm,
            "temperature": temperature,  # the reflections' sampling temperature
            "trust_remote_code": trust_remote_code,
            # Whether nothing runs beside a CPU step, so that its ranks may use the node's
            # cores (learner.cpu_threads); the driver says so when the rollout waits for it.
            "share_cores": share_cores,
        }
        # All ranks start together: init_process_group blocks until every rank has joined. A
        # rank that dies on the way is LearnerLost at once, not a wait for the time-out.
        setups = self.ranks.gather(
            [
                a.setup.remote(model_path, cfg, r, n, addr, port, kwargs)
                for r, a in enumerate(self.actors)
            ],
            "set-up",
            timeout_s=timeout_s,
        )
        self.backend = setups[0]["backend"]
        # Every rank holds the same model, so all ranks agree; the layout decides the sharding.
        self.shared_prefix = bool(setups[0]["shared_prefix"])
        self.cpu_threads = [s["cpu_threads"] for s in setups]  # torch threads, rank order
        log.info(
            "learner group: %d rank(s), backend %s, %s layout, %s torch thread(s) a rank, "
            "master %s:%d",
            n,
            self.backend,
            "shared-prefix" if self.shared_prefix else "one row per episode",
            self.cpu_threads[0],
            addr,
            port,
        )

    @property
    def actors(self) -> list[Any]:
        """The ranks' actor handles, rank order."""
        return self.ranks.actors

    @property
    def world_size(self) -> int:
        return len(self.actors)

    # ------------------------------------------------------------------ training

    def step(self, batch: TrainBatch) -> dict[str, float]:
        """One optimizer step on the step batch. A batch with no reflection token to train
        (every group dropped, or every context overflowed) skips the step: an AdamW step on zero
        gradients would still move the weights by momentum."""
        if batch.size == 0 or batch.global_num_tokens == 0:
            log.warning("step skipped: no reflection tokens to train on in this batch")
            self.version += 1
            return {"learner/skipped": 1.0}
        shards = self.shard(batch)
        per_rank = self.ranks.gather(
            [a.step.remote(s) for a, s in zip(self.actors, shards)], "a step"
        )
        self.version += 1
        return {**under("learner/", aggregate_metrics(per_rank)), "learner/skipped": 0.0}

    def shard(self, batch: TrainBatch) -> list[list[TrainBatch]]:
        """Per-rank micro-batches: whole groups under the token budget for the shared-prefix
        layout, rows of micro_batch_size otherwise."""
        if not self.shared_prefix:
            return shard_batch(batch, self.world_size, self.cfg.micro_batch_size)
        budget = self.cfg.micro_batch_tokens or default_budget(batch, self.cfg.micro_batch_size)
        return shard_groups(batch, self.world_size, budget)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(
        self,
        root: str | Path,
        step: int,
        extra_state: dict[str, Any] | None = None,
        *,
        keep: int | None = None,
    ) -> Path:
        """Every rank writes its share into one temp dir; the manifest and the rename make it
        appear atomically as root/step_XXXXXXXX (a shared filesystem across nodes)."""

        def write(tmp: Path) -> None:
            self.ranks.run(lambda a: a.save_state.remote(str(tmp)), "a checkpoint write")

        meta = {"backend": self.backend, "world_size": self.world_size}
        return ckpt.write_checkpoint(root, step, write, extra_state, keep=keep, meta=meta)

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Load a checkpoint (or the newest valid one under a directory); returns its state.json
        (step, extra_state = the driver's data cursor)."""
        path = ckpt.resolve(path)
        state = ckpt.read_state(path)
        if state.get("backend", self.backend) != self.backend:
            raise ckpt.CheckpointError(
                f"{path} was written by the {state['backend']} backend, this group runs "
                f"{self.backend}"
            )
        self.ranks.run(lambda a: a.load_state.remote(str(path)), "a checkpoint load")
        self.version = int(state["step"])
        return state

    # ------------------------------------------------------------------ misc

    def state_dict(self) -> dict[str, Any]:
        """The full weights on CPU (tests, export). Every rank takes part (under ZeRO-3 the
        gather is a collective that rank 0 alone would wait in forever); rank 0's is returned."""
        return self.ranks.run(lambda a: a.state_dict_cpu.remote(), "a weight gather")[0]

    def release_memory(self) -> None:
        self.ranks.run(lambda a: a.release_memory.remote(), "a memory release")

    def shutdown(self) -> None:
        self.ranks.kill()
        if self._own_pg:  # once: shutdown may be called again after a lost rank
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.placement_group)
            self._own_pg = False


def aggregate_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Combine rank metrics: additive shares summed, token means re-weighted, times maxed."""
    out: dict[str, float] = {}
    for k in ADDITIVE_KEYS:
        out[k] = sum(m[k] for m in per_rank)
    n_tok = max(out["num_tokens"], 1.0)
    for k in TOKEN_MEAN_KEYS + TIS_MEAN_KEYS:
        if k in per_rank[0]:  # the TIS keys only with learner.tis_cap
            out[k] = sum(m[k] * m["num_tokens"] for m in per_rank) / n_tok
    if "tis_weight_max" in per_rank[0]:
        out["tis_weight_max"] = max(m["tis_weight_max"] for m in per_rank)
    # The learner's own pace: the slowest rank's.
    out["step_s"] = max(m["step_s"] for m in per_rank)
    out["tokens_per_s"] = out["seq_tokens"] / max(out["step_s"], 1e-9)
    for k in ("grad_norm", "lr", "global_step"):  # identical on every rank after the step
        out[k] = per_rank[0][k]
    return out
