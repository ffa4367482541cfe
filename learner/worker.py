"""One learner rank: policy + frozen reference + optimizer, and the GRPO step. No Ray here.

`LearnerWorker` runs in-process (tests, benchmarks) or inside the Ray actor of
learner/group.py. Two training engines sit behind one small interface:

  - `TorchEngine`: a bare module on one rank; on L > 1 ranks gradients are summed with ONE
    coalesced all-reduce per step (gloo on CPU, nccl on GPU). Not DDP's per-backward mean:
    the loss of every micro-batch is already divided by the FULL batch's normalisers, so the
    ranks' gradients must be SUMMED, and ranks may run different numbers of micro-batches.
  - `DeepSpeedEngine`: `deepspeed.initialize` with ZeRO 2/3, bf16 on GPU, optional optimizer
    offload; "managed_gradient_accumulation": false makes step() the accumulation boundary of
    however many micro-batches a step has. DeepSpeed averages gradients over ranks, so the loss
    is multiplied by the world size to keep the SUM semantics above.

backend "auto" = deepspeed on GPU, torch on CPU. DeepSpeed 0.19.8 also trains on this CPU (ZeRO-2,
torch AdamW; same losses as the torch engine, bit-identical resume; tests/test_learner.py), but
its first start JIT-compiles a shared-memory comm op with g++ (~100 s once, then cached in
~/.cache/torch_extensions), and it adds nothing on one CPU rank.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learner.batch import TrainBatch
from learner.checkpoint import save_torch
from learner.schedule import build_scheduler
from rrr.config import LearnerConfig
from rrr.grpo import policy_loss

log = logging.getLogger(__name__)

# Metrics of policy_loss that are means over masked tokens: combined token-weighted.
TOKEN_MEAN_KEYS = ("kl", "clip_frac", "ratio_mean")
# Metrics that are this micro-batch's additive share of the full-batch value.
ADDITIVE_KEYS = ("loss", "policy_loss", "num_tokens", "seq_tokens", "seqs")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "deepspeed" if device.type == "cuda" else "torch"
    return backend


def compute_dtype(cfg: LearnerConfig, device: torch.device) -> torch.dtype:
    # vLLM's CPU backend serves float32 (no oneDNN bf16 linear), so CPU training stays float32.
    return torch.bfloat16 if (device.type == "cuda" and cfg.bf16) else torch.float32


def load_causal_lm(path: str, dtype: torch.dtype, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code
    )


def masked_token_logprobs(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """log p(tokens[:, j+1] | tokens[:, :j+1]) at the columns j the mask uses, as [B, T-1]
    (0 elsewhere): the same values as rrr.grpo.token_logprobs(model(tokens).logits, tokens).

    Only the columns where some row has a reflection token go through the LM head and the
    log-softmax (`logits_to_keep` with an index tensor). The reflection is the tail of every
    episode, so this skips the vocabulary projection of the whole context, which for a small
    model with a 49k vocabulary is a large share of the compute and of the memory.
    No attention mask: sequences are right-padded, so causal attention never lets a real token
    see a pad, and the pads' own outputs are masked out of the loss.
    """
    cols = mask.any(dim=0).nonzero().squeeze(1)  # [K] columns j, predicting token j+1
    out = torch.zeros(mask.shape, dtype=torch.float32, device=tokens.device)
    if cols.numel() == 0:
        return out
    with torch.autocast(
        tokens.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
    ):
        logits = model(input_ids=tokens, logits_to_keep=cols, use_cache=False).logits  # [B,K,V]
    targets = tokens[:, cols + 1]  # [B, K]
    rows = []
    for row_logits, row_targets in zip(logits, targets):  # one [K, V] float32 copy at a time
        row = row_logits.float()
        picked = row.gather(-1, row_targets[:, None]).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    return out.index_copy(1, cols, torch.stack(rows))


def rng_state() -> dict[str, Any]:
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


def init_distributed(
    rank: int, world_size: int, master_addr: str, master_port: int, device: torch.device
) -> None:
    """The env vars are what DeepSpeed reads; torch.distributed is initialised from them."""
    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK="0",
    )
    import torch.distributed as dist

    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=rank,
            world_size=world_size,
        )


# ---------------------------------------------------------------------------------- engines


class TorchEngine:
    """Plain torch: AdamW + LambdaLR; gradient SUM over ranks in one coalesced all-reduce."""

    name = "torch"

    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        device: torch.device,
        world_size: int,
        total_steps: int,
        trust_remote_code: bool,
    ) -> None:
        self.cfg, self.device, self.world_size = cfg, device, world_size
        # Parameters stay float32 (Adam master weights); bf16 is autocast on GPU only.
        self.module = load_causal_lm(model_path, torch.float32, trust_remote_code).to(device)
        self.autocast = torch.bfloat16 if compute_dtype(cfg, device) == torch.bfloat16 else None
        if cfg.gradient_checkpointing:
            self.module.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.module.train()
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay
        )
        self.scheduler = build_scheduler(
            self.optimizer, cfg.lr_scheduler, cfg.warmup_ratio, total_steps
        )

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> tuple[float, float]:
        """All-reduce (SUM), clip, AdamW, schedule. Returns (grad_norm before clipping, lr)."""
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.world_size > 1:
            import torch.distributed as dist
            from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

            grads = [p.grad for p in self.params]
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), float(lr)

    @property
    def global_step(self) -> int:
        return int(self.scheduler.last_epoch)

    def iter_state(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.module.state_dict().items()

    def save(self, directory: Path, rank: int) -> None:
        if rank == 0:  # replicas are identical: one copy of optimizer and scheduler state
            save_torch(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                },
                directory / "optim.pt",
            )

    def load(self, directory: Path, policy_dir: Path) -> None:
        load_policy_weights(self.module, policy_dir)
        state = torch.load(directory / "optim.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class DeepSpeedEngine:
    """deepspeed.initialize with ZeRO-2/3; the LambdaLR schedule is stepped by the engine."""

    name = "deepspeed"

    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        device: torch.device,
        world_size: int,
        total_steps: int,
        trust_remote_code: bool,
    ) -> None:
        import deepspeed

        self.cfg, self.device, self.world_size = cfg, device, world_size
        gpu = device.type == "cuda"
        self.ds_config = deepspeed_config(cfg, gpu)
        self._hf_ds = None
        if cfg.zero_stage == 3:
            # Lets from_pretrained build the model already partitioned (zero.Init).
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(self.ds_config)
        model = load_causal_lm(model_path, compute_dtype(cfg, device), trust_remote_code)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.autocast = None  # DeepSpeed's bf16 mode holds bf16 params and fp32 master weights
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=self.ds_config,
            lr_scheduler=lambda opt: build_scheduler(
                opt, cfg.lr_scheduler, cfg.warmup_ratio, total_steps
            ),
        )
        self.module = self.engine  # forward goes through the engine (ZeRO-3 hooks)
        self.module.train()

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed MEANS gradients over ranks; our losses are shares of a global SUM.
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self) -> tuple[float, float]:
        lr = float(self.engine.get_lr()[0])
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return (float(norm) if norm is not None else float("nan")), lr

    @property
    def global_step(self) -> int:
        return int(self.engine.global_steps)

    def iter_state(self) -> Iterator[tuple[str, torch.Tensor]]:
        module = self.engine.module
        if self.cfg.zero_stage != 3:
            yield from module.state_dict().items()
            return
        import deepspeed

        # ZeRO-3: gather one submodule's shards at a time, never the whole model at once.
        for prefix, sub in module.named_modules():
            params = list(sub.parameters(recurse=False))
            if not params:
                continue
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                for name, p in sub.named_parameters(recurse=False):
                    yield (f"{prefix}.{name}" if prefix else name), p.detach().clone()

    def save(self, directory: Path, rank: int) -> None:
        del rank  # every rank writes its own ZeRO shards
        self.engine.save_checkpoint(str(directory / "deepspeed"), tag="state")

    def load(self, directory: Path, policy_dir: Path) -> None:
        del policy_dir  # the DeepSpeed checkpoint holds the module weights itself
        path, _ = self.engine.load_checkpoint(
            str(directory / "deepspeed"),
            tag="state",
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {directory / 'deepspeed'}")


def deepspeed_config(cfg: LearnerConfig, gpu: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": cfg.zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": gpu,
    }
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": gpu}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        # step() is the boundary of however many micro-batches this step has (varies per step).
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(gpu and cfg.bf16)},
        "data_types": {"grad_accum_dtype": "fp32"},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": list(cfg.adam_betas),
                "eps": 1e-8,
                "weight_decay": cfg.weight_decay,
                # CPU: torch's AdamW instead of building DeepSpeed's fused/CPU Adam op.
                "torch_adam": not gpu and not cfg.offload_optimizer,
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def load_policy_weights(module: torch.nn.Module, policy_dir: Path) -> None:
    """Load a save_pretrained directory's safetensors into an existing module (in place, so the
    optimizer keeps pointing at the same parameters)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(policy_dir.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"policy weights mismatch: missing {missing}, unexpected {unexpected}")
    module.tie_weights()


