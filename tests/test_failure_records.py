"""Which sampled first attempts become failure-dataset records (paper 4.3), and the online
draw that keeps a step fed with failures: pure logic, real task objects."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from rrr.core.data_cursor import EpochSampler
from rrr.core.episodes import Failure, OnlineFirstAttempts
from rrr.core.failure_data import failure_records
from rrr.core.generation import Sample
from rrr.core.tasks import get_task
from rrr.driver.draw import MAX_ONLINE_DRAWS, NoFailuresLeft, next_failures
from rrr.verifiers import Verdict
from rrr.verifiers.verdict import VERIFIER_ERROR

TASK = get_task("countdown", "qwen")
ROWS = [{"nums": [1, 2], "target": 3}, {"nums": [2, 2], "target": 4}, {"nums": [3, 1], "target": 4}]


def _s(text: str) -> Sample:
    return Sample([1, 2], [-0.1, -0.2], text, "stop")


OK, WRONG = Verdict(True, None), Verdict(False, "missed_target")
CRASH = Verdict(False, VERIFIER_ERROR)


@pytest.mark.parametrize(("keep", "want"), [("any", [0, 1]), ("all", [1])])
def test_records_keep_failed_queries_and_never_unjudged_ones(keep: str, want: list[int]) -> None:
    samples = [[_s("a"), _s("b")], [_s("c"), _s("d")], [_s("e"), _s("f")], []]
    verdicts = [[OK, WRONG], [WRONG, CRASH], [CRASH, CRASH], []]
    rows = [*ROWS, {"nums": [9, 9], "target": 18}]  # the last: prompt too long, no samples
    records = failure_records(rows, samples, verdicts, TASK, keep, "m")
    assert [ROWS.index(json.loads(r["row"])) for r in records] == want
    for r in records:
        assert r["failed_error"] == "missed_target"  # a verifier crash is never "the failure"


class _Engine:
    """Stands in for the episode engine's online first-attempt phase: draws up to
    `fail_from_draw` solve all but one query and skip that one; later draws fail every query."""

    def __init__(self, fail_from_draw: int) -> None:
        self.calls, self.fail_from_draw = 0, fail_from_draw

    def online_first_attempts(self, rows: list[dict]) -> OnlineFirstAttempts:
        self.calls += 1
        fails = self.calls > self.fail_from_draw
        failures = [Failure(r, [1], "x") for r in rows] if fails else []
        return OnlineFirstAttempts(failures, len(rows), 0 if fails else len(rows) - 1,
                                   Counter({"context_overflow": 0 if fails else 1}))  # fmt: skip


def _cfg(mode: str) -> SimpleNamespace:
    return SimpleNamespace(episode=SimpleNamespace(first_attempt=mode))


def test_dataset_mode_reports_no_first_try() -> None:
    failures, first = next_failures(_cfg("dataset"), None, EpochSampler(ROWS, 0), 2)
    assert len(failures) == 2 and first is None


def test_online_mode_draws_again_until_a_failure_and_counts_what_it_skipped() -> None:
    engine = _Engine(fail_from_draw=2)
    failures, first = next_failures(_cfg("online"), SimpleNamespace(engine=engine),
                                    EpochSampler(ROWS, 0), 2)  # fmt: skip
    assert engine.calls == 3 and len(failures) == 2 and first is not None
    metrics = first.metrics()
    # 2 draws x 1 solved + 2 failed judged; 2 context overflows skipped.
    assert metrics["first_try_success"] == pytest.approx(2 / 4)
    assert metrics["skipped_first_context_overflow"] == 2


def test_online_mode_that_never_fails_stops_with_a_clear_error() -> None:
    engine = _Engine(fail_from_draw=10**6)
    with pytest.raises(NoFailuresLeft, match=r"episode\.first_attempt=dataset"):
        next_failures(_cfg("online"), SimpleNamespace(engine=engine), EpochSampler(ROWS, 0), 2)
    assert engine.calls == MAX_ONLINE_DRAWS
