"""A pool of CPU Ray actors that score responses with the task verifiers.

Verifiers are pure functions already bounded in time (verifiers/), but model output is hostile
input and a bug or a pathological case must never stall a training step: every batch has a
deadline, and items of a batch that crashed or ran late come back as verdicts with error
`verifier_error` (not correct, but not judged either), and are counted. Episodes treat such a
verdict as "no reward known" and the learner leaves the sample out (rrr/core/episodes.py); an eval
counts it as an error category of its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any

import ray

from rrr.core.actor_group import ActorGroup
from rrr.verifiers import Verdict
from rrr.verifiers.verdict import VERIFIER_ERROR

log = logging.getLogger(__name__)

__all__ = ["VERIFIER_ERROR", "LocalVerifier", "VerifierActor", "VerifierPool", "verify_items"]


def verify_items(task: Any, items: list[tuple[dict[str, Any], str]]) -> list[Verdict]:
    out = []
    for row, response in items:
        try:
            out.append(task.verify(row, response))
        except Exception as exc:  # a verifier bug scores the item, it never kills the batch
            out.append(Verdict(False, VERIFIER_ERROR, detail=f"{type(exc).__name__}: {exc}"))
    return out


@ray.remote(num_cpus=0.5, max_restarts=-1)
class VerifierActor:
    """Holds one task object (pure Python, shipped pickled); verifies (row, response) pairs."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def verify(self, items: list[tuple[dict[str, Any], str]]) -> list[Verdict]:
        return verify_items(self.task, items)

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        """The actor's process id: fault drills kill it from outside (SIGKILL)."""
        return os.getpid()


class VerifierPool:
    """Round-robins batches over N actors; satisfies rrr.core.generation.Verifier.

    A dead verifier is restarted by Ray itself (the actor class's max_restarts=-1: it holds no
    state but its task), so the group's own restart budget is not used here."""

    def __init__(
        self,
        task: Any,
        *,
        num_workers: int = 2,
        timeout_s: float = 10.0,
        batch_size: int = 256,
        num_cpus: float = 0.5,
    ) -> None:
        self.group = ActorGroup(
            VerifierActor, num_workers, name="verifier", args=(task,),
            options={"num_cpus": num_cpus},
        )  # fmt: skip
        self.timeout_s, self.batch_size = timeout_s, batch_size
        self.counters: Counter[str] = Counter()

    def verify(self, items: list[tuple[dict[str, Any], str]]) -> list[Verdict]:
        if not items:
            return []
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        refs = [self.actors[i % len(self.actors)].verify.remote(b) for i, b in enumerate(batches)]
        # A batch's budget scales with its length: the per-item time-out, but paid in parallel.
        deadline = time.monotonic() + self.timeout_s * max(1, -(-len(batches) // len(self.actors)))
        results: list[Verdict] = []
        for i, (ref, batch) in enumerate(zip(refs, batches)):
            results.extend(self._collect(ref, batch, i, deadline))
        self.counters["verified"] += len(items)
        self.counters[VERIFIER_ERROR] += sum(v.error == VERIFIER_ERROR for v in results)
        return results

    def _collect(
        self, ref: Any, batch: list[tuple[dict[str, Any], str]], index: int, deadline: float
    ) -> list[Verdict]:
        """Wait for one batch. A dead or restarting actor's batch is retried once on another
        actor; a batch past its deadline is scored `verifier_error` (the input itself may be
        what hangs) and its actor restarted, so it cannot hold later batches."""
        for attempt in range(2):
            try:
                return ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                log.warning("verifier batch of %d timed out; marked %s", len(batch), VERIFIER_ERROR)
                ray.kill(self.actors[index % len(self.actors)], no_restart=False)
                break
            except ray.exceptions.RayError as exc:
                log.warning("verifier batch of %d failed (%s)", len(batch), type(exc).__name__)
                if attempt == 0 and len(self.actors) > 1:
                    self.counters["retried"] += len(batch)
                    index += 1
                    ref = self.actors[index % len(self.actors)].verify.remote(batch)
                    deadline = max(deadline, time.monotonic() + self.timeout_s)
        return [Verdict(False, VERIFIER_ERROR, detail="verifier actor failed") for _ in batch]

    @property
    def actors(self) -> list[Any]:
        return self.group.actors

    def shutdown(self) -> None:
        self.group.kill()


class LocalVerifier:
    """In-process verification (no Ray): for scripts, tests of pure logic and benchmarks."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def verify(self, items: list[tuple[dict[str, Any], str]]) -> list[Verdict]:
        return verify_items(self.task, items)
