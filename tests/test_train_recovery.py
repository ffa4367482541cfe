"""What `train()` (rrr/driver/train.py) does when its learner group is lost or its weight sync
fails (issue 32): a LearnerLost starts a new learner group, up to learner.max_restarts; a
SyncError stops the job at once (a new group would wait on the same silent peer). Either way the
error that ends the job names the newest checkpoint and how to resume. Stand-ins replace the
generation stack and the learner's stretch of training (no Ray); the real drills are in
tests/test_reliability_train.py and tests/test_sync.py."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from rrr.core.config import load_config
from rrr.driver import stack as stack_module
from rrr.driver import train
from rrr.learner.group import LearnerLost
from rrr.learner.weight_sync import SyncError


def _run(monkeypatch, tmp_path: Path, errors: list[BaseException], max_restarts: int):
    """train() with `learn` raising `errors` in turn (then returning); the restarts it saw."""
    seen: list[int] = []

    def learn(cfg, stack, failures, run_dir, restarts):
        seen.append(restarts)
        if errors:
            raise errors.pop(0)
        return {"restarts": restarts}

    monkeypatch.setattr(stack_module, "generation_stack", lambda cfg: contextlib.nullcontext())
    monkeypatch.setattr(train, "check_data", lambda cfg: None)
    monkeypatch.setattr(train, "load_failures", lambda cfg, stack, run_dir: [])
    monkeypatch.setattr(train, "learn", learn)
    cfg = load_config(None, [f"logging.output_dir={tmp_path / 'run'}",
                             f"learner.max_restarts={max_restarts}"])  # fmt: skip
    return train.train, cfg, seen


def test_a_lost_learner_group_restarts_within_the_budget_then_stops_with_a_resume_hint(
    monkeypatch, tmp_path
):
    run, cfg, seen = _run(monkeypatch, tmp_path, [LearnerLost("rank 1 died.")], 1)
    assert run(cfg) == {"restarts": 1} and seen == [0, 1]

    run, cfg, seen = _run(monkeypatch, tmp_path, [LearnerLost("a"), LearnerLost("rank 0 died")], 1)
    with pytest.raises(LearnerLost, match=r"^rank 0 died\. No checkpoint in .* starts over$"):
        run(cfg)
    assert seen == [0, 1]


def test_a_sync_error_stops_the_job_at_once_naming_the_checkpoint(monkeypatch, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    monkeypatch.setattr("rrr.learner.checkpoint.latest_valid", lambda root: ckpt)
    run, cfg, seen = _run(monkeypatch, tmp_path, [SyncError("2 of 2 peers did not answer")], 3)
    with pytest.raises(SyncError, match=r"did not answer\. The newest complete checkpoint is "
                                        r".*step_00000002: `rrr train` with logging\.output_dir="):
        run(cfg)
    assert seen == [0], "a SyncError is not a reason to start another learner group"
