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
from concurrent.futures import Future
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
    - An actor's own error is checked against the others first (`blame_a_death`): when a peer
      died, the survivors' collectives fail with it ("Connection closed by peer"), often before
      Ray has reported the death, and the death is the cause to report.
    - With `timeout_s`, refs still pending when it runs out raise `on_timeout(pending)`
      (a TimeoutError without it).
    - On any raise, the calls not collected yet are collected
      when they complete (`collect_later`): nobody else will, and Ray prints an uncollected
      error as a page of "Unhandled error" traceback long after the run has dealt with it.
    """
    refs = list(refs)
    pending = list(refs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
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
            except ray.exceptions.RayTaskError as exc:
                if on_gone is None:
                    raise
                dead = blame_a_death(refs, pending)
                if dead is None:
                    raise
                index, death = dead
                raise on_gone(index, death) from exc
    except BaseException:
        collect_later(pending)
        raise
    return ray.get(refs)


# How long an actor's own error waits for a peer's death to be reported before it is taken as
# the cause. Ray reports a SIGKILLed actor to its caller within about a second here (a gloo
# survivor fails in milliseconds); this leaves room for a loaded machine, and is spent only
# when a call has already failed.
DEATH_REPORT_S = 5.0


def blame_a_death(refs: list[Any], pending: list[Any]) -> tuple[int, BaseException] | None:
    """The index and Ray error of a call in `refs` whose actor is gone, waiting up to
    DEATH_REPORT_S for the `pending` ones; None if every actor is alive. Collects what it
    waits for (removed from `pending`)."""
    if pending:
        _, still = ray.wait(pending, num_returns=len(pending), timeout=DEATH_REPORT_S)
        pending[:] = still
    for i, ref in enumerate(refs):
        if ref in pending:
            continue
        try:
            ray.get(ref, timeout=0)
        except ACTOR_GONE as exc:
            return i, exc
        except Exception:  # an actor's own error: it is alive, look further
            continue
    return None


def collect_later(refs: list[Any]) -> None:
    """Collect `refs` (results or errors) when they complete, discarding them: the calls of a
    group that already failed, which no caller will `ray.get` again. Through Ray's completion
    callback (`ObjectRef.future`): no thread, no wait, nothing that could touch Ray after it
    shut down (a callback that never fires keeps nothing)."""
    for ref in refs:
        ref.future().add_done_callback(_read_and_drop)


def _read_and_drop(future: Future) -> None:
    future.exception()  # reading it is what tells Ray the error was handled
