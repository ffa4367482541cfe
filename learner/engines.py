"""The two training engines behind one small interface, and the frozen reference model.

  - `TorchEngine`: a bare module on one rank; on L > 1 ranks gradients are summed with ONE
    coalesced all-reduce per step (gloo on CPU, nccl on GPU). Not DDP's per-backward mean:
    the loss of every micro-batch is already divided by the FULL batch's normalisers, so the
    ranks' gradients must be SUMMED, and ranks may run different numbers of micro-batches.
  - `DeepSpeedEngine`: `deepspeed.initialize` with ZeRO 2/3, bf16 on GPU, optional optimizer
    offload; "managed_gradient_accumulation": false makes step() the accumulation boundary of
    however many micro-batches a step has. Its optimizer is torch's fused AdamW, offloaded or
    not, so no DeepSpeed op is ever compiled for it (no nvcc, ninja or g++ needed on a GPU).
    DeepSpeed averages gradients over ranks, so the loss is multiplied by the world size to
    keep the SUM semantics above.

Both expose `module` (what the forward goes through), `autocast`, `backward`, `step`,
`global_step`, `save` and `load` (the weights are read through learner/manifest.py).

backend "auto" = deepspeed on GPU, torch on CPU. DeepSpeed 0.19.8 also trains on this CPU (ZeRO-2,
torch AdamW; same losses as the torch engine, bit-identical resume; tests/test_learner.py), but
its first start JIT-compiles a shared-memory comm op with g++ (~100 s once, then cached in
~/.cache/torch_extensions), and it adds nothing on one CPU rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rrr.core.config import LearnerConfig
from rrr.learner.checkpoint import save_torch
from rrr.learner.hf_model import load_causal_lm, load_policy_weights
from rrr.learner.lora import apply_lora
from rrr.learner.schedule import build_scheduler

# DeepSpeed prints throughput every N steps; we log our own metrics.
NEVER_PRINT = 10**9
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, so both engines run the same optimizer


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        return "deepspeed" if device.type == "cuda" else "torch"
    return backend


def compute_dtype(cfg: LearnerConfig, device: torch.device) -> torch.dtype:
    # vLLM's CPU backend serves float32 (no oneDNN bf16 linear), so CPU training stays float32.
    return torch.bfloat16 if (device.type == "cuda" and cfg.bf16) else torch.float32


def deepspeed_config(cfg: LearnerConfig, gpu: bool, *, reference: bool = False) -> dict[str, Any]:
    """THE DeepSpeed config of rrr: the policy's training engine, or (reference=True) the frozen
    reference's inference engine, which is ZeRO-3-sharded only when the policy is (and then
    optionally offloaded to CPU memory, `offload_reference`), and has no optimizer."""
    common: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "bf16": {"enabled": bool(gpu and cfg.bf16)},
        "steps_per_print": NEVER_PRINT,
    }
    if reference:
        zero: dict[str, Any] = {"stage": 3 if cfg.zero_stage == 3 else 0}
        if cfg.offload_reference and zero["stage"] == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": gpu}
        return {**common, "zero_optimization": zero}
    zero = {
        "stage": cfg.zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": gpu,
    }
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": gpu}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        **common,
        "gradient_accumulation_steps": 1,
        # step() is the boundary of however many micro-batches this step has (varies per step).
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "data_types": {"grad_accum_dtype": "fp32"},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": list(cfg.adam_betas),
                "eps": ADAM_EPS,
                "weight_decay": cfg.weight_decay,
                # torch's own AdamW, everywhere: DeepSpeed's FusedAdam (GPU) and
                # DeepSpeedCPUAdam (offload) are JIT-compiled at first use with nvcc/g++ and
                # ninja, which a pip-installed DeepSpeed has no prebuilt copy of and torch 2.13's
                # CUDA 13 wheel brings no nvcc for: every GPU preset would stop in
                # deepspeed.initialize. torch's fused kernel exists for CUDA and CPU tensors
                # alike, so the offloaded optimizer (fp32 master weights in host memory) runs
                # it too, with nothing to build.
                "torch_adam": True,
                "fused": True,
            },
        },
        "wall_clock_breakdown": False,
    }


def _policy_model(
    model_path: str, cfg: LearnerConfig, dtype: torch.dtype, trust_remote_code: bool
) -> torch.nn.Module:
    """The model the engine trains: the whole model, or (learner.lora.rank > 0) the frozen
    model with a LoRA adapter, whose parameters alone require gradients."""
    model = load_causal_lm(model_path, dtype, trust_remote_code)
    if cfg.gradient_checkpointing:
        # Non-reentrant: recomputes the forward without needing inputs that require grad
        # (under LoRA the embeddings' outputs do not).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_lora(model, cfg.lora, model_path) if cfg.lora.rank else model


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
        self.module = _policy_model(model_path, cfg, torch.float32, trust_remote_code).to(device)
        self.autocast = torch.bfloat16 if compute_dtype(cfg, device) == torch.bfloat16 else None
        self.module.train()
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=cfg.lr,
            betas=tuple(cfg.adam_betas),
            eps=ADAM_EPS,
            weight_decay=cfg.weight_decay,
            # One fused kernel per tensor instead of foreach's several passes over 135M+ floats:
            # 0.51 -> 0.08 s per step for SmolLM2-135M on one core of this CPU (bench/RESULTS.md).
            fused=True,
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

        if device.type == "cpu" and not cfg.cpu_shm_comm:
            skip_cpu_shm_comm()  # before zero.Init or initialize start DeepSpeed's comm
        self.cfg, self.device, self.world_size = cfg, device, world_size
        self.ds_config = deepspeed_config(cfg, device.type == "cuda")
        self._hf_ds = None
        if cfg.zero_stage == 3:
            # Lets from_pretrained build the model already partitioned (zero.Init).
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(self.ds_config)
        model = _policy_model(model_path, cfg, compute_dtype(cfg, device), trust_remote_code)
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

    def save(self, directory: Path, rank: int) -> None:
        del rank  # every rank writes its own ZeRO shards
        # Under LoRA the frozen base is the model directory's: only the adapter is state.
        self.engine.save_checkpoint(
            str(directory / "deepspeed"),
            tag="state",
            exclude_frozen_parameters=bool(self.cfg.lora.rank),
        )

    def load(self, directory: Path, policy_dir: Path) -> None:
        del policy_dir  # the DeepSpeed checkpoint holds the module weights itself
        path, _ = self.engine.load_checkpoint(
            str(directory / "deepspeed"),
            tag="state",
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
            load_module_strict=not self.cfg.lora.rank,  # a LoRA checkpoint has no frozen base
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {directory / 'deepspeed'}")


ENGINES: dict[str, type] = {"torch": TorchEngine, "deepspeed": DeepSpeedEngine}


def skip_cpu_shm_comm() -> None:
    """learner.cpu_shm_comm=false: DeepSpeed's comm builds its CPU shared-memory allreduce (a g++
    JIT compile) when its op table lists the op as compatible, and otherwise falls back to
    torch.distributed, as on a platform without the op. The table is one dict that DeepSpeed
    caches at first use and documents as editable (deepspeed/ops/__init__.py)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def build_reference(
    model_path: str,
    cfg: LearnerConfig,
    device: torch.device,
    backend: str,
    trust_remote_code: bool,
) -> torch.nn.Module:
    """Frozen copy of the initial policy (the KL anchor). Under DeepSpeed it is a ZeRO inference
    engine, on CPU as on GPU (sharded over ranks with ZeRO-3; parameters offloaded to CPU with
    offload_reference). It must be: with a ZeRO-3 policy, transformers builds every later model
    already partitioned (zero.Init), and a partitioned model without DeepSpeed's gather hooks
    fails its first forward.

    Under ZeRO-3 the reference is loaded under ITS OWN config: transformers' zero.Init takes
    the partitions' device (`offload_param`) from the config it holds at load time, and the
    policy's has no offload_param, so the reference would be partitioned onto the GPU and
    DeepSpeed, which leaves partitioned parameters where they are, would never offload it."""
    if backend != "deepspeed":
        ref = load_causal_lm(model_path, compute_dtype(cfg, device), trust_remote_code)
        return ref.eval().requires_grad_(False).to(device)
    import deepspeed

    ds_config = deepspeed_config(cfg, gpu=device.type == "cuda", reference=True)
    with _zero3_loading_config(ds_config):
        ref = load_causal_lm(model_path, compute_dtype(cfg, device), trust_remote_code)
    ref.eval().requires_grad_(False)
    engine, *_ = deepspeed.initialize(model=ref, config=ds_config)
    return engine


@contextlib.contextmanager
def _zero3_loading_config(ds_config: dict[str, Any]) -> Iterator[None]:
    """transformers reads the ZeRO-3 config of a load from one process-wide weak reference (set
    by the policy's HfDeepSpeedConfig); point it at `ds_config` for one load, then restore it.
    A ZeRO-0 config (the reference of a ZeRO-2 policy) loads unpartitioned, as before."""
    import transformers.integrations.deepspeed as hf_ds
    from transformers.integrations import HfDeepSpeedConfig

    previous = hf_ds._hf_deepspeed_config_weak_ref
    holder = HfDeepSpeedConfig(ds_config)  # sets the weak reference while it lives
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = previous
        del holder
