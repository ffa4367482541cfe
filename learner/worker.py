"""One learner rank: policy + frozen reference + optimizer, and the GRPO step. No Ray here.

`LearnerWorker` runs in-process (tests, benchmarks) or inside the Ray actor of
learner/group.py. The training engines (torch, DeepSpeed) are in learner/engines.py, model
I/O
in learner/hf_model.py, process-group set-up in learner/distributed.py, and what is
forwarded
for a micro-batch in learner/layout.py + learner/logprobs.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from rrr.core.config import LearnerConfig
from rrr.core.cpus import usable_cpus
from rrr.core.grpo import policy_loss
from rrr.core.train_batch import TrainBatch
from rrr.learner.checkpoint import save_torch
from rrr.learner.distributed import (
    cpu_threads,
    free_address,
    init_distributed,
    rng_state,
    seed_everything,
    set_rng_state,
)
from rrr.learner.engines import ENGINES, build_reference, resolve_backend
from rrr.learner.hf_model import save_policy_dir
from rrr.learner.layout import ForwardLayout, layout_for
from rrr.learner.logprobs import layout_logprobs, shared_prefix_unsupported
from rrr.learner.manifest import build_manifest
from rrr.learner.manifest import iter_weights as iter_manifest_weights
from rrr.learner.sync_sender import WeightSender

log = logging.getLogger(__name__)

# Metrics of policy_loss that are means over masked tokens: combined token-weighted.
TOKEN_MEAN_KEYS = ("kl", "clip_frac", "ratio_mean")
# With learner.tis_cap (off-policy correction): token means, and a max over micro-batches.
TIS_MEAN_KEYS = ("tis_weight_mean", "tis_clip_frac")
# Metrics that are this micro-batch's additive share of the full-batch value.
# forward_tokens: tokens the layout actually forwarded (shared contexts once), against
# seq_tokens, the episodes' real tokens.
ADDITIVE_KEYS = ("loss", "policy_loss", "num_tokens", "seq_tokens", "forward_tokens", "seqs")


class LearnerWorker:
    """One rank of the learner group: `step` runs one optimizer step over this rank's
    micro-batches, with the full batch's normalisers inside every micro-batch's loss."""

    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int | None = None,
        device: str | None = None,
        total_steps: int | None = None,
        max_tokens_norm: int | None = None,
        temperature: float = 1.0,
        trust_remote_code: bool = False,
        share_cores: bool = True,
    ) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        # Dr. GRPO's constant normaliser (the driver passes episode.max_reflection_tokens).
        self.max_tokens_norm = max_tokens_norm
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (GRPO samples), got {temperature}")
        # The reflections' sampling temperature (the driver passes episode.temperature): policy
        # and reference are scored on logits / T, the distribution the sampler drew from and
        # whose log-probs vLLM returns ("processed_logprobs"), as TRL's GRPOTrainer does.
        self.temperature = temperature
        self.model_path = model_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            torch.cuda.set_device(0)  # Ray exposes exactly the actor's GPU as device 0
        else:
            threads = cpu_threads(
                cfg.cpu_threads,
                share_cores=share_cores,
                reserved=cfg.num_cpus_per_learner,
                ranks=world_size,
                cores=len(usable_cpus()),
            )
            torch.set_num_threads(threads)
        self.backend = resolve_backend(cfg.backend, self.device)
        seed_everything(cfg.seed)
        if master_port is None:  # a lone in-process rank: any free port (DeepSpeed wants one)
            master_port = free_address()[1]
        init_distributed(rank, world_size, master_addr, master_port, self.device)
        total = total_steps if total_steps is not None else cfg.max_steps
        self.engine = ENGINES[self.backend](
            model_path, cfg, self.device, world_size, total, trust_remote_code
        )
        # Under LoRA the reference is the policy with its adapter off (`_reference_logprobs`).
        self.lora = cfg.lora.rank > 0
        self.ref = (
            build_reference(model_path, cfg, self.device, self.backend, trust_remote_code)
            if cfg.kl_coef != 0 and not self.lora
            else None
        )
        # One walk of the model: what every sync, export and checkpoint calls "the weights"
        # (under LoRA: the adapter's).
        self.manifest = build_manifest(self.hf_model, adapter=self.lora)
        self.sender = WeightSender(rank, self.device)
        self.shared_prefix = cfg.shared_prefix
        why_not = shared_prefix_unsupported(self.engine.module)
        if self.shared_prefix and why_not:
            log.warning("learner.shared_prefix: falling back to one row per episode: %s", why_not)
            self.shared_prefix = False

    # ------------------------------------------------------------------ training

    def layout(self, batch: TrainBatch) -> ForwardLayout:
        """What is forwarded for `batch`: policy, reference and backward all use it."""
        return layout_for(batch, self.shared_prefix)

    def _logprobs(self, model: torch.nn.Module, layout: ForwardLayout) -> torch.Tensor:
        return layout_logprobs(
            model,
            layout,
            device=self.device,
            autocast=self.engine.autocast,
            temperature=self.temperature,
        )

    def step(self, micro_batches: list[TrainBatch]) -> dict[str, float]:
        """One optimizer step over this rank's micro-batches (global normalisers inside)."""
        t0 = time.perf_counter()
        module, cfg = self.engine.module, self.cfg
        totals = dict.fromkeys(ADDITIVE_KEYS, 0.0)
        tis = cfg.tis_cap is not None
        weighted = dict.fromkeys(TOKEN_MEAN_KEYS + (TIS_MEAN_KEYS if tis else ()), 0.0)
        tis_max = 0.0
        for mb in micro_batches:
            if mb.size == 0 or not bool(mb.mask.any()):
                # Nothing to train on this rank, but ZeRO's backward is a collective: a
                # zero-weight pass keeps every rank in step.
                dummy = torch.zeros((1, 2), dtype=torch.long, device=self.device)
                self.engine.backward(module(input_ids=dummy, use_cache=False).logits.sum() * 0.0)
                continue
            layout = self.layout(mb)
            lp = self._logprobs(module, layout)
            ref_lp = self._reference_logprobs(layout) if cfg.kl_coef != 0 else None
            mask = mb.mask.to(self.device)
            # "current": the policy's own log-probs, detached (policy_loss's old_logprobs=None;
            # ratio 1). "sampler": vLLM's, so the ratio corrects sampler/learner mismatch.
            # With tis_cap the current policy is the proximal one and vLLM's is the behaviour
            # policy, corrected by a truncated importance weight (rrr.core.grpo.policy_loss).
            sampler_lp = mb.old_logprobs.to(self.device)
            old = None if cfg.old_logprobs == "current" or tis else sampler_lp
            loss, m = policy_loss(
                lp,
                old,
                ref_lp,
                mb.advantages.to(self.device),
                mask,
                clip_eps=cfg.clip_eps,
                clip_eps_high=cfg.clip_eps_high,
                kl_coef=cfg.kl_coef,
                loss_agg=cfg.loss_agg,
                max_tokens_norm=self.max_tokens_norm,
                global_num_seqs=mb.global_num_seqs,
                global_num_tokens=mb.global_num_tokens,
                behaviour_logprobs=sampler_lp if tis else None,
                tis_cap=cfg.tis_cap,
            )
            self.engine.backward(loss)
            if tis:
                tis_max = max(tis_max, m["tis_weight_max"])
            totals["loss"] += m["loss"]
            totals["policy_loss"] += m["policy_loss"]
            totals["num_tokens"] += m["num_tokens"]
            totals["seq_tokens"] += mb.num_tokens
            totals["forward_tokens"] += layout.forward_tokens
            totals["seqs"] += mb.size
            for k in weighted:
                weighted[k] += m[k] * m["num_tokens"]
        grad_norm, lr = self.engine.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        n_tok = max(totals["num_tokens"], 1.0)
        return {
            **totals,
            **{k: v / n_tok for k, v in weighted.items()},
            **({"tis_weight_max": tis_max} if tis else {}),
            "grad_norm": grad_norm,
            "lr": lr,
            "step_s": seconds,
            "tokens_per_s": totals["seq_tokens"] / max(seconds, 1e-9),
            "global_step": float(self.engine.global_step),
        }

    @torch.no_grad()
    def _reference_logprobs(self, layout: ForwardLayout) -> torch.Tensor:
        """The frozen reference's log-probs: its own model, or under LoRA the policy with the
        adapter switched off (the base model, exactly)."""
        if not self.lora:
            assert self.ref is not None
            return self._logprobs(self.ref, layout)
        with self.hf_model.disable_adapter():
            return self._logprobs(self.engine.module, layout)

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Current policy log-probs at the batch's mask columns ([B, T-1], 0 elsewhere)."""
        return self._logprobs(self.engine.module, self.layout(batch)).cpu()

    # ------------------------------------------------------------------ weights

    def iter_weights(self, wire_dtype: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (gathered) weights in manifest order, a tied weight once; cast to `wire_dtype`
        when given (the receiver's dtype). Under ZeRO-3 this is a collective: every rank must
        exhaust it."""
        return iter_manifest_weights(
            self.hf_model,
            self.manifest,
            zero3=self._gather_is_collective(),
            wire_dtype=getattr(torch, wire_dtype) if wire_dtype else None,
        )

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        return {k: v.to("cpu") for k, v in self.iter_weights()}

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model itself (a DeepSpeed engine wraps it as `.module`)."""
        return getattr(self.engine.module, "module", self.engine.module)

    # ------------------------------------------------------------------ checkpoints

    def save_state(self, directory: str) -> None:
        """Write this rank's share of a checkpoint into `directory` (a temp dir the group
        commits atomically): policy (HF format, rank 0), optimizer/scheduler, RNG."""
        d = Path(directory)
        (d / "rng").mkdir(parents=True, exist_ok=True)
        weights = (
            self.state_dict_cpu() if (self.rank == 0 or self._gather_is_collective()) else None
        )
        if self.rank == 0:
            save_policy_dir(
                weights, self.engine.module, self.model_path, d / "policy", self.cfg.lora
            )
        self.engine.save(d, self.rank)
        save_torch(rng_state(), d / "rng" / f"rank{self.rank}.pt")

    def load_state(self, directory: str) -> int:
        d = Path(directory)
        self.engine.load(d, d / "policy")
        rng_file = d / "rng" / f"rank{self.rank}.pt"
        if rng_file.exists():
            set_rng_state(torch.load(rng_file, weights_only=False))
        return self.engine.global_step

    def _gather_is_collective(self) -> bool:
        return self.backend == "deepspeed" and self.cfg.zero_stage == 3
