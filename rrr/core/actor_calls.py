"""Waiting for calls on a set of Ray actors: the one home of "this actor is gone" and of the
bounded, fail-fast wait that the learner group, the rollout fleet and the weight sync make.

Why fail fast: the ranks of a group often sit in one collective. When one dies, the others
block until gloo/NCCL notices (half an hour), so a plain `ray.get(refs)` in rank order would
wait on a survivor and never see the death. `wait_all` takes results as they come and raises
at the first actor that is gone, mapped by the caller to its own typed error (LearnerLost,
EngineStartError, ...), and turns a peer that never answers into the caller's time-out error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import ray

# Ray errors that mean "this actor is gone" (killed, crashed, its node lost), as opposed to
# an exception raised by the actor's own code (a RayTaskError, which propagates as it is).
ACTOR_GONE: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.ActorUnavailableError,
)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error, cut to `limit` characters (Ray's errors run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def wait_all(
    refs: Sequence[Any],
    *,
    on_gone: Callable[[int, BaseException], BaseException] | None = None,
    timeout_s: float | None = None,
    on_timeout: Callable[[int], BaseException] | None = None,
) -> list[Any]:
    """The results of `refs`, in their order.

    - The first ref whose actor is gone raises at once: `on_gone(index, ray_error)` (chained
      to the Ray error), or the Ray error itself when no `on_gone` is given.
    - With `timeout_s`, refs still pending when it runs out raise `on_timeout(pending)`
      (a TimeoutError without it).
    """
    refs = list(refs)
    pending = list(refs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, pending = ray.wait(pending, num_returns=1, timeout=left)
        if not ready:
            if on_timeout is not None:
                raise on_timeout(len(pending))
            raise TimeoutError(f"{len(pending)} of {len(refs)} calls did not answer in time")
        try:
            ray.get(ready[0])
        except ACTOR_GONE as exc:
            if on_gone is None:
                raise
            raise on_gone(refs.index(ready[0]), exc) from exc
    return ray.get(refs)
