"""One vLLM engine behind rrr's `Generator` contract. Its weight-receiving endpoint (live weight
updates) is actors/weight_endpoint.py, which this class inherits.

`VLLMEngine` is a plain class (usable in-process by scripts and benchmarks); `RolloutWorker`
in actors/rollout_worker.py is the same class as a Ray actor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rrr.actors.weight_endpoint import WeightEndpoint
from rrr.core.cpus import usable_cpus
from rrr.core.errors import RRRError
from rrr.core.generation import GenRequest, Sample

log = logging.getLogger(__name__)

WORKER_EXTENSION = "rrr.actors.worker_extension.WeightReceiver"


class EngineStartError(RRRError, RuntimeError):
    """vLLM could not start; the message names the model and the cause."""


def on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch always comes with vLLM
        return True


def kv_cache_bytes(gib: float) -> int:
    """rollout.kv_cache_gib in bytes, whole pages of 4 KiB."""
    page = 4096
    return max(page, int(gib * (1 << 30)) // page * page)


def cpu_thread_binds(cpus: list[int], tensor_parallel: int) -> tuple[str, int]:
    """VLLM_CPU_OMP_THREADS_BIND for `tensor_parallel` vLLM workers on the CPUs `cpus` ("|"
    separates the workers' CPU lists) and the OpenMP threads each gets. With fewer CPUs than
    workers, workers share CPUs (one thread each)."""
    per = max(1, len(cpus) // tensor_parallel)
    lists = []
    for i in range(tensor_parallel):
        first = (i * per) % len(cpus)
        lists.append(",".join(str(c) for c in cpus[first : first + per]))
    return "|".join(lists), per


def _cpu_env(cpu_threads: str, tensor_parallel: int = 1) -> None:
    """vLLM's CPU backend reads these at engine start (docs/cpu-stack.md). The default binds
    the CPUs this process may use (usable_cpus), not 0..cpu_count-1: under a pinned parent,
    binding the machine's cores would move the engine onto cores it was kept off."""
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    binds, threads = cpu_thread_binds(usable_cpus(), tensor_parallel)
    if cpu_threads:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads
    elif tensor_parallel > 1:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binds
    else:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", binds)
    # Without this vLLM's CPU worker ran single-threaded under Ray (docs/cpu-stack.md).
    os.environ["OMP_NUM_THREADS"] = str(threads)


class VLLMEngine(WeightEndpoint):
    """Owns one `vllm.LLM`. All calls are synchronous batches."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        kv_cache_gib: float = 2.0,
        cpu_threads: str = "",
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        seed: int = 0,
        trust_remote_code: bool = False,
        in_process: bool = False,
        lora: dict[str, Any] | None = None,
        max_lora_rank: int = 0,
    ) -> None:
        # vLLM's INFO lines (one per engine step on CPU) drown the driver's step lines.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        cpu = on_cpu()
        if not Path(model_path).exists() and model_path.startswith(("/", ".", "~")):
            raise EngineStartError(f"model path {model_path!r} does not exist")
        if cpu:
            _cpu_env(cpu_threads, tensor_parallel_size)
        if in_process:
            # Read by vLLM when the engine is built; this process hosts only this engine.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if dtype == "auto":
            dtype = "float32" if cpu else "bfloat16"  # bf16 has no oneDNN linear on this CPU
        self.model_path = model_path
        self.seed = seed  # the sampler's seed at start (reset_to_base returns to it)
        self.sleep_supported = enable_sleep_mode and not cpu
        # Keyed evaluation noise (rrr/core/crn.py): on CPU our logits processor, since a
        # per-request seed crashes vLLM's CPU sampler; on GPU vLLM's own per-request seeded
        # sampling (its GPU model runner v2 takes no v1-interface processor, and training
        # sampling there stays free of custom code).
        self.cpu = cpu
        extra: dict[str, Any] = {}
        if cpu:
            from rrr.actors.crn_logits import FQCN

            extra["logits_processors"] = [FQCN]
            # The KV cache's size in bytes, so a fraction of a GiB is what it says (vLLM's
            # VLLM_CPU_KVCACHE_SPACE takes whole GiB: 0.25 became 1). A user's
            # VLLM_CPU_KVCACHE_SPACE still wins: vLLM's CPU platform reads it after this.
            extra["kv_cache_memory_bytes"] = kv_cache_bytes(kv_cache_gib)
        # learner.lora: the engine serves the learner's adapter (one at a time) on the base
        # weights it loads here, which then never change (actors/weight_endpoint.py).
        self.serves_adapters = lora is not None
        if lora is not None:
            extra.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        # Tensor parallelism on vLLM's CPU build runs its workers as processes.
        if cpu and tensor_parallel_size > 1:
            extra["distributed_executor_backend"] = "mp"
        try:
            from vllm import LLM

            self.llm = LLM(
                model=model_path,
                dtype=dtype,
                max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                enforce_eager=cpu if enforce_eager is None else enforce_eager,
                enable_prefix_caching=enable_prefix_caching,
                enable_sleep_mode=self.sleep_supported,
                seed=seed,
                trust_remote_code=trust_remote_code,
                worker_extension_cls=WORKER_EXTENSION,
                # The sampled token's log-prob under the distribution it was drawn from (after
                # temperature): GRPO's "old" policy. vLLM's default, raw_logprobs, ignores the
                # temperature (issue 15); the learner scores with the same temperature.
                logprobs_mode="processed_logprobs",
                **extra,
            )
        except Exception as exc:  # vLLM raises many types; the user needs the cause, not a hang
            raise EngineStartError(
                f"vLLM failed to start for model {model_path!r} "
                f"(dtype={dtype}, tp={tensor_parallel_size}): {type(exc).__name__}: {exc}"
            ) from exc
        if lora is not None:
            self.llm.collective_rpc("rrr_serve_adapters", args=(lora,))
        self.tokenizer = self.llm.get_tokenizer()
        self._sleeping = False
        # The policy version of the loaded weights (the learner step they come from; 0 = the
        # base model). Set by every weight load that names one; stamped on every sample.
        self.version = 0

    # ------------------------------------------------------------------ generation

    def generate(self, requests: list[GenRequest], seed: int | None = None) -> list[list[Sample]]:
        """Sample every request; with `seed`, the sampler is reseeded first, so the same batch on
        the same weights gives the same samples (what a restarted worker relies on)."""
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        if seed is not None:
            self.llm.collective_rpc("rrr_reseed", args=(seed,))
        # A request with n samples goes in as n requests with n=1: vLLM fans n out into child
        # requests anyway, but their order in the batch varies from call to call, so a reseeded
        # call would hand the same noise to different children.
        flat = [(r, j) for r in requests for j in range(r.n)]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r, _ in flat]
        params = [self._params(r, None if r.noise_keys is None else r.noise_keys[j])
                  for r, j in flat]  # fmt: skip
        outputs = iter(
            self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora_request)
        )
        return [
            [_to_sample(next(outputs).outputs[0], self.version) for _ in range(r.n)]
            for r in requests
        ]

    def _params(self, r: GenRequest, noise_key: int | None) -> Any:
        from vllm import SamplingParams

        common: dict[str, Any] = {
            "n": 1,
            "max_tokens": r.max_tokens,
            "stop_token_ids": list(r.stop_token_ids),
            # Keep special tokens: the chat-template end-of-turn marker ends the text anyway.
            "skip_special_tokens": True,
        }
        if noise_key is None or r.temperature == 0:
            # The sampled token's own log-prob: what GRPO's ratio needs.
            return SamplingParams(temperature=r.temperature, top_p=r.top_p, logprobs=0, **common)
        # Keyed noise (evaluation): full softmax at r.temperature (no nucleus), no log-probs
        # (those of a keyed sample are not the policy's, and nothing trains on them).
        if self.cpu:
            from rrr.core.crn import EXTRA_ARGS_KEY

            return SamplingParams(
                temperature=0.0, extra_args={EXTRA_ARGS_KEY: [noise_key, r.temperature]}, **common
            )
        return SamplingParams(temperature=r.temperature, seed=noise_key, **common)

    # ------------------------------------------------------------------ cache

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    # ------------------------------------------------------------------ colocation

    def sleep(self, level: int = 1) -> bool:
        """Free GPU memory for a colocated learner; a logged no-op where unsupported."""
        if not self.sleep_supported:
            log.info("vLLM sleep mode unavailable here (CPU build or disabled); not sleeping")
            return False
        self.llm.sleep(level=level)
        self._sleeping = True
        return True

    def wake_up(self) -> bool:
        if not self._sleeping:
            return False
        self.llm.wake_up()
        self._sleeping = False
        return True

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        """The actor's process id (fault-injection tests kill it with SIGKILL)."""
        return os.getpid()


def _to_sample(completion: Any, version: int) -> Sample:
    ids = list(completion.token_ids)
    logprobs = [float(step[tok].logprob) for tok, step in zip(ids, completion.logprobs or [])]
    return Sample(
        token_ids=ids,
        logprobs=logprobs,
        text=completion.text,
        finish_reason="length" if completion.finish_reason == "length" else "stop",
        version=version,
    )
