"""Run by tests/test_two_node.py in its own process: a simulated two-node Ray cluster
(`ray.cluster_utils.Cluster`) with the learner ranks on node A and a rollout worker on node B,
then both sync backends across the node boundary: the collective one (a gloo group over TCP)
and the object store (transport "object": the bytes go through Ray's object transfer). Prints
one JSON line of what it saw; exits non-zero on any mismatch."""

from __future__ import annotations

import json
import socket
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_args(cpus: int, tag: str) -> dict:
    # Fixed default ports may be held by another Ray on this machine (the test session's).
    return {
        "num_cpus": cpus,
        "resources": {tag: 10},
        "object_store_memory": 512 << 20,
        "include_dashboard": False,
        "dashboard_agent_listen_port": free_port(),
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
    }


def main(model_path: str) -> int:
    import ray
    import torch
    from ray.cluster_utils import Cluster
    from ray.util.placement_group import placement_group

    from rrr.actors.rollout_worker import RolloutWorker
    from rrr.core.config import LearnerConfig, SyncConfig
    from rrr.core.generation import GenRequest
    from rrr.core.train_batch import build_train_batch
    from rrr.learner.group import LearnerGroup
    from rrr.learner.weight_sync import CollectiveSync, ObjectStoreSync, make_weight_sync

    head = {**node_args(3, "node_a"), "gcs_server_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    cluster.add_node(**node_args(3, "node_b"))
    ray.init(address=cluster.address, log_to_driver=False)
    seen: dict = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
    pg = placement_group([{"CPU": 1, "node_a": 1}] * 2, strategy="PACK")
    ray.get(pg.ready(), timeout=120)
    cfg = LearnerConfig(backend="deepspeed", zero_stage=2, num_learners=2, lr=3e-2,
                        lr_scheduler="constant", warmup_ratio=0.0, max_steps=5,
                        gradient_checkpointing=False, micro_batch_size=2, kl_coef=0.0)  # fmt: skip
    group = LearnerGroup(cfg, model_path, placement_group=pg)
    worker = RolloutWorker.options(num_cpus=1, resources={"node_b": 1}).remote(
        model_path=model_path,
        max_model_len=1024,
        kv_cache_gib=0.25,
        seed=0,
        in_process=True,  # as every test's engine (tests/helpers.py, IN_PROCESS)
    )
    learner_node = ray.get(group.actors[0].sync_info.remote())["node"]
    worker_node = ray.get(worker.sync_info.remote())["node"]
    seen["cross_node"] = learner_node != worker_node
    prompt = [1, 42, 77, 1337, 9, 2024, 31]

    def sample() -> tuple[list[int], list[float]]:
        req = GenRequest(prompt, n=1, temperature=1.0, max_tokens=12)
        s = ray.get(worker.generate.remote([req], seed=3))[0][0]
        return s.token_ids, s.logprobs

    def max_gap() -> float:
        ids, vllm = sample()
        span = (len(prompt), len(prompt) + len(ids))
        b = build_train_batch([prompt + ids], [span], [[0.0] * len(ids)], [0.0], 1)
        mine = ray.get([a.logprobs.remote(b) for a in group.actors])[0][0][b.mask[0]]
        return float((torch.tensor(vllm) - mine).abs().max())

    ids, vllm = sample()
    span = (len(prompt), len(prompt) + len(ids))
    for backend, expect in (("auto", CollectiveSync), ("object_store", ObjectStoreSync)):
        group.step(build_train_batch([prompt + ids] * 2, [span] * 2, [vllm] * 2, [1.0, 0.0], 2))
        sync = make_weight_sync(SyncConfig(backend=backend, bucket_mb=1), group, [worker])
        assert isinstance(sync, expect), sync
        timings = sync.push()
        seen[backend] = {"transport": timings.transport, "bytes": timings.bytes,
                         "max_logprob_gap": max_gap()}  # fmt: skip
        sync.close()
    group.shutdown()
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(seen))
    ok = seen["nodes"] == 2 and seen["cross_node"] and seen["object_store"]["transport"] == "object"
    ok = ok and all(seen[b]["max_logprob_gap"] < 2e-3 for b in ("auto", "object_store"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
