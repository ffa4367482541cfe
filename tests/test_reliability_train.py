"""Drills on a real `rrr train` (local Ray, vLLM CPU engine, verifier actors, torch learner):

A. an uninterrupted 3-step run: the reference losses;
B. the same run with its rollout worker SIGKILLed during step 2 (replaced, re-synced, its
   requests sent again) and its learner SIGKILLed during step 3: the job fails fast with a
   message that says what died and how to resume, and every actor is released;
C. `rrr train` again on B's directory: resumes from step 2's checkpoint at the exact step and
   data cursor, and step 3's loss equals A's. SIGTERM during step 4 finishes that step, writes
   a final checkpoint and exits cleanly;
D. with learner.max_restarts=2 the same job heals: its learner SIGKILLed during step 2, and
   again while step 3's checkpoint is written (or, if the write wins the race, during step 4):
   each time a new learner group resumes from the last complete checkpoint inside the job, the
   run ends at step 4 with every step logged once, and steps 1-3 equal A's.

Sampling is seeded per step (rollout.seed) and, with rollout.in_process_engine, exact, so B
and C must repeat A's episodes exactly: any lost, duplicated or stale-weight episode would show
up as a different loss or reward.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rrr.driver.cli import main
from rrr.driver.stack import fresh_stacks
from tests.helpers import actors_by_state

ROOT = Path(__file__).resolve().parents[1]
ACTOR_CLASSES = ("RolloutWorker", "LearnerActor", "VerifierActor")
COMPARED = ("learner/loss", "rollout/reward_mean", "rollout/reflection_tokens_mean",
            "rollout/episodes", "rollout/generated_tokens")  # fmt: skip


def _args(model: str, data: Path, run: Path, max_steps: int, failures: Path | None) -> list[str]:
    return [
        "train", "--config", str(ROOT / "configs/smoke-cpu.yaml"),
        f"model.name_or_path={model}", "model.max_model_len=1024",
        f"data.source={data / 'countdown_sample.jsonl'}", "data.limit=6",
        "failures.samples_per_query=2", "failures.max_tokens=12",
        "episode.num_reflections=2", "episode.max_reflection_tokens=12",
        "episode.max_retry_tokens=12", "learner.failures_per_step=2",
        "learner.micro_batch_size=2", "learner.lr=1e-3", f"learner.max_steps={max_steps}",
        "logging.checkpoint_every=1", "logging.keep_checkpoints=5", "rollout.kv_cache_gib=0.25",
        "rollout.in_process_engine=true",  # exact seeded repeats (docs/reliability.md)
        "logging.progress=false", f"logging.output_dir={run}",
        *([f"data.failures={failures}"] if failures else []),
    ]  # fmt: skip


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _alive() -> dict[str, set[int]]:
    return {c: set(actors_by_state(c).get("ALIVE", [])) for c in ACTOR_CLASSES}


class Saboteur(threading.Thread):
    """Runs `actions` in order, each once its condition on the run directory holds."""

    def __init__(self, actions: list[tuple[Callable[[], bool], Callable[[], None]]]) -> None:
        super().__init__(daemon=True)
        self.actions, self.done, self.stop = actions, [], False
        self.done_at: list[float] = []  # time.monotonic() of each action

    def run(self) -> None:
        for when, act in self.actions:
            while not when():
                if self.stop:
                    return
                time.sleep(0.2)
            act()
            self.done.append(act)
            self.done_at.append(time.monotonic())


def _kill_new(cls: str, before: dict[str, set[int]]) -> Callable[[], None]:
    """SIGKILL the actor of `cls` this run started (the session may hold others)."""

    def act() -> None:
        pids = set(actors_by_state(cls).get("ALIVE", [])) - before[cls]
        assert len(pids) == 1, (cls, pids)
        os.kill(pids.pop(), signal.SIGKILL)

    return act


def _has_checkpoint(run: Path, step: int) -> Callable[[], bool]:
    return lambda: (run / "checkpoints" / f"step_{step:08d}" / "manifest.json").is_file()


def _logged(run: Path, step: int) -> Callable[[], bool]:
    return lambda: any(m["step"] == step for m in _metrics(run))


def _close(a: dict, b: dict) -> None:
    for key in COMPARED:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a[key], b[key])


@pytest.fixture(autouse=True)
def _own_stacks():
    """The drills count the actors a run starts and releases, and kill the new ones: every run
    here starts its own generation stack instead of one a finished run kept (StackPool)."""
    with fresh_stacks():
        yield


def test_killed_actors_fail_fast_and_the_run_resumes_exactly(
    ray_local, tiny_model_path, sample_data, tmp_path, capsys
):
    # A: the reference.
    ref = tmp_path / "a"
    assert main(_args(tiny_model_path, sample_data, ref, 3, None)) == 0
    capsys.readouterr()
    reference = _metrics(ref)
    assert [m["step"] for m in reference] == [1, 2, 3]
    failures = ref / "failures"

    # B: rollout worker killed once step 1 is checkpointed (step 2's rollout), learner killed
    # once step 2 is checkpointed (step 3).
    run = tmp_path / "b"
    before = _alive()
    saboteur = Saboteur([
        (_has_checkpoint(run, 1), _kill_new("RolloutWorker", before)),
        (_has_checkpoint(run, 2), _kill_new("LearnerActor", before)),
    ])  # fmt: skip
    saboteur.start()
    t0 = time.monotonic()
    code = main(_args(tiny_model_path, sample_data, run, 3, failures))
    returned_at = time.monotonic()
    failed_after = returned_at - t0
    saboteur.stop = True
    err = capsys.readouterr().err
    assert len(saboteur.done) == 2, "both kills must have happened"
    # Fail fast: the run ends within seconds of the learner's death (a step here takes ~1 s).
    # Without LearnerGroup's ray.wait, surviving ranks would sit in a collective until its
    # 30-minute timeout; 120 s is a bound with room for a loaded 2-core CI, not a speed goal.
    learner_lost_after = returned_at - saboteur.done_at[1]
    assert learner_lost_after < 120, f"the run took {learner_lost_after:.0f} s to stop"
    assert code == 1
    assert "LearnerLost: learner rank 0 died during a step" in err, err[-2000:]
    assert "Traceback" not in err
    got = _metrics(run)
    assert [m["step"] for m in got] == [1, 2]  # step 3 never completed
    assert got[1]["rollout/worker_restarts"] == 1.0
    for a, b in zip(reference, got):
        _close(a, b)  # the restarted worker re-sampled step 2 exactly: nothing lost or doubled
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_00000001", "step_00000002"]  # nothing half-written, no temp dir
    assert _alive() == before, "every actor of the failed run must be released"

    # C: resume B. Step 3 repeats A's step 3; SIGTERM during step 4 stops after step 4.
    saboteur = Saboteur([(_logged(run, 3), lambda: os.kill(os.getpid(), signal.SIGTERM))])
    saboteur.start()
    assert main(_args(tiny_model_path, sample_data, run, 10, failures)) == 0
    saboteur.stop = True
    out = capsys.readouterr().out
    summary = json.loads(out.split("run directory:")[0])
    assert summary["start_step"] == 2 and summary["stopped"] is True
    stopped_at = summary["end_step"]
    assert stopped_at in (3, 4)  # the step in flight when SIGTERM came is finished
    got = _metrics(run)
    assert [m["step"] for m in got] == list(range(1, stopped_at + 1))
    _close(reference[2], got[2])
    state = json.loads(
        (run / "checkpoints" / f"step_{stopped_at:08d}" / "state.json").read_text()
    )
    assert state["step"] == stopped_at
    assert state["extra_state"]["cursor"]["consumed"] == 2 * stopped_at  # 2 failures a step
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert _alive() == before
    print(f"run B (2 kills) took {failed_after:.0f} s, stopped {learner_lost_after:.1f} s after "
          f"the learner kill; run C stopped by SIGTERM at {stopped_at}")  # fmt: skip

    # D: a self-healing learner (learner.max_restarts).
    heal = tmp_path / "d"
    before = _alive()
    mid_write = threading.Event()
    killed: set[int] = set()  # the first group's learner

    def kill_during_checkpoint_3() -> None:
        """The second learner group's rank, SIGKILLed as soon as step 3's temp dir appears."""
        deadline = time.monotonic() + 600
        pids: set[int] = set()
        while not pids and time.monotonic() < deadline:  # the group that replaced the first
            alive = set(actors_by_state("LearnerActor").get("ALIVE", [])) - before["LearnerActor"]
            pids = alive - killed
            time.sleep(0.05)
        root = heal / "checkpoints"
        while time.monotonic() < deadline:
            if any(p.name.startswith(".tmp-step_00000003") for p in root.iterdir()):
                mid_write.set()
                break
            if (root / "step_00000003").is_dir():
                break  # the write won the race: the kill lands in step 4 instead
            time.sleep(0.001)
        os.kill(pids.pop(), signal.SIGKILL)

    def kill_first() -> None:
        (pid,) = set(actors_by_state("LearnerActor").get("ALIVE", [])) - before["LearnerActor"]
        killed.add(pid)
        os.kill(pid, signal.SIGKILL)

    saboteur = Saboteur([(_logged(heal, 1), kill_first),
                         (lambda: bool(killed), kill_during_checkpoint_3)])  # fmt: skip
    saboteur.start()
    args = [*_args(tiny_model_path, sample_data, heal, 4, failures), "learner.max_restarts=2"]
    assert main(args) == 0
    saboteur.stop = True
    out = capsys.readouterr().out
    assert len(saboteur.done) == 2, "both learner kills must have happened"
    summary = json.loads(out[out.index("{\n") :].split("run directory:")[0])
    assert summary["end_step"] == 4 and summary["learner_restarts"] == 2
    got = _metrics(heal)
    assert [m["step"] for m in got] == [1, 2, 3, 4]  # each step once: redone ones replaced
    assert [m["learner/restarts"] for m in got][-1] == 2.0
    for a, b in zip(reference, got[:3]):
        _close(a, b)  # steps redone after a restart repeat the uninterrupted run
    assert not [p for p in (heal / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert _alive()["LearnerActor"] == before["LearnerActor"]
    when = "during" if mid_write.is_set() else "after"
    print(f"run D healed twice; the second kill landed {when} step 3's checkpoint write")
