"""A resumable, seeded order over a finite list: epoch-wise permutations with a cursor.

The trainer draws `failures_per_step` items per step; the cursor (epoch, position) goes into
every checkpoint, so a resumed run continues with exactly the items it would have drawn.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Cursor:
    epoch: int = 0
    position: int = 0
    consumed: int = 0  # items handed out over the whole run


class EpochSampler(Generic[T]):
    def __init__(self, items: list[T], seed: int, cursor: Cursor | None = None) -> None:
        if not items:
            raise ValueError("nothing to sample from: the dataset is empty")
        self.items, self.seed = items, seed
        self.cursor = cursor or Cursor()
        self._order = self._permutation(self.cursor.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.items)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)  # str seeds are stable across runs
        return order

    def take(self, n: int) -> list[T]:
        out = []
        while len(out) < n:
            if self.cursor.position >= len(self._order):
                self.cursor.epoch += 1
                self.cursor.position = 0
                self._order = self._permutation(self.cursor.epoch)
            out.append(self.items[self._order[self.cursor.position]])
            self.cursor.position += 1
        self.cursor.consumed += n
        return out

    def state(self) -> dict[str, Any]:
        return asdict(self.cursor)

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a `state()` (a draw that was not used is drawn again)."""
        self.cursor = Cursor(**state)
        self._order = self._permutation(self.cursor.epoch)

    @staticmethod
    def cursor_from(state: dict[str, Any] | None) -> Cursor | None:
        return Cursor(**state) if state else None
