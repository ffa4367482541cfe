"""The loop learns (issue 23, item 4): configs/learnability-cpu.yaml on a smaller budget.

Everything is the real component: vLLM samples, the verifier pool scores, group advantages on the
reflection spans, the shared-prefix learner steps, the weights sync back. The task
(rrr/core/tasks/brief.py) lets the reflection control the retry's reward, so a working pipeline
raises
it within a few steps; a broken link (wrong mask, stale weights, advantages with the wrong sign)
leaves it flat. Measured on one fixed set of held-out failures (eval.reuse_first_tries): the step-0
model's failed first tries, reflected on and retried by the vanilla and the trained model.

The full preset (docs/learnability.md) runs 8 steps at lr 1e-5 and asks for p < 0.01; this budget
(4 steps of 8 failures at lr 3e-5) asks for a rise of the held-out second try at p < 0.05 and a
rising training reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrr.driver.cli import main
from rrr.driver.evaluate import paired_tests

# One pinned core under `pytest -n 2` (tests/scheduling.py): 730 s measured there, near
# pytest-timeout's 900 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def test_learnability_preset_learns_on_a_small_budget(ray_local, smollm2_path, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train", "--config", str(ROOT / "configs/learnability-cpu.yaml"),
        "data.limit=64", "data.eval_limit=24", "eval.samples_per_problem=2",
        # Fewer steps than the preset, a larger step size. With 4 failures a step at lr 1e-5
        # the reward did not rise in 4 steps (0.31 0.31 0.22 0.13); with 6 at lr 3e-5 it rose
        # in 2 runs of 3 and stayed flat in a CI run (0.13 0.13 0.15 0.10); with 8 it rose in
        # 4 runs of 4 (docs/learnability.md).
        "learner.failures_per_step=8", "learner.lr=3e-5", f"learner.max_steps={STEPS}",
        f"logging.eval_every={STEPS}", f"logging.checkpoint_every={STEPS}",
        f"logging.output_dir={run}", "logging.progress=false",
    ]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "rollout/reward_mean" in m]
    rewards = [m["rollout/reward_mean"] for m in steps]
    assert len(rewards) == STEPS
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2, rewards

    vanilla, trained = (
        json.loads((run / "eval" / f"step_{s:08d}" / "results.json").read_text())
        for s in (0, STEPS)
    )
    assert (vanilla["first_tries"], trained["first_tries"]) == ("sampled", "reused")
    paired = paired_tests(vanilla, trained)
    assert paired["paired_queries"] == 24 and paired["coupling"] == "coupled"
    assert paired["first"]["difference"] == 0  # one fixed set of failures
    second = paired["second"]
    assert second["difference"] > 0 and second["p_value"] < 0.05, second
