"""Drill: rollout workers killed in the middle of a generate call, by `ray.kill` and by SIGKILL
of the actor's process. The fleet must replace the worker, give the new one the current
weights, send it the lost shard again, and answer every request exactly once: with seeded
sampling, the answer equals the one an uninterrupted call gives."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rrr.actors.rollout_worker import RolloutFleet, RolloutWorkerLost
from rrr.core.config import load_config
from rrr.core.generation import GenRequest
from tests.helpers import actors_by_state, same_samples

SEED = 1234
# Long enough (a tiny random model rarely stops early) that a kill after 1 s lands mid-call.
REQUESTS = [GenRequest(prompt_ids=[1, 2, 3, 10 + i], n=2, max_tokens=256) for i in range(16)]


@pytest.fixture(scope="module")
def fleet(ray_local, tiny_model_path):
    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_path}", "model.max_model_len=1024",
        "rollout.num_workers=2", "rollout.kv_cache_gib=0.25", "rollout.max_restarts=2",
        "rollout.in_process_engine=true",  # exact seeded repeats (docs/reliability.md)
    ])  # fmt: skip
    fleet = RolloutFleet.start(cfg, tiny_model_path)
    yield fleet
    fleet.shutdown()


def _perturbed_weights(model_path: str) -> dict:
    """The "current policy": the base weights moved, so a worker left on the base weights
    samples differently."""
    import torch
    from safetensors.torch import load_file

    state = load_file(os.path.join(model_path, "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in state.items()}


def _generate_while(fleet: RolloutFleet, kill) -> list:
    """Run one seeded generate call and kill a worker 1 s into it."""
    out: dict[str, object] = {}

    def call() -> None:
        try:
            out["result"] = fleet.generate(REQUESTS)
        except Exception as exc:  # re-raised in the test's thread
            out["error"] = exc

    fleet.begin_step(SEED)
    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive(), "generate finished before the kill: make the requests longer"
    kill()
    thread.join(timeout=600)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"]


def test_killed_workers_are_replaced_resynced_and_their_shard_resent(fleet, tiny_model_path):
    import ray

    fleet.begin_step(SEED)
    base = fleet.generate(REQUESTS)
    policy = _perturbed_weights(tiny_model_path)
    fleet.load_state_dict(policy)
    resynced: list[int] = []

    def resync(indices: list[int]) -> None:  # what the trainer wires to the weight sync
        resynced.extend(indices)
        ray.get([fleet.workers[i].load_state_dict.remote(policy) for i in indices])

    fleet.on_restart = resync
    fleet.begin_step(SEED)
    reference = fleet.generate(REQUESTS)
    assert not same_samples(base, reference), "the perturbed weights must change the samples"
    fleet.begin_step(SEED)
    assert same_samples(fleet.generate(REQUESTS), reference), "seeded sampling must repeat"

    # 1. ray.kill on the actor.
    victim = fleet.workers[0]
    got = _generate_while(fleet, lambda: ray.kill(victim))
    assert fleet.restarts == 1 and resynced == [0]
    assert fleet.workers[0] is not victim
    assert len(got) == len(REQUESTS) and all(len(g) == 2 for g in got)
    assert same_samples(got, reference), "the re-sent shard must sample as the lost one would"

    # 2. SIGKILL of the actor's process (what the OOM killer or a pre-emption does).
    pid = ray.get(fleet.workers[1].pid.remote())
    got = _generate_while(fleet, lambda: os.kill(pid, signal.SIGKILL))
    assert fleet.restarts == 2 and resynced == [0, 1]
    assert same_samples(got, reference)

    # The dead actors are gone and exactly two workers are alive (plus the session's one).
    alive = actors_by_state("RolloutWorker").get("ALIVE", [])
    assert pid not in alive
    assert set(ray.get([w.pid.remote() for w in fleet.workers])) <= set(alive)

    # 3. Restarts used up: the next death stops the run with a message that says so.
    with pytest.raises(RolloutWorkerLost, match=r"rollout.max_restarts=2"):
        _generate_while(fleet, lambda: ray.kill(fleet.workers[0]))