# ---------------------------------------------------------------------------------- worker


class LearnerWorker:
    """One rank of the learner group (see module docstring)."""

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
        trust_remote_code: bool = False,
    ) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        # Dr. GRPO's constant normaliser (the driver passes episode.max_reflection_tokens).
        self.max_tokens_norm = max_tokens_norm
        self.model_path = model_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            torch.cuda.set_device(0)  # Ray exposes exactly the actor's GPU as device 0
        self.backend = resolve_backend(cfg.backend, self.device)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if master_port is None:  # a lone in-process rank: any free port (DeepSpeed wants one)
            master_port = free_address()[1]
        init_distributed(rank, world_size, master_addr, master_port, self.device)
        engine_cls = DeepSpeedEngine if self.backend == "deepspeed" else TorchEngine
        total = total_steps if total_steps is not None else cfg.max_steps
        self.engine = engine_cls(model_path, cfg, self.device, world_size, total, trust_remote_code)
        self.ref = self._build_reference(trust_remote_code) if cfg.kl_coef != 0 else None

    def _build_reference(self, trust_remote_code: bool) -> torch.nn.Module:
        """Frozen copy of the initial policy. Under DeepSpeed on GPU it is a ZeRO-3 inference
        engine (sharded over ranks; parameters offloaded to CPU with offload_reference)."""
        ref = load_causal_lm(
            self.model_path, compute_dtype(self.cfg, self.device), trust_remote_code
        )
        ref.eval().requires_grad_(False)
        if self.backend == "deepspeed" and self.device.type == "cuda":
            import deepspeed

            zero: dict[str, Any] = {"stage": 3 if self.cfg.zero_stage == 3 else 0}
            if self.cfg.offload_reference and zero["stage"] == 3:
                zero["offload_param"] = {"device": "cpu", "pin_memory": True}
            ds_cfg = {
                "train_micro_batch_size_per_gpu": self.cfg.micro_batch_size,
                "zero_optimization": zero,
                "bf16": {"enabled": bool(self.cfg.bf16)},
                "steps_per_print": 10**9,
            }
            engine, *_ = deepspeed.initialize(model=ref, config=ds_cfg)
            return engine
        return ref.to(self.device)

    # ------------------------------------------------------------------ training

    def step(self, micro_batches: list[TrainBatch]) -> dict[str, float]:
        """One optimizer step over this rank's micro-batches (global normalisers inside)."""
        t0 = time.perf_counter()
        module, cfg = self.engine.module, self.cfg
        totals = dict.fromkeys(ADDITIVE_KEYS, 0.0)
        weighted = dict.fromkeys(TOKEN_MEAN_KEYS, 0.0)
        for mb in micro_batches:
            if mb.size == 0 or not bool(mb.mask.any()):
                # Nothing to train on this rank, but ZeRO's backward is a collective: a
                # zero-weight pass keeps every rank in step.
                dummy = torch.zeros((1, 2), dtype=torch.long, device=self.device)
                self.engine.backward(module(input_ids=dummy, use_cache=False).logits.sum() * 0.0)
                continue
            tokens, mask = mb.tokens.to(self.device), mb.mask.to(self.device)
            lp = masked_token_logprobs(module, tokens, mask, self.engine.autocast)
            ref_lp = None
            if self.ref is not None:
                with torch.no_grad():
                    ref_lp = masked_token_logprobs(self.ref, tokens, mask, self.engine.autocast)
            # One optimizer step per batch: "recomputed" old log-probs would equal the current
            # ones, which is what old_logprobs=None means (ratio 1, no extra forward pass).
            # Otherwise the sampler's log-probs correct for vLLM/learner mismatch.
            old = None if cfg.recompute_old_logprobs else mb.old_logprobs.to(self.device)
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
            )
            self.engine.backward(loss)
            totals["loss"] += m["loss"]
            totals["policy_loss"] += m["policy_loss"]
            totals["num_tokens"] += m["num_tokens"]
            totals["seq_tokens"] += mb.num_tokens
            totals["seqs"] += mb.size
            for k in TOKEN_MEAN_KEYS:
                weighted[k] += m[k] * m["num_tokens"]
        grad_norm, lr = self.engine.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        n_tok = max(totals["num_tokens"], 1.0)
        return {
            **totals,
            **{k: v / n_tok for k, v in weighted.items()},
            "grad_norm": grad_norm,
            "lr": lr,
            "step_s": seconds,
            "tokens_per_s": totals["seq_tokens"] / max(seconds, 1e-9),
            "global_step": float(self.engine.global_step),
        }

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Current policy log-probs at the batch's mask columns ([B, T-1], 0 elsewhere)."""
        return masked_token_logprobs(
            self.engine.module,
            batch.tokens.to(self.device),
            batch.mask.to(self.device),
            self.engine.autocast,
        ).cpu()

    # ------------------------------------------------------------------ weights

    def iter_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (gathered) weights in checkpoint names, tied duplicates skipped. Under ZeRO-3
        this is a collective: every rank must iterate it, in the same order."""
        seen: set[int] = set()
        for name, t in self.engine.iter_state():
            key = t.untyped_storage().data_ptr() if t.numel() else id(t)
            if key in seen:  # tied lm_head: vLLM ties it again from the embedding
                continue
            seen.add(key)
            yield name, t.detach()

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        return {k: v.to("cpu") for k, v in self.iter_weights()}

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
            save_policy_dir(weights, self.engine.module, self.model_path, d / "policy")
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

    def node_address(self) -> tuple[str, int]:
        return free_address()


def save_policy_dir(
    state: dict[str, torch.Tensor] | None, module: torch.nn.Module, model_path: str, out: Path
) -> None:
    """A Hugging Face directory (config, safetensors, tokenizer) that vLLM and transformers load."""
    from transformers import AutoTokenizer

    hf_module = getattr(module, "module", module)  # unwrap a DeepSpeed engine
    out.mkdir(parents=True, exist_ok=True)
    hf_module.save_pretrained(out, state_dict=state, safe_serialization=True)
    try:
        AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    except (OSError, ValueError) as exc:  # a model without a tokenizer still exports weights
        log.warning("no tokenizer copied from %s: %s", model_path, exc)


def free_address() -> tuple[str, int]:
    """This node's IP and a free TCP port (for MASTER_ADDR / MASTER_PORT)."""
    import socket

    try:
        import ray

        addr = ray.util.get_node_ip_address()
    except Exception:  # outside Ray
        addr = "127.0.0.1"
    with socket.socket() as s:
        s.bind(("", 0))
        return addr, int(s.getsockname()[1])
