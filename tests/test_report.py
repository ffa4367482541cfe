"""`rrr report RUN_DIR`: curves PNG and summary numbers from a synthetic metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrr.driver.cli import main
from rrr.driver.report import load_history, moving_average, summarize

N = 20  # steps; the 10 % windows are 2 steps


def reward(step: int) -> float:
    # Rises to 0.75 at step 15, then drops to 0.5: best != last.
    return step / 20 if step <= 15 else 0.5


def write_run(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in range(1, N + 1):
        rows.append(json.dumps({
            "step": step, "time": 1.7e9 + step, "rollout/reward_mean": reward(step),
            "rollout/first_try_success": 0.0, "rollout/second_try_success": reward(step),
            "rollout/reflection_tokens_mean": 100.0 + step, "learner/kl": 0.001 * step,
            "learner/loss": 0.1 / step, "timing/step_s": 10.0, "timing/rollout_s": 6.0,
            "timing/verify_s": 1.0, "timing/learn_s": 3.0, "timing/sync_s": 0.5,
            "rollout/tokens_per_s": 1000.0,
        }))  # fmt: skip
        if step == 10:  # periodic eval: a second line for the same step, merged by readers
            rows.append(json.dumps({"step": 10, "eval/second_try_accuracy": 0.4,
                                    "timing/eval_s": 30.0}))  # fmt: skip
    rows.insert(5, "this is not json")
    rows.insert(9, '{"no_step": 1}')
    rows.append('{"step": 21, "reward_me')  # the half-written tail of a crash
    (run_dir / "metrics.jsonl").write_text("\n".join(rows) + "\n")


def test_report_draws_png_and_prints_summary(tmp_path, capsys):
    run_dir = tmp_path / "run"
    write_run(run_dir)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    png = run_dir / "report.png"
    assert png.is_file() and png.stat().st_size > 1024
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "steps: 20 (step 1 to 20); malformed lines skipped: 3" in out
    assert (
        "rollout/reward_mean: first 0.0750  last 0.5000  best 0.7250 (at step 15; means over 2"
    ) in out
    assert (
        "step time: mean 10.00 s = rollout 6.00 s (60%) + learn 3.00 s (30%) + "
        "sync 0.50 s (5%) + other 0.50 s (5%)"
    ) in out
    assert "inside rollout: verify 1.00 s (10%)" in out
    # the evaluation after step 10 is not a stage of the steps (it once showed as "eval 1.50 s")
    assert "held-out evaluations (outside the steps): 1, 30 s in all" in out
    assert "kl at end: 0.02 (last step), 0.0195 (mean of the last 10% of steps)" in out
    assert "eval/second_try_accuracy (last): 0.4000" in out
    assert f"curves: {png}" in out


def test_summary_numbers(tmp_path):
    write_run(tmp_path)
    history, bad = load_history(tmp_path / "metrics.jsonl")
    assert bad == 3 and len(history) == N
    assert history[9]["eval/second_try_accuracy"] == 0.4
    assert history[9]["rollout/reward_mean"] == 0.5
    s = summarize(history, bad)
    assert s["rollout/reward_mean"]["first"] == pytest.approx(0.075)
    assert s["rollout/reward_mean"]["best"] == pytest.approx(0.725)
    assert s["rollout/reward_mean"]["best_end_step"] == 15
    assert s["timing"]["stages"] == pytest.approx({"rollout": 6.0, "learn": 3.0, "sync": 0.5})
    assert s["kl_end"] == pytest.approx(0.02)


def test_out_option_and_file_argument(tmp_path, capsys):
    write_run(tmp_path / "run")
    out = tmp_path / "elsewhere" / "curves.png"
    assert main(["report", str(tmp_path / "run" / "metrics.jsonl"), "--out", str(out)]) == 0
    assert out.stat().st_size > 1024
    assert not (tmp_path / "run" / "report.png").exists()


def test_missing_empty_and_all_malformed_are_clear_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "metrics.jsonl not found" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["report", str(tmp_path)]) == 1
    assert "holds no metrics (it is empty)" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("garbage\n{]\n")
    assert main(["report", str(tmp_path)]) == 1
    assert "2 malformed lines, no valid ones" in capsys.readouterr().err


def test_moving_average():
    assert moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert moving_average([5.0], 3) == [5.0]
