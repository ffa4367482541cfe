"""Weight sync: the bucket wire format (pure, shared with the GPU path), and a real learner ->
vLLM rollout worker push on CPU whose log-probs then match the learner's."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from rrr.core.weights.wire import from_wire, pack_bucket, plan_buckets, to_wire, unpack_bucket
from tests.helpers import IN_PROCESS_OVERRIDE


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


# --- the real thing: learner ranks -> rollout workers, on CPU --------------------------------
# Each case: sample from every rollout worker, check the learner agrees, take a high-lr step,
# push, sample again: every worker's new log-probs match the learner's and have moved.

CASES = {
    # name: (model, rollout workers, learner config)
    "tied-R2-L1-torch": ("tied", 2, {"backend": "torch"}),
    "tied-R2-L2-zero3": ("tied", 2, {"backend": "deepspeed", "zero_stage": 3, "num_learners": 2}),
    "untied-R1-L2-zero2": ("untied", 1, {"backend": "deepspeed", "zero_stage": 2,
                                          "num_learners": 2}),
    "untied-R1-L1-zero3": ("untied", 1, {"backend": "deepspeed", "zero_stage": 3}),
}  # fmt: skip
# Tensor parallelism (one engine, two vLLM workers) is in tests/test_sync_tensor_parallel.py:
# its own module, so that its engine never lives beside this module's two-engine fleet.


@pytest.fixture(scope="module")
def tied_model_path(tmp_path_factory, smollm2_path) -> str:
    from tests.helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-tied"), smollm2_path, tied=True)


@pytest.fixture(scope="module")
def tied_fleet(ray_local, tied_model_path):
    """Two real vLLM CPU engines on the tied model, as the trainer starts them."""
    from rrr.actors.rollout_worker import RolloutFleet
    from rrr.core.config import load_config

    cfg = load_config(None, [f"model.name_or_path={tied_model_path}", "model.max_model_len=1024",
                             "rollout.num_workers=2", "rollout.kv_cache_gib=0.25",
                             "rollout.num_cpus_per_worker=1", IN_PROCESS_OVERRIDE])  # fmt: skip
    fleet = RolloutFleet.start(cfg, tied_model_path)
    yield fleet
    fleet.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_collective_sync_gives_every_vllm_worker_the_learners_weights(
    ray_local, request, tiny_model_path, tied_model_path, case
):
    from rrr.core.config import SyncConfig
    from rrr.learner.weight_sync import CollectiveSync, make_weight_sync

    model, replicas, overrides = CASES[case]
    path = tied_model_path if model == "tied" else tiny_model_path
    vllm_workers = replicas
    fixture = {"tied": "tied_fleet", "untied": "rollout_worker"}
    found = request.getfixturevalue(fixture[model])
    workers = found.workers if model == "tied" else [found]
    assert len(workers) == replicas
    group = _learner_group(path, **overrides)
    sync = make_weight_sync(SyncConfig(backend="auto", bucket_mb=1), group, workers)
    try:
        assert isinstance(sync, CollectiveSync) and sync.group_backend == "gloo"
        assert sync.num_buckets > 1  # several buckets even for the tiny model
        assert sync.world_size == 1 + vllm_workers  # learner rank 0 + every vLLM worker
        _step_sync_and_compare(ray_local, workers, group, sync)
    finally:
        sync.close()
        group.shutdown()
        _restore(ray_local, workers, path)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["shm", "object"])
def test_object_store_sync_gives_the_rollout_worker_the_learners_weights(
    ray_local, rollout_worker, tiny_model_path, transport
):
    from rrr.core.config import SyncConfig
    from rrr.learner.weight_sync import ObjectStoreSync

    group = _learner_group(tiny_model_path)
    sync = ObjectStoreSync(SyncConfig(), transport=transport)
    sync.init(group, [rollout_worker])
    try:
        assert sync.transport == transport
        _step_sync_and_compare(ray_local, [rollout_worker], group, sync)
    finally:
        sync.close()
        group.shutdown()
        _restore(ray_local, [rollout_worker], tiny_model_path)
    assert not os.path.exists(sync.path)


@pytest.mark.slow
def test_killed_rollout_worker_rejoins_a_new_group_and_the_next_step_runs(
    ray_local, tied_fleet, tied_model_path
):
    """A worker SIGKILLed between steps: the push fails within the timeout (never hangs), the
    fleet replaces it, the new worker joins a new group, and the next step's push gives every
    worker (old and new) the learner's weights."""
    import ray

    from rrr.core.config import SyncConfig
    from rrr.learner.weight_sync import make_weight_sync

    group = _learner_group(tied_model_path)
    sync = make_weight_sync(SyncConfig(backend="collective", timeout_s=60), group, tied_fleet)
    tied_fleet.on_restart = lambda _: sync.reconnect()
    try:
        sync.push()
        victim = tied_fleet.workers[1]
        os.kill(ray.get(victim.pid.remote()), 9)
        t0 = time.monotonic()
        with pytest.raises((ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
            sync.push()
        assert time.monotonic() - t0 < 60 + 30, "a dead peer must not hang the push"
        tied_fleet.max_restarts = tied_fleet.restarts + 1
        assert tied_fleet.replace_dead() == [1]
        assert tied_fleet.workers[1] is not victim and sync.workers == tied_fleet.workers
        _step_sync_and_compare(ray_local, tied_fleet.workers, group, sync)
    finally:
        tied_fleet.on_restart = None
        sync.close()
        group.shutdown()
        _restore(ray_local, tied_fleet.workers, tied_model_path)


@pytest.mark.slow
def test_killed_learner_rank_leaves_and_a_new_group_reconnects_within_bounds(
    ray_local, tied_fleet, tied_model_path
):
    """Learner rank 0 (the group's rank 0) SIGKILLed after a push, the mirror image of a dead
    rollout worker: the next push is LearnerLost within sync.timeout_s (the receivers, whose
    reload stopped part-way, go back to the base model), the old link's leave
    (every surviving vLLM worker aborts its side) returns within one sync.timeout_s, and a new
    learner group connects a new link and pushes to the same engines."""
    from rrr.core.config import SyncConfig
    from rrr.learner.group import LearnerLost
    from rrr.learner.weight_sync import make_weight_sync

    bound = 30.0
    cfg = SyncConfig(backend="collective", timeout_s=bound)
    group = _learner_group(tied_model_path)
    sync = make_weight_sync(cfg, group, tied_fleet)
    try:
        sync.push()
        os.kill(ray_local.get(group.actors[0].pid.remote()), 9)
        t0 = time.monotonic()
        with pytest.raises(LearnerLost):
            sync.push()
        assert time.monotonic() - t0 < bound + 15, "a dead learner must not hang the push"
        # The receivers' reload stopped part-way: each engine is back on the base model (not
        # half-loaded, whose next forward killed vLLM) and its samples say version 0.
        from rrr.core.generation import GenRequest

        req = GenRequest([1, 42, 77], n=1, temperature=1.0, max_tokens=4)
        for w in tied_fleet.workers:
            assert ray_local.get(w.generate.remote([req], seed=1))[0][0].version == 0
        t0 = time.monotonic()
        sync.close()  # what train()'s cleanup does after a LearnerLost
        left_s = time.monotonic() - t0
        assert left_s < bound + 15, f"leaving took {left_s:.0f} s"
    finally:
        group.shutdown()
    group = _learner_group(tied_model_path)
    t0 = time.monotonic()
    sync = make_weight_sync(cfg, group, tied_fleet)
    try:
        assert time.monotonic() - t0 < 2 * bound
        _step_sync_and_compare(ray_local, tied_fleet.workers, group, sync)
    finally:
        sync.close()
        group.shutdown()
        _restore(ray_local, tied_fleet.workers, tied_model_path)


def _learner_group(model_path: str, **overrides):
    from rrr.core.config import LearnerConfig
    from rrr.learner.group import LearnerGroup

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


def _restore(ray_local, workers, model_path: str) -> None:
    """Shared engines serve the original weights again for the tests after this one."""
    ray_local.get([w.load_weights_file.remote(str(Path(model_path) / "model.safetensors"))
                   for w in workers])  # fmt: skip


def _step_sync_and_compare(ray_local, workers, group, sync) -> None:
    """Sample from every worker, check the learner agrees, take a high-lr step, push, sample
    again: each worker's new log-probs match the learner's (fp32, 2e-3) and have moved."""
    from rrr.core.generation import GenRequest
    from rrr.core.train_batch import build_train_batch

    prompt = [1, 42, 77, 1337, 9, 2024, 31]

    def sample(worker) -> tuple[list[int], list[float]]:
        req = GenRequest(prompt, n=1, temperature=1.0, max_tokens=12)
        s = ray_local.get(worker.generate.remote([req], seed=7))[0][0]
        return s.token_ids, s.logprobs

    def learner_logprobs(ids: list[int]) -> torch.Tensor:
        span = (len(prompt), len(prompt) + len(ids))
        b = build_train_batch([prompt + ids], [span], [[0.0] * len(ids)], [0.0], 1)
        per_rank = ray_local.get([a.logprobs.remote(b) for a in group.actors])  # ZeRO-3: all
        return per_rank[0][0][b.mask[0]]

    ids0, vllm0 = sample(workers[0])
    before = learner_logprobs(ids0)
    assert torch.allclose(torch.tensor(vllm0), before, atol=2e-3)
    span = (len(prompt), len(prompt) + len(ids0))
    group.step(build_train_batch([prompt + ids0] * 2, [span] * 2, [vllm0] * 2, [1.0, 0.0], 2))
    marks = _worker_logs(ray_local)
    timings = sync.push()
    assert timings.bytes > 0 and timings.total_s > 0
    time.sleep(1)  # worker stderr reaches its file asynchronously
    warned = _reload_warnings(ray_local, marks)
    assert not warned, f"vLLM warned on reload (actors/worker_extension.py): {warned[:3]}"
    for worker in workers:
        ids1, vllm1 = sample(worker)
        after = learner_logprobs(ids1)
        assert torch.allclose(torch.tensor(vllm1), after, atol=2e-3), (vllm1, after)
    assert not torch.allclose(learner_logprobs(ids0), before, atol=1e-2)


def _worker_logs(ray_local) -> dict[Path, int]:
    """This Ray session's worker stderr files and their current sizes."""
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    return {path: path.stat().st_size for path in logs.glob("worker-*.err")}


def _reload_warnings(ray_local, since: dict[Path, int]) -> list[str]:
    """vLLM's "<Layer>: Failed to load weights" lines written to the session's worker logs
    (rollout workers' stderr, engine cores included) after `since` was taken. A tied head
    printed one on every sync when it silently kept its old weights."""
    found = []
    for path in _worker_logs(ray_local):
        with open(path, errors="replace") as f:
            f.seek(since.get(path, 0))
            found += [line for line in f.read().splitlines() if "Failed to load weights" in line]
    return found


def test_expected_reload_warnings_are_dropped_and_others_kept() -> None:
    """The filter drops exactly the RotaryEmbedding line on vLLM's own reload logger; a head
    that did not load (the stale-tied-head bug) still shows."""
    import logging

    from rrr.actors.worker_extension import RELOAD_LOGGER, RELOAD_WARNING, ExpectedReloadWarnings

    def record(layer: str) -> logging.LogRecord:
        return logging.LogRecord(RELOAD_LOGGER, logging.WARNING, "", 0, RELOAD_WARNING,
                                 (layer,), None)  # fmt: skip

    quiet = ExpectedReloadWarnings()
    assert not quiet.filter(record("RotaryEmbedding"))
    assert quiet.filter(record("ParallelLMHead"))
    assert quiet.filter(record("LlamaDecoderLayer"))
    other = logging.LogRecord(RELOAD_LOGGER, logging.WARNING, "", 0, "something else", (), None)
    assert quiet.filter(other)


def test_aliases_follow_the_weight_they_share() -> None:
    from rrr.actors.worker_extension import with_aliases

    weights = [("model.embed_tokens.weight", 1), ("model.norm.weight", 2)]
    got = list(with_aliases(iter(weights), {"lm_head.weight": "model.embed_tokens.weight"}))
    assert got == [("model.embed_tokens.weight", 1), ("lm_head.weight", 1),
                   ("model.norm.weight", 2)]  # fmt: skip
    # A state dict that holds the head itself: loaded as it is, once.
    weights = [("model.embed_tokens.weight", 1), ("lm_head.weight", 3)]
    got = list(with_aliases(iter(weights), {"lm_head.weight": "model.embed_tokens.weight"}))
    assert got == [("model.embed_tokens.weight", 1), ("lm_head.weight", 1)]


def test_leaving_a_sync_group_aborts_it(monkeypatch) -> None:
    """leave_group aborts the group and never calls the blocking `shutdown()` (on NCCL a
    `ncclCommDestroy` that a dead peer can hang, rrr/core/weights/group.py); None is a no-op."""
    import torch.distributed as dist

    from rrr.core.weights.group import init_group, leave_group
    from tests.helpers import free_port

    calls: list[str] = []
    for name in ("abort", "shutdown"):
        real = getattr(dist.ProcessGroup, name)
        monkeypatch.setattr(dist.ProcessGroup, name,
                            lambda pg, n=name, f=real: (calls.append(n), f(pg))[1])  # fmt: skip
    group = init_group("127.0.0.1", free_port(), 0, 1, "gloo", 30.0)
    t = torch.arange(4.0)
    torch.distributed.broadcast(t, group_src=0, group=group)  # a working group
    leave_group(group)
    leave_group(None)
    assert calls == ["abort"]
