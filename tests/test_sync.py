"""Weight sync: the bucket wire format (pure, shared with the GPU path), and a real learner ->
vLLM rollout worker push on CPU whose log-probs then match the learner's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from learner.buckets import from_wire, pack_bucket, plan_buckets, to_wire, unpack_bucket


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(50, 8, generator=g),
        "a.bias": torch.randn(3, generator=g).to(torch.bfloat16),
        "b.weight": torch.randn(7, 5, generator=g).to(torch.float16),
        "steps": torch.arange(5, dtype=torch.int64),
        "big.weight": torch.randn(300, 4, generator=g),  # larger than a bucket: travels alone
        "norm.weight": torch.randn(1, generator=g),
    }


@pytest.mark.parametrize("bucket_bytes", [1, 100, 1000, 4800, 1 << 20])
def test_buckets_round_trip_mixed_dtypes(bucket_bytes):
    tensors = _tensors()
    plan = plan_buckets([(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()], bucket_bytes)
    plan = from_wire(to_wire(plan))  # what the receivers get over RPC
    names = [e.name for b in plan for e in b.entries]
    assert names == list(tensors)  # order kept, nothing lost or duplicated
    for b in plan:
        assert len(b.entries) == 1 or b.nbytes <= bucket_bytes
        for e in b.entries:
            assert e.offset % 64 == 0
    got = {}
    for b in plan:
        buf = pack_bucket(b, tensors)
        assert buf.dtype == torch.uint8 and buf.numel() == b.nbytes
        got.update({k: v.clone() for k, v in unpack_bucket(buf, b)})
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_pack_reuses_a_buffer_and_rejects_a_wrong_tensor():
    tensors = _tensors()
    (plan,) = plan_buckets([(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()], 1 << 20)
    buf = torch.zeros(plan.nbytes + 128, dtype=torch.uint8)
    out = pack_bucket(plan, tensors, out=buf)
    assert out.data_ptr() == buf.data_ptr()
    bad = dict(tensors, **{"a.bias": torch.zeros(4, dtype=torch.bfloat16)})
    with pytest.raises(ValueError, match=r"a\.bias"):
        pack_bucket(plan, bad)


@pytest.mark.gpu
@pytest.mark.slow
def test_nccl_sync_gives_the_rollout_worker_the_learners_weights(ray_local, tiny_model_path):
    """GPU twin of the CPU test below: NcclSync (learner rank 0 + the vLLM worker in one NCCL
    group, packed buckets, rrr_receive_buckets). NCCL refuses two ranks on one device, so this
    needs two GPUs. The bucket packing it runs is covered on CPU by the tests above."""
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL sync needs 2 GPUs (learner and vLLM on different devices)")
    from actors.rollout_worker import RolloutWorker
    from learner.weight_sync import NcclSync

    worker = RolloutWorker.options(num_gpus=1).remote(
        model_path=tiny_model_path,
        dtype="float32",
        max_model_len=1024,
        gpu_memory_utilization=0.3,
        seed=0,
    )
    group = _learner_group(tiny_model_path, backend="torch", bf16=False, num_gpus_per_learner=1)
    sync = NcclSync(bucket_bytes=1 << 20)  # several buckets even for the tiny model
    try:
        _step_sync_and_compare(ray_local, worker, group, sync, None)
    finally:
        sync.close()
        group.shutdown()
        ray_local.kill(worker)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["shm", "object"])
def test_object_store_sync_gives_the_rollout_worker_the_learners_weights(
    ray_local, rollout_worker, tiny_model_path, transport
):
    from learner.weight_sync import ObjectStoreSync

    group = _learner_group(tiny_model_path)
    sync = ObjectStoreSync(transport=transport)
    try:
        _step_sync_and_compare(ray_local, rollout_worker, group, sync, transport)
    finally:
        sync.close()
        group.shutdown()
        # The session's engine must serve the original tiny weights again for other tests.
        ray_local.get(
            rollout_worker.load_weights_file.remote(
                str(Path(tiny_model_path) / "model.safetensors")
            )
        )
    assert not os.path.exists(sync.path)


def _learner_group(model_path: str, **overrides):
    from learner.group import LearnerGroup
    from rrr.config import LearnerConfig

    cfg = LearnerConfig(
        lr=3e-2,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=10,
        gradient_checkpointing=False,
        micro_batch_size=2,
        kl_coef=0.0,
        **overrides,
    )
    return LearnerGroup(cfg, model_path)


def _step_sync_and_compare(ray_local, worker, group, sync, transport) -> None:
    """Sample from vLLM, check the learner agrees, take a high-lr step, push, sample again: the
    new log-probs match the learner's (fp32, 2e-3) and the old sequence's have moved."""
    from learner.batch import build_train_batch
    from rrr.generation import GenRequest

    prompt = [1, 42, 77, 1337, 9, 2024, 31]

    def sample() -> tuple[list[int], list[float]]:
        req = GenRequest(prompt, n=1, temperature=1.0, max_tokens=12)
        s = ray_local.get(worker.generate.remote([req]))[0][0]
        return s.token_ids, s.logprobs

    def learner_logprobs(ids: list[int]) -> torch.Tensor:
        span = (len(prompt), len(prompt) + len(ids))
        b = build_train_batch([prompt + ids], [span], [[0.0] * len(ids)], [0.0], 1)
        return ray_local.get(group.actors[0].logprobs.remote(b))[0][b.mask[0]]

    ids0, vllm0 = sample()
    before = learner_logprobs(ids0)
    assert torch.allclose(torch.tensor(vllm0), before, atol=2e-3)
    span = (len(prompt), len(prompt) + len(ids0))
    group.step(build_train_batch([prompt + ids0] * 2, [span] * 2, [vllm0] * 2, [1.0, 0.0], 2))
    sync.init(group, [worker])
    if transport is not None:
        assert sync.transport == transport
    timings = sync.push()
    assert timings.bytes > 0 and timings.load_s > 0 and timings.total_s > 0
    assert not _reload_warnings(ray_local), "vLLM warned on reload (actors/worker_extension.py)"
    ids1, vllm1 = sample()
    after = learner_logprobs(ids1)
    assert torch.allclose(torch.tensor(vllm1), after, atol=2e-3), (vllm1, after)
    assert not torch.allclose(learner_logprobs(ids0), before, atol=1e-2)


def _reload_warnings(ray_local) -> list[str]:
    """vLLM's "<Layer>: Failed to load weights" lines in this Ray session's worker logs (the
    rollout worker's stderr, engine core included). RotaryEmbedding and the tied
    ParallelLMHead printed one on every sync before the filter in actors/worker_extension.py."""
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    return [
        line
        for path in logs.glob("worker-*.err")
        for line in path.read_text(errors="replace").splitlines()
        if "Failed to load weights" in line
    ]


def test_expected_reload_warnings_are_dropped_and_others_kept() -> None:
    """The filter drops exactly the two expected lines on vLLM's own reload logger."""
    import logging

    from actors.worker_extension import RELOAD_LOGGER, RELOAD_WARNING, ExpectedReloadWarnings

    def record(layer: str) -> logging.LogRecord:
        return logging.LogRecord(RELOAD_LOGGER, logging.WARNING, "", 0, RELOAD_WARNING,
                                 (layer,), None)  # fmt: skip

    tied, untied = ExpectedReloadWarnings(True), ExpectedReloadWarnings(False)
    assert not tied.filter(record("RotaryEmbedding"))
    assert not tied.filter(record("ParallelLMHead"))
    assert untied.filter(record("ParallelLMHead"))  # an untied head that did not load is news
    assert not untied.filter(record("RotaryEmbedding"))
    assert tied.filter(record("LlamaDecoderLayer"))
    other = logging.LogRecord(RELOAD_LOGGER, logging.WARNING, "", 0, "something else", (), None)
    assert tied.filter(other)
