"""`ActorGroup`: N Ray actors of one class, one per slot. The one home of what the learner
group, the rollout fleet and the verifier pool all do with their actors: spawn them (each in its
own bundle of a placement group when one is given), wait until they are up, fan a call out to
all of them (one Ray round-trip each), gather the results with the first death mapped to the
owner's typed error, find the dead ones and replace them within a restart budget.

What each owner does with its actors (shard a batch, re-send a lost shard, stamp weights) stays
with the owner; only the bookkeeping of the actors themselves lives here. Calls are made through
the actor handles (`group.each(lambda a: a.step.remote(...))`): nothing is called by a
method-name string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ray

from rrr.core.actor_calls import ACTOR_GONE, blame_a_death, collect_later, first_line, wait_all

log = logging.getLogger(__name__)


class ActorGroup:
    """N actors of `actor_cls` (a `@ray.remote` class), slot i built by `actor_cls.options(
    **options).remote(*args, **kwargs)` in bundle `bundle_offset + i` of `placement_group`.

    Errors are the owner's types, so a user reads "LearnerLost: learner rank 1 died during a
    step", not a Ray traceback: `error` for an actor that died at work, a gather past its time
    and a restart budget used up; `start_error` (default `error`) for one that failed to start.
    `max_restarts` bounds `replace` over the group's life (0: a death is final); `restarts_key`
    is the config key that sets it, named in the error.
    """

    def __init__(
        self,
        actor_cls: Any,
        size: int,
        *,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        placement_group: Any = None,
        bundle_offset: int = 0,
        error: type[BaseException] = RuntimeError,
        start_error: type[BaseException] | None = None,
        max_restarts: int = 0,
        restarts_key: str = "max_restarts",
        adopted: list[Any] | None = None,
    ) -> None:
        """`adopted`: actors started elsewhere, held instead of spawning `size` new ones (see
        `adopt`)."""
        if size < 1:
            raise ValueError(f"an actor group needs at least one actor, got {size}")
        self.name = name
        self._cls, self._args, self._kwargs = actor_cls, args, dict(kwargs or {})
        self._options = dict(options or {})
        self.placement_group, self.bundle_offset = placement_group, bundle_offset
        self.error, self.start_error = error, start_error or error
        self.max_restarts, self.restarts_key, self.restarts = max_restarts, restarts_key, 0
        self.actors: list[Any] = (
            list(adopted) if adopted is not None else [self.spawn(i) for i in range(size)]
        )

    @classmethod
    def adopt(
        cls, actors: list[Any], *, name: str, error: type[BaseException] = RuntimeError
    ) -> ActorGroup:
        """A group over actors started elsewhere (a test's session fixture, a tool): it calls
        and gathers like any group, but has no recipe to start a replacement (replace raises
        `error`, its restart budget being 0)."""
        return cls(None, len(actors), name=name, error=error, adopted=actors)

    def __len__(self) -> int:
        return len(self.actors)

    def spawn(self, index: int) -> Any:
        """A new actor for slot `index` (not stored: `replace` does that)."""
        options = dict(self._options)
        if self.placement_group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=self.placement_group,
                placement_group_bundle_index=self.bundle_offset + index,
            )
        return self._cls.options(**options).remote(*self._args, **self._kwargs)

    # ------------------------------------------------------------------ calls

    def each(self, call: Callable[[Any], Any]) -> list[Any]:
        """`call(actor)` for every actor: the refs, in slot order (one round-trip each)."""
        return [call(a) for a in self.actors]

    def _gone(self, index: int, exc: BaseException, what: str) -> BaseException:
        return self.error(f"{self.name} {index} died during {what}: {first_line(exc)}")

    def gather(self, refs: list[Any], what: str, *, timeout_s: float | None = None) -> list[Any]:
        """The results in slot order; the first actor found dead raises the owner's error at
        once (rrr/core/actor_calls.py says why that cannot wait for the others)."""

        def gone(index: int, exc: BaseException) -> BaseException:
            return self._gone(index, exc, what)

        def too_slow(pending: int) -> BaseException:
            return self.error(
                f"{pending} {self.name}(s) did not answer {what} within {timeout_s:.0f}s"
            )

        return wait_all(refs, on_gone=gone, timeout_s=timeout_s, on_timeout=too_slow)

    def raise_if_dead(self, refs: list[Any], what: str) -> None:
        """Calls of this group whose peers (in one collective) failed: the owner's error if one
        of these actors is gone, as the likelier cause (waiting up to DEATH_REPORT_S for Ray to
        report it); nothing if all are alive. Every call is collected, now or later."""
        pending = list(refs)
        dead = blame_a_death(list(refs), pending)
        collect_later(pending)
        if dead is not None:
            index, exc = dead
            raise self._gone(index, exc, what) from exc

    def run(self, call: Callable[[Any], Any], what: str, *, timeout_s: float | None = None) -> list:
        """`gather(each(call))`: one call on every actor, every result."""
        return self.gather(self.each(call), what, timeout_s=timeout_s)

    # ------------------------------------------------------------------ life and death

    def wait_ready(self, indices: list[int] | None = None, *, timeout_s: float) -> None:
        """The actors of `indices` (all by default) answer `ping`, or `start_error` for the
        first that died (with its constructor's error) or for those still silent at
        `timeout_s`: never a hang. Those actors are killed on failure, so a failed start holds
        no resources."""
        indices = list(range(len(self.actors))) if indices is None else indices
        actors = [self.actors[i] for i in indices]

        def gone(k: int, exc: BaseException) -> BaseException:
            cause = getattr(exc, "cause", None) or exc  # ActorDiedError carries the init error
            return self.start_error(f"{self.name} {indices[k]} failed to start: {cause}")

        def too_slow(pending: int) -> BaseException:
            return self.start_error(
                f"{pending} {self.name}(s) not ready after {timeout_s:.0f}s (resources busy?)"
            )

        try:
            wait_all([a.ping.remote() for a in actors], on_gone=gone, timeout_s=timeout_s,
                     on_timeout=too_slow)  # fmt: skip
        except BaseException:
            for a in actors:
                ray.kill(a)
            raise

    def dead(self) -> list[int]:
        """The slots whose actor no longer answers `ping`."""
        out = []
        for i, a in enumerate(self.actors):
            try:
                ray.get(a.ping.remote())
            except ACTOR_GONE:
                out.append(i)
        return out

    def replace(self, indices: list[int], *, timeout_s: float) -> None:
        """Kill the actors of `indices` (a hung or half-dead actor must not hold its resources)
        and start fresh ones in their slots, within `max_restarts`; the owner's error, naming
        the budget, when it is used up."""
        if not indices:
            return
        if self.restarts + len(indices) > self.max_restarts:
            raise self.error(
                f"{self.name}(s) {indices} died and {self.restarts} of "
                f"{self.restarts_key}={self.max_restarts} restarts are used up"
            )
        for i in indices:
            ray.kill(self.actors[i])
            self.actors[i] = self.spawn(i)
        self.wait_ready(indices, timeout_s=timeout_s)
        self.restarts += len(indices)
        log.warning("restarted %s(s) %s (%d restarts so far)", self.name, indices, self.restarts)

    def kill(self) -> None:
        """Kill every actor (idempotent)."""
        for a in self.actors:
            ray.kill(a)
        self.actors = []
