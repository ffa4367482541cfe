"""The resumable sampler: a restored cursor continues with exactly the same items."""

from __future__ import annotations

import pytest

from rrr.core.data_cursor import EpochSampler


def test_epochs_cover_everything_once_each_and_resume_exactly():
    items = list(range(10))
    a = EpochSampler(items, seed=3)
    first = a.take(7) + a.take(7)  # crosses an epoch boundary
    assert sorted(first[:10]) == items  # an epoch is a permutation
    state = a.state()
    expected = a.take(9)
    b = EpochSampler(items, seed=3, cursor=EpochSampler.cursor_from(state))
    assert b.take(9) == expected
    assert b.state() == a.state() and b.cursor.consumed == 23


def test_seed_changes_order_and_empty_is_refused():
    assert EpochSampler(list(range(20)), 0).take(20) != EpochSampler(list(range(20)), 1).take(20)
    with pytest.raises(ValueError, match="empty"):
        EpochSampler([], 0)
