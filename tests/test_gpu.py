"""GPU checks (skipped on CPU; scripts/gpu-check.sh runs them on a one-GPU machine). Each has a
CPU twin that runs the same code: tests/test_sync.py (collective over gloo, object store),
tests/test_cluster_cpu.py (multi-rank training)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _group(model_path: str, gpus: float):
    from rrr.core.config import LearnerConfig
    from rrr.learner.group import LearnerGroup

    cfg = LearnerConfig(backend="deepspeed", zero_stage=2, bf16=False, lr=3e-2,
                        lr_scheduler="constant", warmup_ratio=0.0, max_steps=5, kl_coef=0.0,
                        gradient_checkpointing=False, micro_batch_size=2,
                        num_gpus_per_learner=gpus)  # fmt: skip
    return LearnerGroup(cfg, model_path)


@pytest.mark.parametrize("offload", [False, True], ids=["on-device", "offload_optimizer"])
def test_deepspeed_optimizer_builds_and_steps_without_compiling(tiny_model_path, offload):
    """bf16 DeepSpeed ZeRO-2 on the GPU builds torch's fused AdamW (on the device, or on the
    offloaded fp32 master weights in host memory) and takes two steps, with no op to compile.
    CPU twin: tests/test_learner.py::test_deepspeed_zero2_on_cpu_matches_the_torch_engine_..."""
    from rrr.core.config import LearnerConfig
    from rrr.core.train_batch import build_train_batch
    from rrr.learner.packing import shard_batch
    from rrr.learner.worker import LearnerWorker
    from tests.test_learner import _episodes

    cfg = LearnerConfig(backend="deepspeed", zero_stage=2, bf16=True, lr=1e-3,
                        lr_scheduler="constant", warmup_ratio=0.0, max_steps=5, kl_coef=0.0,
                        gradient_checkpointing=False, micro_batch_size=2,
                        offload_optimizer=offload)  # fmt: skip
    worker = LearnerWorker(tiny_model_path, cfg)
    engine = worker.engine.engine
    assert type(engine.basic_optimizer) is torch.optim.AdamW
    assert engine.basic_optimizer.defaults["fused"] is True
    assert engine.zero_cpu_offload() is offload
    for seed in (0, 1):
        batch = build_train_batch(*_episodes(n=8, seed=seed), 4)
        metrics = worker.step(shard_batch(batch, 1, 3)[0])
        assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0


def test_colocated_one_gpu_sync_gives_vllm_the_learners_weights(ray_local, tiny_model_path):
    """Learner and vLLM share one GPU (fractional Ray GPUs): the backend is object_store (NCCL
    cannot pair two ranks on one device); after a step, sleep/wake and a push, vLLM's
    log-probs (fp32) match the learner's."""
    from rrr.actors.rollout_worker import RolloutWorker
    from rrr.core.config import SyncConfig
    from rrr.learner.weight_sync import ObjectStoreSync, make_weight_sync
    from tests.test_sync import _step_sync_and_compare

    worker = RolloutWorker.options(num_gpus=0.4).remote(
        model_path=tiny_model_path, dtype="float32", max_model_len=1024,
        gpu_memory_utilization=0.3, enable_sleep_mode=True, seed=0,
    )  # fmt: skip
    group = _group(tiny_model_path, 0.5)
    try:
        sync = make_weight_sync(SyncConfig(), group, [worker])
        assert isinstance(sync, ObjectStoreSync)
        assert ray_local.get(worker.sleep.remote()) is True
        group.release_memory()
        assert ray_local.get(worker.wake_up.remote()) is True
        _step_sync_and_compare(ray_local, [worker], group, sync)
        sync.close()
    finally:
        group.shutdown()
        ray_local.kill(worker)


def test_nccl_collective_sync_across_two_gpus(ray_local, tiny_model_path):
    """The collective backend over NCCL: learner rank 0 on one GPU, vLLM on another."""
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL between learner and vLLM needs 2 GPUs (one device cannot hold both)")
    from rrr.actors.rollout_worker import RolloutWorker
    from rrr.core.config import SyncConfig
    from rrr.learner.weight_sync import CollectiveSync, make_weight_sync
    from tests.test_sync import _step_sync_and_compare

    worker = RolloutWorker.options(num_gpus=1).remote(
        model_path=tiny_model_path, dtype="float32", max_model_len=1024,
        gpu_memory_utilization=0.3, seed=0,
    )  # fmt: skip
    group = _group(tiny_model_path, 1)
    try:
        sync = make_weight_sync(SyncConfig(bucket_mb=1), group, [worker])
        assert isinstance(sync, CollectiveSync) and sync.group_backend == "nccl"
        _step_sync_and_compare(ray_local, [worker], group, sync)
        sync.close()
    finally:
        group.shutdown()
        ray_local.kill(worker)
