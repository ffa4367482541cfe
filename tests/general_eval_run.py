"""One real `rrr eval-general` run shared by test_general_eval.py and test_paper_report.py (not a
test module): the embedded SmolLM2-135M as vanilla, and as "trained" a training run directory
whose checkpoint holds the tiny random Llama, on rrr's two offline lm-eval tasks.

Cached per session (the run takes ~30 s on 2 cores); a module that needs it calls `get`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

TASKS = "rrr_local_arith,rrr_local_arith_gen"
LIMIT = 10
STEP = 7


@dataclass(frozen=True)
class GeneralEvalRun:
    out: Path  # --out of eval-general: results.json, results.md
    run_dir: Path  # the fake training run (config.yaml, checkpoints/step_00000007/policy)
    printed: str  # what the command printed on stdout
    rc: int


_CACHE: dict[tuple[str, str], GeneralEvalRun] = {}


def make_run_dir(run_dir: Path, base_model: str, policy_source: str) -> Path:
    """A training run directory as `rrr train` leaves it, written with the real checkpoint code:
    config.yaml naming the base model, and one committed checkpoint whose policy/ is a copy of
    `policy_source`."""
    from rrr.core.config import load_config, save_config
    from rrr.learner import checkpoint as ckpt

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(load_config(None, [f"model.name_or_path={base_model}"]), run_dir / "config.yaml")
    ckpt.write_checkpoint(
        run_dir / "checkpoints",
        STEP,
        lambda tmp: shutil.copytree(policy_source, tmp / "policy"),
        meta={"backend": "torch"},
    )
    return run_dir


def get(root: Path, smollm2_path: str, tiny_model_path: str) -> GeneralEvalRun:
    key = (smollm2_path, tiny_model_path)
    if key in _CACHE:
        return _CACHE[key]
    from rrr.driver.cli import main

    run_dir = make_run_dir(root / "run", smollm2_path, tiny_model_path)
    out = root / "eval-general"
    argv = ["eval-general", "--model", smollm2_path, "--model", str(run_dir), "--tasks", TASKS,
            "--limit", str(LIMIT), "--out", str(out), "--log-level", "WARNING"]  # fmt: skip
    buf = io.StringIO()
    old_cwd = os.getcwd()
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # never the network in tests
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # From another directory: the shipped task must find its JSONL wherever rrr runs.
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(buf):
            rc = main(argv)
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result = GeneralEvalRun(out, run_dir, buf.getvalue(), rc)
    _CACHE[key] = result
    return result
