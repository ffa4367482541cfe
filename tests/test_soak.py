"""Soak: the episode engine and the verifier pool under sustained load on the CPU stack.

Round after round of reflect -> retry -> verify on the session's real vLLM worker (tiny model)
and a real verifier pool, for RRR_SOAK_S seconds (default 60; set it to hours before a release):
every failure submitted comes back as exactly G episodes, every round; the driver's and the
actors' memory stays flat after a warm-up round; no actor is leaked.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from typing import Any

import psutil
import ray

from rrr.actors.rollout_worker import RolloutFleet
from rrr.actors.verifier_pool import VERIFIER_ERROR, VerifierPool
from rrr.core.chat import ChatRenderer
from rrr.core.config import EpisodeConfig
from rrr.core.episodes import CONTEXT_OVERFLOW, EpisodeEngine, Failure
from rrr.core.tasks import get_task
from tests.helpers import actors_by_state

SOAK_S = float(os.environ.get("RRR_SOAK_S", "60"))
FAILURES_PER_ROUND = 4
G = 4
# Growth allowed between the end of the warm-up round and the end of the soak. Steady state
# should be flat; the slack absorbs allocator noise, not a leak proportional to rounds.
RSS_REL, RSS_ABS = 0.10, 50 * 2**20
ACTOR_CLASSES = ("RolloutWorker", "VerifierActor")


def rss(pids: list[int], *, children: bool = True) -> int:
    """Resident memory of processes, with their children (vLLM may run its engine core in one)
    unless told not to: the driver's children are the local Ray cluster itself."""
    total = 0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *(proc.children(recursive=True) if children else [])]:
            with contextlib.suppress(psutil.NoSuchProcess):  # a helper that just ended
                total += p.memory_info().rss
    return total


def alive_actors() -> dict[str, int]:
    return {name: len(actors_by_state(name).get("ALIVE", [])) for name in ACTOR_CLASSES}


def wait_for_alive(expected: dict[str, int], timeout_s: float = 20) -> dict[str, int]:
    """ray.kill is asynchronous: give the GCS a moment to mark killed actors DEAD."""
    deadline = time.monotonic() + timeout_s
    while (now := alive_actors()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def check_round(failures: list[Failure], batch: Any, prompts: list[list[int]]) -> None:
    """Exactly G episodes per failure, none twice, none missing, each on its own failure."""
    keys = Counter((e.failure_index, e.group_index) for e in batch.episodes)
    expected = {(f, g) for f in range(len(failures)) for g in range(G)}
    assert set(keys) == expected, sorted(set(keys) ^ expected)
    assert all(count == 1 for count in keys.values()), [k for k, c in keys.items() if c > 1]
    assert len(batch.episodes) == len(failures) * G
    assert CONTEXT_OVERFLOW not in batch.counters
    for e in batch.episodes:
        # The episode's context is its own failure's prompt and attempt, not a neighbour's.
        prefix = prompts[e.failure_index] + failures[e.failure_index].attempt_ids
        assert e.tokens[: len(prefix)] == prefix
        assert len(e.verdicts) == 1 and len(e.retry_texts) == 1
        assert e.span[1] > e.span[0] and len(e.logprobs) == e.span[1] - e.span[0]


def test_soak_episodes_memory_and_actors(ray_local, rollout_worker, tiny_model_path, sample_data):
    from transformers import AutoTokenizer

    task = get_task("countdown", "qwen")
    lines = (sample_data / "countdown_sample.jsonl").read_text().splitlines()
    rows = [task.validate_row(json.loads(line)) for line in lines]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    renderer = ChatRenderer(tokenizer)
    attempt = "The answer is \\boxed{1+2}"
    attempt_ids = [*tokenizer.encode(attempt, add_special_tokens=False), tokenizer.eos_token_id]
    cfg = EpisodeConfig(num_reflections=G, max_reflection_tokens=32, max_retry_tokens=24)

    actors_at_start = alive_actors()
    pool = VerifierPool(task, num_workers=2, timeout_s=10, batch_size=8)
    engine = EpisodeEngine(task, renderer, RolloutFleet([rollout_worker]), pool, cfg, 2048)
    me = os.getpid()
    worker_pid = ray.get(rollout_worker.pid.remote())
    verifier_pids = ray.get([a.pid.remote() for a in pool.actors])

    def one_round(index: int) -> int:
        # A sliding window over the 300 sample rows: new prompts every round, some reused.
        start = (index * FAILURES_PER_ROUND) % (len(rows) - FAILURES_PER_ROUND)
        chosen = rows[start : start + FAILURES_PER_ROUND]
        failures = [Failure(row, list(attempt_ids), attempt) for row in chosen]
        prompts = [renderer.prompt_ids(task.first_messages(row)) for row in chosen]
        verified = pool.counters["verified"]
        batch = engine.run(failures)
        check_round(failures, batch, prompts)
        # One retry per episode went through the pool, and came back with a real verdict.
        assert pool.counters["verified"] - verified == len(batch.episodes)
        assert pool.counters[VERIFIER_ERROR] == 0 and pool.counters["retried"] == 0
        return len(batch.episodes)

    try:
        episodes = one_round(0)  # warm-up: vLLM's and the allocator's caches fill here
        rss_start = {"driver": rss([me], children=False), "rollout": rss([worker_pid]),
                     "verifiers": rss(verifier_pids)}  # fmt: skip
        actors_running = alive_actors()
        rounds, t0 = 1, time.monotonic()
        while time.monotonic() - t0 < SOAK_S:
            episodes += one_round(rounds)
            rounds += 1
        elapsed = time.monotonic() - t0
        rss_end = {"driver": rss([me], children=False), "rollout": rss([worker_pid]),
                   "verifiers": rss(verifier_pids)}  # fmt: skip
        actors_end_of_soak = alive_actors()
    finally:
        pool.shutdown()
    actors_after = wait_for_alive(actors_at_start)

    mib = {k: (rss_start[k] / 2**20, rss_end[k] / 2**20) for k in rss_start}
    print(
        f"\nsoak: {rounds} rounds in {elapsed:.0f}s (+1 warm-up), {episodes} episodes, "
        + ", ".join(f"RSS {k} {a:.0f}->{b:.0f} MiB" for k, (a, b) in mib.items())
        + f", actors alive start/soak/end {actors_at_start}/{actors_end_of_soak}/{actors_after}"
    )
    assert rounds >= 3, "too few rounds to call it a soak"
    for name in rss_start:
        bound = rss_start[name] * (1 + RSS_REL) + RSS_ABS
        assert rss_end[name] <= bound, (name, mib[name], f"bound {bound / 2**20:.0f} MiB")
    # The pool's actors are the only ones the soak adds, none appear while it runs, and none
    # outlive its shutdown.
    assert actors_end_of_soak == actors_running
    assert actors_running["VerifierActor"] == actors_at_start["VerifierActor"] + 2
    assert actors_after == actors_at_start
