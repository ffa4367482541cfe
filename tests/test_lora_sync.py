"""LoRA's adapter-only weight sync on the real stack (issue 30): a vLLM CPU engine that serves
adapters, a learner group training one, and the push through both sync backends. After a push
vLLM's log-probs are the learner's (the same tolerance as a full-weight push, tests/test_sync.py)
and have moved; what travels is the adapter alone; a reset or a failed load leaves the base."""

from __future__ import annotations

import pytest
import torch

from rrr.core.config import LoraConfig, SyncConfig
from rrr.core.generation import GenRequest
from rrr.core.lora import adapter_config
from tests.helpers import IN_PROCESS
from tests.test_sync import _learner_group, _step_sync_and_compare

pytestmark = pytest.mark.slow
LORA = LoraConfig(rank=4, alpha=8.0)
PROMPT = [1, 42, 77, 1337, 9, 2024, 31]


@pytest.fixture(scope="module")
def lora_worker(ray_local, tiny_model_path):
    """One real vLLM CPU engine built to serve adapters, as `rrr train` starts it with
    learner.lora.rank=4 (rrr.actors.rollout_worker.engine_kwargs)."""
    from rrr.actors.rollout_worker import RolloutWorker

    worker = RolloutWorker.options(num_cpus=1).remote(
        model_path=tiny_model_path, max_model_len=2048, kv_cache_gib=0.25, seed=0,
        lora=adapter_config(LORA, tiny_model_path), max_lora_rank=8, in_process=IN_PROCESS,
    )  # fmt: skip
    ray_local.get(worker.ping.remote())
    yield worker
    ray_local.kill(worker)


def _sample(ray_local, worker) -> tuple[list[int], list[float], int]:
    req = GenRequest(PROMPT, n=1, temperature=1.0, max_tokens=12)
    (s,) = ray_local.get(worker.generate.remote([req], seed=7))[0]
    return s.token_ids, s.logprobs, s.version


@pytest.mark.parametrize("backend", ["collective", "object_store"])
def test_a_push_sends_the_adapter_alone_and_vllm_samples_the_learners_policy(
    ray_local, lora_worker, tiny_model_path, backend
):
    from rrr.learner.weight_sync import make_weight_sync

    base = _sample(ray_local, lora_worker)
    group = _learner_group(tiny_model_path, lora=LORA)
    sync = make_weight_sync(SyncConfig(backend=backend, bucket_mb=1), group, [lora_worker])
    try:
        # Before, between and after: the learner's log-probs are vLLM's (_step_sync_and_compare).
        _step_sync_and_compare(ray_local, [lora_worker], group, sync)
        timings = sync.push()
        full = tiny_model_bytes(tiny_model_path)
        assert 0 < timings.bytes < full / 20, (timings.bytes, full)  # the adapter alone
        ids, logprobs, version = _sample(ray_local, lora_worker)
        assert version == group.version == 1
        assert (ids, logprobs) != base[:2]  # the push changed what vLLM samples
        # A reset drops the adapter: the base model again, exactly.
        ray_local.get(lora_worker.reset_to_base.remote())
        assert _sample(ray_local, lora_worker) == base
    finally:
        sync.close()
        group.shutdown()
        ray_local.get(lora_worker.reset_to_base.remote())


def test_a_failed_adapter_load_leaves_the_base_model(ray_local, lora_worker, tiny_model_path):
    """A load that fails part-way (here: a file that does not exist) leaves no adapter: the
    engine says version 0 and samples the base model, as a failed full-weight load does."""
    import ray

    base = _sample(ray_local, lora_worker)
    with pytest.raises(ray.exceptions.RayTaskError, match=r"No such file|not found|does not exist"):
        ray_local.get(lora_worker.load_weights_file.remote("/nonexistent.safetensors", None, 3))
    assert _sample(ray_local, lora_worker) == base


def tiny_model_bytes(model_path: str) -> int:
    from pathlib import Path

    return (Path(model_path) / "model.safetensors").stat().st_size


def test_adapter_load_ids_are_never_reused(ray_local, lora_worker):
    """Each load is a new vLLM adapter id (vLLM keys its caches by id): a reused id could
    serve an old adapter's state."""
    ids = []
    for _ in range(2):
        state = {k: torch.zeros_like(v) for k, v in _zero_adapter().items()}
        ray_local.get(lora_worker.load_state_dict.remote(state))
        ids.append(ray_local.get(lora_worker.adapter_id.remote()))
    assert ids[1] > ids[0] > 0
    ray_local.get(lora_worker.reset_to_base.remote())
    assert ray_local.get(lora_worker.adapter_id.remote()) is None


def _zero_adapter() -> dict[str, torch.Tensor]:
    """A rank-4 adapter of zeros on the tiny model's seven targets (two layers, hidden 128,
    intermediate 256, one key/value head of 64)."""
    dims = {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64),
            "o_proj": (128, 128), "gate_proj": (128, 256), "up_proj": (128, 256),
            "down_proj": (256, 128)}  # fmt: skip
    out = {}
    for layer in range(2):
        for name, (d_in, d_out) in dims.items():
            part = "mlp" if name.endswith(("gate_proj", "up_proj", "down_proj")) else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{name}"
            out[f"{prefix}.lora_A.weight"] = torch.zeros(4, d_in)
            out[f"{prefix}.lora_B.weight"] = torch.zeros(d_out, 4)
    return out
