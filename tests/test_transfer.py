"""The transfer table of `rrr paper-report` (cross-task evaluation): a model trained on one
task and evaluated on another is a transfer row, never the "Trained" side of Tables 1/2."""

from __future__ import annotations

import json
from pathlib import Path

from rrr.core.models import trained_provenance
from rrr.driver import paper_report as pr


def _result(path: Path, task: str, model: str, first: float, second: float,
            trained: dict | None) -> Path:  # fmt: skip
    path.mkdir(parents=True)
    data = {
        "task": task, "model": model, "family": "qwen", "source": f"{task}-data",
        "num_queries": 10, "first_try_accuracy": first, "second_try_accuracy": second,
        "first_try_errors": {}, "second_try_errors": {}, "avg_reflection_tokens": 5.0,
        "examples": [], "trained": trained,
    }  # fmt: skip
    (path / "results.json").write_text(json.dumps(data))
    return path


def test_trained_provenance_records_the_training_task(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000001" / "policy").mkdir(parents=True)
    (run / "checkpoints" / "step_00000001" / "state.json").write_text('{"step": 1}')
    (run / "config.yaml").write_text("model:\n  name_or_path: base-m\ndata:\n  task: code\n")
    info = trained_provenance(run / "checkpoints" / "step_00000001" / "policy")
    assert info is not None and info["task"] == "code" and info["base_model"] == "base-m"


def test_transfer_table_and_tables_1_2_keep_it_apart(tmp_path: Path) -> None:
    on_code = {"step": 3, "base_model": "base-m", "task": "code"}
    on_countdown = {"step": 3, "base_model": "base-m", "task": "countdown"}
    dirs = [
        _result(tmp_path / "v-cd", "countdown", "base-m", 0.2, 0.3, None),
        _result(tmp_path / "v-code", "code", "base-m", 0.1, 0.15, None),
        _result(tmp_path / "code-on-cd", "countdown", "/e/code", 0.25, 0.4, on_code),
        _result(tmp_path / "cd-on-cd", "countdown", "/e/cd", 0.5, 0.6, on_countdown),
    ]
    sources = [pr.load_source(d / "results.json") for d in dirs]
    md = pr.build_report(sources)
    table = md.split("## Transfer: trained on one task, evaluated on another")[1].split("## ")[0]
    assert "| model | trained on | code | countdown |" in table
    assert "| `base-m` | vanilla | 10.0% → 15.0% (n=10) | 20.0% → 30.0% (n=10) |" in table
    assert "| `base-m` | trained on code | - | 25.0% → 40.0% (n=10) |" in table
    assert "| `base-m` | trained on countdown | - | 50.0% → 60.0% (n=10) |" in table
    # Table 2's trained side is the countdown-trained model, not the code-trained one.
    pairs = pr.pair_results([s for s in sources if s.kind == "task_eval"])
    assert [(v.path.parent.name, t.path.parent.name) for v, t in pairs["countdown"]] == [
        ("v-cd", "cd-on-cd")
    ]


def test_no_transfer_result_says_which_command_fills_it(tmp_path: Path) -> None:
    src = pr.load_source(_result(tmp_path / "v", "countdown", "m", 0.2, 0.3, None) / "results.json")
    md = pr.build_report([src])
    assert "## Transfer" in md and "_missing: `rrr eval --config CONFIG data.task=OTHER_TASK" in md
