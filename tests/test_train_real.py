"""`rrr train` end to end on local Ray: a real vLLM CPU engine, real verifier actors, a real
learner; 2 steps with checkpoints, then a restart that resumes and continues at step 3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from rrr.core.metrics import NAMESPACES
from rrr.driver.cli import main
from rrr.driver.stack import fresh_stacks
from tests.helpers import actors_by_state

ROOT = Path(__file__).resolve().parents[1]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tiny_run(model: str, data: Path) -> list[str]:
    """`rrr train` on the tiny model: 2 failures x 2 reflections a step, a few tokens each."""
    return [
        "train", "--config", str(ROOT / "configs/smoke-cpu.yaml"),
        f"model.name_or_path={model}", "model.max_model_len=1024",
        f"data.source={data / 'countdown_sample.jsonl'}", "data.limit=4",
        "failures.samples_per_query=2", "failures.max_tokens=12",
        "episode.num_reflections=2", "episode.max_reflection_tokens=8",
        "episode.max_retry_tokens=8", "learner.failures_per_step=2",
        "learner.micro_batch_size=2", "learner.lr=1e-4",
        "rollout.kv_cache_gib=0.25", "rollout.in_process_engine=true",
    ]  # fmt: skip


def _tiny_brief_run(model: str) -> list[str]:
    """`rrr train` on the tiny model with the brief task: its random words pass a 10-14 word
    limit or not, so groups with a reward spread occur (and, dropping the others, every
    trained group has one): the policy moves from the first step."""
    return [
        "train", "--config", str(ROOT / "configs/smoke-cpu.yaml"),
        f"model.name_or_path={model}", "model.max_model_len=1024",
        "data.task=brief", "data.source=brief:train", "data.limit=32", "data.fewshot=0",
        "failures.samples_per_query=1", "failures.max_tokens=24",
        "episode.num_reflections=4", "episode.max_reflection_tokens=8",
        "episode.max_retry_tokens=16", "learner.micro_batch_size=4",
        "learner.drop_zero_std_groups=true", "rollout.kv_cache_gib=0.25",
        "rollout.in_process_engine=true", "logging.eval_every=0",
        "logging.checkpoint_every=1", "logging.progress=false",
    ]  # fmt: skip


def test_train_two_steps_checkpoint_and_resume(ray_local, tiny_model_path, sample_data, tmp_path,
                                               capsys):  # fmt: skip
    run = tmp_path / "run"
    args = [
        *_tiny_run(tiny_model_path, sample_data), "learner.max_steps=2",
        "logging.checkpoint_every=1", "logging.keep_checkpoints=2",
        # Colocated, as on one GPU: learner and rollout worker share a placement-group bundle;
        # sleep/wake and the learner's cache release are no-ops on a CPU, the path is the same.
        "cluster.colocate=true",
        # Held-out evaluation before the first step (vanilla), every 2 steps and at the last.
        "logging.eval_every=2", "logging.eval_at_start=true", "data.eval_limit=2",
        f"data.eval_source={sample_data / 'countdown_sample.jsonl'}", "eval.max_tokens=12",
        "eval.max_reflection_tokens=8", "eval.temperature=0.8", "eval.samples_per_problem=2",
        f"logging.output_dir={run}", "logging.progress=false",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.split("run directory:")[0])
    assert summary["start_step"] == 0 and summary["end_step"] == 2
    assert _steps(run) == [0, 1, 2, 2]  # an eval line for steps 0 and 2
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in first if "eval/second_try_accuracy" in m]
    assert [m["step"] for m in evals] == [0, 2]
    for step in (0, 2):
        results = json.loads((run / "eval" / f"step_{step:08d}" / "results.json").read_text())
        assert results["step"] == step and len(results["per_query"]) == 2
    for m in first:
        if m in evals:
            continue
        assert m["rollout/reflection_tokens_mean"] > 0 and m["timing/step_s"] > 0
        stages = {"timing/rollout_s", "timing/learn_s", "timing/sync_s"}
        assert stages | {"learner/kl", "learner/loss"} <= set(m)
        assert all(k.startswith(tuple(NAMESPACES)) for k in m if k not in ("step", "time"))
        # the learner's own pace, beside (not overwritten by) the step's and the rollout's
        assert 0 < m["learner/step_s"] < m["timing/step_s"] and m["learner/tokens_per_s"] > 0
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_00000001", "step_00000002"]

    # Issue 23: the step-0 evaluation ran in the training engine after build-failures had
    # sampled from it; a fresh `rrr eval` of the same weights (the base model) in a new engine
    # gives the same per-problem outcomes, and the same texts, sample for sample.
    fresh = tmp_path / "fresh"
    keep = ("model.", "data.", "eval.", "rollout.")
    with fresh_stacks():  # a new engine, not one a session's earlier run kept
        assert main(["eval", "--config", args[2], "--out", str(fresh),
                     *[a for a in args[3:] if a.startswith(keep)]]) == 0  # fmt: skip
    capsys.readouterr()
    step0 = json.loads((run / "eval" / "step_00000000" / "results.json").read_text())
    again = json.loads((fresh / "results.json").read_text())
    assert step0["samples_per_problem"] == again["samples_per_problem"] == 2
    assert step0["noise"] == again["noise"] == "keyed"
    assert step0["per_query"] == again["per_query"]
    texts = [(x["first_try"], x["reflection"], x["retry"]) for x in step0["examples"]]
    assert texts and texts == [(x["first_try"], x["reflection"], x["retry"])
                               for x in again["examples"]]  # fmt: skip
    assert len({t[0] for t in texts}) > 1  # the samples differ: there is noise to agree on
    assert (run / "failures" / "manifest.json").is_file()

    # Restart with the same output directory and one more step: resumes at step 3.
    assert main([*args[:-2], "learner.max_steps=3", *args[-2:]]) == 0
    resumed = json.loads(capsys.readouterr().out.split("run directory:")[0])
    assert resumed["start_step"] == 2 and resumed["end_step"] == 3
    assert _steps(run) == [0, 1, 2, 2, 3, 3]  # no second vanilla eval; one at the last step
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000002", "step_00000003"
    ]  # fmt: skip
    state = json.loads((run / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert state["extra_state"]["cursor"]["consumed"] == 6  # 3 steps x 2 failures


def test_stop_requested_on_sigint_and_sigterm_then_second_signal_interrupts():
    """Ctrl-C and `ray job stop` (SIGTERM) ask for a graceful stop; a second one stops now."""
    import os
    import signal

    from rrr.driver.train import StopRequested

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        stop = StopRequested()
        try:
            assert not stop.requested
            os.kill(os.getpid(), signum)
            assert stop.requested
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signum)
        finally:
            stop.restore()
        assert signal.getsignal(signum) == previous  # the caller's handler is back


def test_eval_due_every_m_steps_at_the_last_and_optionally_at_start():
    from rrr.core.config import load_config
    from rrr.driver.train import eval_due

    cfg = load_config(None, ["logging.eval_every=3", "learner.max_steps=7"])
    assert [s for s in range(8) if eval_due(cfg, s)] == [3, 6, 7]
    cfg = load_config(None, ["logging.eval_every=3", "learner.max_steps=7",
                             "logging.eval_at_start=true"])  # fmt: skip
    assert [s for s in range(8) if eval_due(cfg, s)] == [0, 3, 6, 7]
    cfg = load_config(None, ["logging.eval_at_start=true"])  # eval_every=0: never
    assert not any(eval_due(cfg, s) for s in range(8))


def test_rollouts_one_step_ahead_with_truncated_importance_weights(
    ray_local, tiny_model_path, sample_data, tmp_path, capsys
):
    """rollout.max_staleness=1 with real actors: the fleet generates step s+1 while the learner
    trains step s; batches after the first are one update stale, the TIS weights are logged,
    and the checkpoint's cursor is the trained batch's (a batch started ahead is drawn again).

    The rollout worker is SIGKILLed the moment step 1's checkpoint exists, which is when step
    3's rollout starts ahead of step 2's learning. Its replacement cannot be given step 1's
    weights (the learner is making step 2's), so that rollout is abandoned: after step 2's push
    it is made again, from the same draw, by one version (staleness 0)."""
    run = tmp_path / "async"
    args = [
        *_tiny_run(tiny_model_path, sample_data), "learner.max_steps=3",
        "rollout.max_staleness=1", "learner.tis_cap=2.0",
        # long enough for the kill to land while step 3's rollout runs (the in-process engine
        # of _tiny_run: no engine child process)
        "episode.max_reflection_tokens=32", "episode.max_retry_tokens=32",
        "rollout.max_restarts=1",
        "logging.checkpoint_every=1", f"logging.output_dir={run}", "logging.progress=false",
    ]  # fmt: skip
    before = set(actors_by_state("RolloutWorker").get("ALIVE", []))
    killed: list[int] = []

    def kill_when_step_1_is_saved() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ours = set(actors_by_state("RolloutWorker").get("ALIVE", [])) - before
            if ours:
                break
            time.sleep(0.5)
        manifest = run / "checkpoints" / "step_00000001" / "manifest.json"
        while time.monotonic() < deadline and not manifest.is_file():
            time.sleep(0.01)
        os.kill(ours.pop(), signal.SIGKILL)
        killed.append(1)

    saboteur = threading.Thread(target=kill_when_step_1_is_saved, daemon=True)
    saboteur.start()
    assert main(args) == 0
    saboteur.join(timeout=5)
    assert killed, "the rollout worker was not killed"
    out = capsys.readouterr().out  # Ray's raylet reports the killed worker on stdout first
    summary = json.loads(out[out.index("{\n") :].split("run directory:")[0])
    assert summary["end_step"] == 3 and "dropped_in_flight" not in summary
    assert (summary["staleness_mean"], summary["staleness_max"]) == (1 / 3, 1.0)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["rollout/staleness"] for m in lines] == [0.0, 1.0, 0.0]
    assert lines[1]["rollout/overlap_frac"] > 0 and lines[2]["rollout/overlap_frac"] == 0
    assert [m["rollout/abandoned"] for m in lines] == [0.0, 0.0, 1.0]
    # replaced while step 2 trained (by step 3's rollout), so step 2's line counts it already
    assert [m["rollout/worker_restarts"] for m in lines] == [0.0, 1.0, 1.0]
    # the draw was put back
    assert [m["rollout/failures_consumed"] for m in lines] == [2.0, 4.0, 6.0]
    for m in lines:
        assert 0 < m["learner/tis_weight_mean"] <= 2.0 and m["learner/tis_weight_max"] > 0
        assert 0 <= m["learner/tis_clip_frac"] <= 1 and m["rollout/overlap_s"] >= 0
    state = json.loads((run / "checkpoints" / "step_00000002" / "state.json").read_text())
    # at step 2 the batch of step 3 had already been drawn: the checkpoint does not count it
    assert state["extra_state"]["cursor"]["consumed"] == 4


def test_backfill_trains_signal_groups_alone_and_resumes_exactly(ray_local, tiny_model_path,
                                                                tmp_path, capsys):  # fmt: skip
    """Dynamic sampling on the real stack (issue 29): every step trains groups with a reward
    spread alone, its draws are counted in the cursor, and a run resumed from a step's
    checkpoint draws and samples the next step as the uninterrupted run did. The brief task: the
    tiny model's random words pass a 10-14 word limit or not, so groups of both kinds occur."""
    whole = tmp_path / "whole"
    args = [
        *_tiny_brief_run(tiny_model_path), "learner.failures_per_step=4", "learner.lr=1e-4",
        "learner.max_steps=3", "learner.backfill_max_draws=12",
    ]  # fmt: skip
    assert main([*args, f"logging.output_dir={whole}"]) == 0
    lines = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    consumed = 0
    for m in lines:
        consumed += m["rollout/failures"]  # every round's draws
        assert m["rollout/failures_consumed"] == consumed
        assert m["rollout/groups_signal"] + m["rollout/groups_dropped"] \
            + m["rollout/groups_unused"] == m["rollout/failures"]  # fmt: skip
        assert m["batch/frac_zero_std"] == 0  # the learner sees signal groups alone
        assert m["batch/train_seqs"] == 4 * m["rollout/groups_signal"]
        if not m["rollout/backfill_short"]:
            assert m["rollout/groups_signal"] == 4
    assert any(m["rollout/backfill_rounds"] > 0 for m in lines), "no step backfilled"
    state = json.loads((whole / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["extra_state"]["cursor"]["consumed"] == lines[1]["rollout/failures_consumed"]

    # The same run stopped after step 2 (its files as they were then), resumed to step 3.
    cut = tmp_path / "cut"
    shutil.copytree(whole / "failures", cut / "failures")
    for step in (1, 2):
        shutil.copytree(whole / "checkpoints" / f"step_{step:08d}",
                        cut / "checkpoints" / f"step_{step:08d}")  # fmt: skip
    capsys.readouterr()
    assert main([*args, f"logging.output_dir={cut}", f"data.failures={cut / 'failures'}"]) == 0
    assert json.loads(capsys.readouterr().out.split("run directory:")[0])["start_step"] == 2
    (again,) = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    same = [k for k in lines[2] if k.startswith(("rollout/groups", "rollout/backfill",
                                                 "rollout/failures", "rollout/reward_mean"))]
    assert {k: again[k] for k in same} == {k: lines[2][k] for k in same}
