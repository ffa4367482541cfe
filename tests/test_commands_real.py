"""`rrr build-failures` and `rrr eval` end to end on a few rows of the shared samples: real Ray,
a real vLLM CPU engine (the tiny model), real verifier actors, real parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from rrr.actors.rollout_worker import RolloutFleet
from rrr.actors.verifier_pool import LocalVerifier
from rrr.core import failure_data as fd
from rrr.core.chat import ChatRenderer
from rrr.core.config import load_config
from rrr.core.episodes import EpisodeEngine
from rrr.driver.build_failures import build_failures
from rrr.driver.cli import main
from rrr.driver.stack import Stack, load_task

ROOT = Path(__file__).resolve().parents[1]


def _overrides(tiny: str, shared: Path) -> list[str]:
    return [
        f"model.name_or_path={tiny}",
        "model.max_model_len=1024",
        f"data.source={shared / 'countdown_sample.jsonl'}",
        "data.limit=6",
        "failures.samples_per_query=3",
        "failures.max_tokens=12",
        "failures.shard_size=4",
        "rollout.kv_cache_gib=0.25",
        "rollout.in_process_engine=true",
        "logging.progress=false",
    ]


def test_build_failures_cli_then_resume(ray_local, rollout_worker, tiny_model_path, sample_data,
                                        tmp_path, capsys):  # fmt: skip
    out = tmp_path / "failures"
    args = ["build-failures", "--config", str(ROOT / "configs/smoke-cpu.yaml"), "--out", str(out)]
    overrides = _overrides(tiny_model_path, sample_data)
    assert main([*args, *overrides]) == 0
    summary = json.loads(capsys.readouterr().out.split("failure dataset:")[0])
    assert summary["queries"] == 6 and summary["shards"] == 2
    assert summary["queries_this_run"] == 6

    records, manifest = fd.read_failures(out)
    assert manifest["samples_per_query"] == 3 and manifest["num_queries"] == 6
    table = pq.read_table(sorted(out.glob("shard-*.parquet"))[0])
    assert table.schema.equals(fd.SCHEMA)
    # A random tiny model fails countdown: every query is kept with its K samples counted.
    assert len(records) == summary["failures_total"] > 0
    for r in records:
        assert r.num_samples == 3 and 1 <= r.num_failed <= 3
        assert r.failed_token_ids and r.failed_error in {
            "invalid_equation", "wrong_numbers", "missed_target"
        }
        assert set(r.row) >= {"nums", "target"}

    # A rerun with everything done starts no engine and changes nothing.
    assert main([*args, *overrides]) == 0
    again = json.loads(capsys.readouterr().out.split("failure dataset:")[0])
    assert again["shards_skipped_as_done"] == 2 and again["queries_this_run"] == 0

    # A crash that lost shard 1: only that shard is redone (reusing the session's engine).
    (out / "shard-00001.parquet").unlink()
    cfg = load_config(ROOT / "configs/smoke-cpu.yaml", overrides)
    task = load_task(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    fleet = RolloutFleet([rollout_worker])
    engine = EpisodeEngine(task, ChatRenderer(tok), fleet, LocalVerifier(task), cfg.episode, 1024)
    stack = Stack(cfg, tiny_model_path, task, ChatRenderer(tok), fleet, LocalVerifier(task), engine)
    resumed = build_failures(cfg, out, stack=stack)
    assert resumed["shards_skipped_as_done"] == 1 and resumed["queries_this_run"] == 2
    assert len(fd.read_failures(out)[0]) == resumed["failures_total"]

    # Other settings into the same directory are refused, naming the difference.
    with pytest.raises(fd.FailureDataError, match="samples_per_query"):
        build_failures(load_config(None, [*overrides, "failures.samples_per_query=5"]), out,
                       stack=stack)  # fmt: skip


def test_eval_cli_writes_results_and_compare(ray_local, tiny_model_path, sample_data, tmp_path,
                                              capsys):  # fmt: skip
    out = tmp_path / "eval"
    overrides = [
        f"model.name_or_path={tiny_model_path}",
        "model.max_model_len=1024",
        f"data.eval_source={sample_data / 'countdown_sample.jsonl'}",
        "data.eval_limit=4",
        "eval.max_tokens=12",
        "eval.max_reflection_tokens=8",
        "rollout.kv_cache_gib=0.25",
        "rollout.in_process_engine=true",
    ]
    cfg_path = str(ROOT / "configs/smoke-cpu.yaml")
    assert main(["eval", "--config", cfg_path, "--out", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "1st try" in printed and "results.json" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["num_queries"] == 4
    assert 0.0 <= results["first_try_accuracy"] <= results["second_try_accuracy"] <= 1.0
    wrong_first = results["num_queries"] - results["first_try_correct"]
    assert sum(results["first_try_error_counts"].values()) == wrong_first
    assert set(results["first_try_errors"]) <= {"invalid_equation", "wrong_numbers",
                                                 "missed_target", "context_overflow"}  # fmt: skip
    if wrong_first:
        assert results["examples"] and results["avg_reflection_tokens"] > 0
        assert all(0 < ex["reflection_tokens"] <= 8 for ex in results["examples"])
    assert (out / "results.png").stat().st_size > 1000
    assert "paper Tables 1/2" in (out / "results.md").read_text()

    cmp_out = tmp_path / "cmp"
    assert main(["eval", "--compare", str(out), str(out / "results.json"), "--out",
                 str(cmp_out)]) == 0  # fmt: skip
    md = (cmp_out / "compare.md").read_text()
    # Without --out: beside B's results, not in the config's output directory.
    assert main(["eval", "--compare", str(out), str(out / "results.json")]) == 0
    assert (out / "compare" / "compare.md").read_text() == md
    assert md.count(tiny_model_path) == 2 and (cmp_out / "compare.png").is_file()
    # Per-query outcomes agree with the totals, and a run compared with itself has no
    # discordant pair: the paired test sees no difference at all.
    per_query = results["per_query"]
    assert len(per_query) == 4
    assert sum(q["first"] for q in per_query) == results["first_try_correct"]
    assert sum(q["second"] for q in per_query) == (
        results["first_try_correct"] + results["fixed_by_reflection"]
    )
    paired = json.loads((cmp_out / "compare.json").read_text())
    assert paired["paired_queries"] == 4
    assert paired["second"]["only_a"] == paired["second"]["only_b"] == 0
    assert paired["second"]["p_value"] == 1.0 and "Paired t test" in md

    # The paper report reads this real results.json as the vanilla model (it is no rrr export)
    # and marks what this session did not produce as missing rather than dropping it.
    report = tmp_path / "report"
    assert main(["paper-report", str(out), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    first = f"{100 * results['first_try_accuracy']:.1f}"
    assert first in text and "_missing" in text
    assert (report / "report.html").is_file()


def test_calibrate_cli_measures_the_signal_a_run_would_get(
    ray_local, tiny_model_path, sample_data, tmp_path, capsys
):
    out = tmp_path / "calibrate.json"
    overrides = [
        f"model.name_or_path={tiny_model_path}", "model.max_model_len=1024",
        f"data.source={sample_data / 'countdown_sample.jsonl'}", "data.limit=3",
        "failures.samples_per_query=2", "failures.max_tokens=12", "episode.num_reflections=2",
        "episode.max_reflection_tokens=8", "episode.max_retry_tokens=8", "eval.max_tokens=12",
        "eval.max_reflection_tokens=8",
        "rollout.kv_cache_gib=0.25", "rollout.in_process_engine=true",
    ]  # fmt: skip
    cfg_path = str(ROOT / "configs/smoke-cpu.yaml")
    assert main(["calibrate", "--config", cfg_path, "--out", str(out), *overrides]) == 0
    got = json.loads(out.read_text())
    assert got["queries"] == 3 and 0.0 <= got["first_try_success"] <= 1.0
    # A tiny random model fails every query: each failure gets a group of 2 reflections.
    assert got["failures"] == 3
    assert 0.0 <= got["retry_success"] <= 1.0 and 0.0 <= got["frac_zero_std"] <= 1.0
    assert got["retry_success"] == got["reward_mean"]  # a retry's success is its reward
    assert 0 < got["reflection_tokens_mean"] <= 8
    assert 0.0 <= got["eval"]["first_try_accuracy"] <= got["eval"]["second_try_accuracy"] <= 1.0
    assert '"frac_zero_std"' in capsys.readouterr().out  # printed as well as written
