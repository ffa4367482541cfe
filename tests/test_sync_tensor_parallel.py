"""Tensor parallelism inside one vLLM CPU engine (tensor_parallel_size=2: two vLLM worker
processes, one core each): both workers join the collective sync group, both reload, and the
engine's log-probs then match the learner's. A module of its own, so that this engine never
lives beside tests/test_sync.py's two-engine fleet (2 cores, 24 GiB on CI)."""

from __future__ import annotations

from tests.test_sync import _learner_group, _restore, _step_sync_and_compare


def test_collective_sync_reaches_both_tensor_parallel_workers(ray_local, tiny_model_path):
    from rrr.actors.rollout_worker import RolloutWorker
    from rrr.core.config import SyncConfig
    from rrr.learner.weight_sync import CollectiveSync, make_weight_sync

    worker = RolloutWorker.options(num_cpus=1).remote(
        model_path=tiny_model_path, max_model_len=1024, kv_cache_gib=0.25, seed=0,
        tensor_parallel_size=2,
    )  # fmt: skip
    group = _learner_group(tiny_model_path, backend="torch")
    try:
        sync = make_weight_sync(SyncConfig(bucket_mb=1), group, [worker])
        assert isinstance(sync, CollectiveSync) and sync.world_size == 1 + 2
        _step_sync_and_compare(ray_local, [worker], group, sync)
        sync.close()
        _restore(ray_local, [worker], tiny_model_path)
    finally:
        group.shutdown()
        ray_local.kill(worker)
