"""Per-GPU memory of a run, estimated from the config and the model's shape (no GPU needed).

Learner rank (DeepSpeed mixed precision, `learner/engines.py::deepspeed_config`):
  weights      w bytes/param (bf16: 2), sharded over L ranks by ZeRO-3
  gradients    4 bytes/param (fp32 accumulation, `grad_accum_dtype`), sharded by ZeRO-2 and 3
  optimizer    12 bytes/param (fp32 master copy + Adam m and v), sharded by ZeRO-1+; 0 on the
               GPU with `learner.offload_optimizer`
  reference    the frozen reference model: w bytes/param; ZeRO-3-sharded when the policy is,
               and 0 on the GPU when also `learner.offload_reference`
  LoRA         (learner.lora.rank > 0) the base is frozen: gradients and optimizer state of the
               adapter's parameters alone, no reference copy (the adapter switched off); each
               vLLM worker keeps one adapter slot at its max_lora_rank
  logits       one micro-batch of max_model_len-token rows: (w + 4) bytes per logit (the
               model's output plus the fp32 log-softmax the log-prob kernel takes)
  activations  with gradient checkpointing, one hidden state per layer per token plus one
               layer's recomputation; without it, every layer's (rough: ~16 hidden-size
               vectors and 3 MLP-size vectors per token per layer)
Collective weight sync (`sync_buffer_bytes`), outside both budgets above: learner rank 0 keeps
two pack buffers of the largest bucket; every vLLM worker, during a push, holds the bucket being
received, one whose layer is still loading and the largest bucket (an embedding, about 1 GiB at
7B, travels alone above `sync.bucket_mb` and, with a padded vocabulary, waits for vLLM's final
pass: actors/worker_extension.py).
vLLM worker: `rollout.gpu_memory_utilization` x device memory, of which the weights (w/TP
bytes/param) and an activation reserve; the rest is KV cache, which must hold at least one
`model.max_model_len` sequence or vLLM refuses to start.
Colocated (learner and vLLM on one device): the learner's resident state (everything but
logits and activations) stays while vLLM is awake; vLLM sleeps (weights to CPU, KV freed) while
the learner computes.

These are estimates for planning (the textbook ZeRO accounting, Rajbhandari et al. 2020),
good to ~10-20 %; the allocator's fragmentation is covered by CUDA_OVERHEAD_GIB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrr.core.config import Config
from rrr.core.lora import engine_lora_rank
from rrr.core.model_shapes import ModelShape

GIB = 1024**3
CUDA_OVERHEAD_GIB = 2.0  # CUDA context, NCCL buffers, allocator slack per process
VLLM_ACTIVATION_RESERVE_GIB = 1.5  # vLLM's profiled peak activations at our batch sizes
VLLM_SLEEPING_GIB = 0.5  # a sleeping engine (level 1): its CUDA context and graphs
ADAM_BYTES = 12  # fp32 master weights + exp_avg + exp_avg_sq
GRAD_BYTES = 4  # fp32 gradient accumulation


@dataclass
class Budget:
    """One process's share of a device, by part, in GiB."""

    role: str
    parts: dict[str, float] = field(default_factory=dict)
    peak_only: set[str] = field(default_factory=set)  # parts absent while another role runs

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def resident(self) -> float:
        return sum(v for k, v in self.parts.items() if k not in self.peak_only)


def learner_budget(cfg: Config, shape: ModelShape, gpu: bool = True) -> Budget:
    lr = cfg.learner
    p, ranks = shape.params, lr.num_learners
    w = 2 if (gpu and lr.bf16) else 4
    zero = lr.zero_stage
    deepspeed = lr.backend != "torch"
    shard_weights = ranks if (deepspeed and zero == 3) else 1
    shard_grads = ranks if (deepspeed and zero >= 2) else 1
    shard_optim = ranks if deepspeed else 1
    tokens = lr.micro_batch_size * cfg.model.max_model_len
    per_layer = 16 * shape.hidden + 3 * shape.intermediate  # values per token per layer
    if lr.gradient_checkpointing:
        activation_values = tokens * (shape.layers * shape.hidden + per_layer)
    else:
        activation_values = tokens * shape.layers * per_layer
    if lr.lora.rank:
        # LoRA: the frozen base plus the adapter, of which alone there are gradients and Adam
        # state; the reference is the base with the adapter off (no copy).
        trained = shape.lora_params(lr.lora.rank, lr.lora.target_modules)
        weights, reference = w * (p + trained), 0.0
    else:
        trained, weights = p, w * p
        if deepspeed and zero == 3:
            reference = 0.0 if lr.offload_reference else w * p / ranks
        else:
            reference = w * p
    parts = {
        "weights": weights / shard_weights,
        "gradients": GRAD_BYTES * trained / shard_grads,
        "optimizer": 0.0 if lr.offload_optimizer else ADAM_BYTES * trained / shard_optim,
        "reference": reference,
        "logits": (w + 4) * tokens * shape.vocab,
        "activations": w * activation_values,
        "cuda overhead": CUDA_OVERHEAD_GIB * GIB,
    }
    return Budget("learner", {k: v / GIB for k, v in parts.items()}, {"logits", "activations"})


@dataclass
class VllmBudget(Budget):
    kv_tokens: int = 0


def vllm_budget(cfg: Config, shape: ModelShape, device_gib: float) -> VllmBudget:
    r = cfg.rollout
    tp = r.tensor_parallel_size
    w = 2  # vLLM serves bf16 on GPU
    total = r.gpu_memory_utilization * device_gib
    weights = w * shape.params / tp / GIB
    # An engine that serves adapters holds one adapter slot (max_loras=1) at its max_lora_rank.
    rank = engine_lora_rank(cfg)
    lora = w * shape.lora_params(rank, cfg.learner.lora.target_modules) / tp / GIB if rank else 0.0
    kv = max(0.0, total - weights - lora - VLLM_ACTIVATION_RESERVE_GIB)
    parts = {"weights": weights, "lora slot": lora, "activations": VLLM_ACTIVATION_RESERVE_GIB}
    budget = VllmBudget("vllm", {**parts, "kv cache": kv})
    budget.kv_tokens = int(kv * GIB // shape.kv_bytes_per_token(w, tp))
    return budget


def sync_buffer_bytes(bucket_sizes: list[int], bucket_bytes: int) -> tuple[int, int]:
    """Device bytes of the collective sync's buffers: (learner rank 0, each vLLM worker). A
    tensor larger than `bucket_bytes` travels in a bucket of its own, so the largest bucket,
    not `sync.bucket_mb`, sizes the buffers."""
    largest = max(bucket_sizes, default=0)
    regular = min(largest, bucket_bytes)
    return 2 * largest, largest + 2 * regular
