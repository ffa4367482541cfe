"""`rrr eval-general` (paper Table 3, forgetting check): the table maths on their own, the error
messages, and one real lm-evaluation-harness run of rrr's offline tasks on two real models."""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import pytest

from rrr.driver import lm_eval_harness as ge
from rrr.driver.cli import main
from tests import general_eval_run

# ----------------------------------------------------------------------------- pure maths


def test_difference_stderr_and_flag():
    vanilla = ge.Score("acc,none", 0.50, 0.02)
    trained = ge.Score("acc,none", 0.48, 0.015)
    c = ge.compare(vanilla, trained, threshold=1.0)
    assert c.difference == pytest.approx(-2.0)
    assert c.difference_stderr == pytest.approx(100 * math.sqrt(0.02**2 + 0.015**2))  # 2.5
    assert c.flagged_drop is True
    assert c.beyond_noise is False  # 2.0 < 1.96 * 2.5
    assert ge.compare(vanilla, trained, threshold=3.0).flagged_drop is False


def test_threshold_is_strict_and_gains_never_flag():
    base = ge.Score("acc,none", 0.50, 0.001)
    assert ge.compare(base, ge.Score("acc,none", 0.49, 0.001)).flagged_drop is False  # exactly 1
    assert ge.compare(base, ge.Score("acc,none", 0.4899, 0.001)).flagged_drop is True
    gain = ge.compare(base, ge.Score("acc,none", 0.60, 0.001))
    assert gain.flagged_drop is False and gain.beyond_noise is True
    no_se = ge.compare(ge.Score("m", 0.5, None), ge.Score("m", 0.4, 0.01))
    assert no_se.difference_stderr is None and no_se.beyond_noise is None and no_se.flagged_drop


def _lm_output(task: str, metrics: dict, n: int | None = 10, **extra) -> dict:
    out = {"results": {task: {"alias": task, **metrics}}, "n-samples": {}, **extra}
    if n is not None:
        out["n-samples"][task] = {"original": 100, "effective": n}
    return out


def test_extract_score_prefers_the_paper_metric_and_reads_na_stderr():
    out = _lm_output("gsm8k", {
        "exact_match,strict-match": 0.4, "exact_match_stderr,strict-match": 0.05,
        "exact_match,flexible-extract": 0.6, "exact_match_stderr,flexible-extract": "N/A",
    })  # fmt: skip
    s = ge.extract_score("gsm8k", out)
    assert (s.metric, s.value, s.stderr, s.n) == ("exact_match,strict-match", 0.4, 0.05, 10)
    # Unknown task: acc_norm before acc; "N/A" stderr becomes None.
    other = _lm_output("my_task", {"acc,none": 0.3, "acc_norm,none": 0.35,
                                   "acc_norm_stderr,none": "N/A"})  # fmt: skip
    s = ge.extract_score("my_task", other)
    assert (s.metric, s.value, s.stderr) == ("acc_norm,none", 0.35, None)
    assert ge.extract_score("absent", other) is None
    assert ge.extract_score("my_task", _lm_output("my_task", {"alias": "x"})) is None


def test_group_sample_count_is_the_sum_of_its_subtasks():
    out = _lm_output("mmlu_pro", {"exact_match,custom-extract": 0.3,
                                  "exact_match_stderr,custom-extract": 0.01}, n=None,
                     group_subtasks={"mmlu_pro": ["mmlu_pro_law", "mmlu_pro_math"]})  # fmt: skip
    out["n-samples"] = {"mmlu_pro_law": {"effective": 5}, "mmlu_pro_math": {"effective": 7}}
    assert ge.extract_score("mmlu_pro", out).n == 12


def test_table_and_markdown_flag_only_large_drops():
    def out(hellaswag: float, gsm8k: float) -> dict:
        return {
            "results": {
                "hellaswag": {"acc_norm,none": hellaswag, "acc_norm_stderr,none": 0.01},
                "gsm8k": {"exact_match,strict-match": gsm8k,
                          "exact_match_stderr,strict-match": 0.01},
            },
            "n-samples": {t: {"effective": 10} for t in ("hellaswag", "gsm8k")},
        }  # fmt: skip

    outs = [out(0.70, 0.50), out(0.695, 0.45)]
    rows = ge.build_table(outs, ["hellaswag", "gsm8k", "mmlu_pro"], threshold=1.0)
    by = {r["task"]: r for r in rows}
    assert by["hellaswag"]["comparison"]["difference"] == pytest.approx(-0.5)
    assert by["hellaswag"]["comparison"]["flagged_drop"] is False
    assert by["gsm8k"]["comparison"]["flagged_drop"] is True
    assert by["mmlu_pro"]["scores"] == [None, None] and by["mmlu_pro"]["comparison"] is None
    models = [{"role": "vanilla", "spec": "a", "path": "/a", "trained": None},
              {"role": "trained", "spec": "b", "path": "/b", "trained": {"step": 5}}]  # fmt: skip
    results = {"models": models, "tasks": rows, "threshold_points": 1.0, "limit": None}
    md = ge.markdown(results)
    assert "| HellaSwag | acc_norm,none | 10 | 70.0% ± 1.0 | 69.5% ± 1.0 | -0.5 | 1.4 | no" in md
    assert (
        "| GSM8K | exact_match,strict-match | 10 | 50.0% ± 1.0 | 45.0% ± 1.0 | -5.0 | 1.4 | **YES"
        in md
    )
    assert "| MMLU-Pro | - | - | _missing_ | _missing_ | - | - | - |" in md
    assert "trained step 5" in md
    assert ge.summary_flags(results) == ["GSM8K"]
    # One model: its scores only, no difference columns.
    single = {**results, "models": models[:1],
              "tasks": ge.build_table(outs[:1], ["gsm8k"], 1.0)}  # fmt: skip
    assert "Δ" not in ge.markdown(single) and "50.0% ± 1.0" in ge.markdown(single)


def test_unknown_task_message_says_how_to_list_names():
    with pytest.raises(ge.GeneralEvalError) as info:
        ge.check_tasks(SimpleNamespace(all_tasks=["gsm8k", "rrr_local_arith"]), ["gsm8k", "gsm9k"])
    msg = str(info.value)
    assert "unknown lm-eval task(s): gsm9k" in msg and "lm-eval ls tasks" in msg
    assert "rrr_local_arith" in msg and "--include-path" in msg


def test_missing_model_path_is_named(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(["eval-general", "--model", str(missing), "--tasks", "rrr_local_arith"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    assert main(["eval-general", "--model", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "no config.json" in err and "no valid checkpoint" in err


def test_lm_eval_not_installed_message(monkeypatch, smollm2_path, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    assert main(["eval-general", "--model", smollm2_path, "--tasks", "rrr_local_arith"]) == 1
    err = capsys.readouterr().err
    assert "bash scripts/setup.sh cpu,test,eval" in err and "pip install -e .[eval]" in err


def test_backend_choice_on_this_machine():
    assert ge.choose_backend("hf") == "hf"
    why_not = ge.vllm_usable()
    if why_not is None:  # a machine with the `vllm` package and a GPU
        assert ge.choose_backend("auto") == "vllm"
    else:
        assert ge.choose_backend("auto") == "hf"
        with pytest.raises(ge.GeneralEvalError, match="--backend hf"):
            ge.choose_backend("vllm")


# ----------------------------------------------------------------------------- real run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, smollm2_path, tiny_model_path):
    return general_eval_run.get(tmp_path_factory.mktemp("general-eval"), smollm2_path,
                                tiny_model_path)  # fmt: skip


@pytest.mark.slow
def test_eval_general_runs_lm_eval_on_two_models(real_run, smollm2_path):
    assert real_run.rc == 0, real_run.printed
    results = json.loads((real_run.out / "results.json").read_text())
    assert results["kind"] == "general_eval" and results["backend"] == "hf"
    assert results["lm_eval_version"] and results["limit"] == general_eval_run.LIMIT
    vanilla, trained = results["models"]
    assert (vanilla["role"], vanilla["path"], vanilla["trained"]) == ("vanilla", smollm2_path, None)
    # The run directory was resolved to its checkpoint's policy, loaded in place.
    assert trained["role"] == "trained"
    assert trained["path"].endswith("checkpoints/step_00000007/policy")
    assert trained["trained"]["step"] == general_eval_run.STEP
    assert trained["trained"]["base_model"] == smollm2_path

    rows = {r["task"]: r for r in results["tasks"]}
    assert set(rows) == {"rrr_local_arith", "rrr_local_arith_gen"}
    for task, metric in (("rrr_local_arith", "acc,none"),
                         ("rrr_local_arith_gen", "exact_match,first-number")):  # fmt: skip
        row = rows[task]
        for score, model in zip(row["scores"], results["models"]):
            assert score["metric"] == metric and score["n"] == general_eval_run.LIMIT
            assert 0.0 <= score["value"] <= 1.0 and score["stderr"] is not None
            # The headline number is lm-eval's own, kept in full beside the table.
            assert score["value"] == model["lm_eval"]["results"][task][metric]
        v, t = row["scores"]
        c = row["comparison"]
        assert c["difference"] == pytest.approx(100 * (t["value"] - v["value"]))
        assert c["difference_stderr"] == pytest.approx(
            100 * math.sqrt(v["stderr"] ** 2 + t["stderr"] ** 2)
        )
        assert c["flagged_drop"] == (c["difference"] < -1.0)
    # SmolLM2 answers the 3-shot sums; a random 2-layer model cannot: a drop the table flags.
    arith = rows["rrr_local_arith"]
    assert arith["scores"][0]["value"] >= 0.6 and arith["scores"][1]["value"] <= 0.5
    assert arith["comparison"]["flagged_drop"] is True
    assert "drops larger than 1 point(s): rrr_local_arith" in real_run.printed

    md = (real_run.out / "results.md").read_text()
    assert "## Forgetting check (paper Table 3)" in md and "| benchmark | metric | n |" in md
    assert "| rrr_local_arith | acc,none | 10 |" in md and "**YES**" in md
    assert f"trained step {general_eval_run.STEP}" in md and smollm2_path in md


def test_offline_hub_benchmark_says_what_to_do(monkeypatch):
    import lm_eval  # the eval extra is part of the default install: no skip

    def unreachable(**kwargs):
        assert kwargs["tasks"] == ["gsm8k"] and kwargs["model"] == "hf"
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(lm_eval, "simple_evaluate", unreachable)
    model = ge.EvalModel("m", "/m", "/m", None)
    with pytest.raises(ge.GeneralEvalError, match="need network") as info:
        ge.run_lm_eval(model, ["gsm8k"], None, backend="hf", limit=2, batch_size="8",
                       num_fewshot=None, apply_chat_template=False, max_model_len=1024,
                       seed=0)  # fmt: skip
    assert "--tasks rrr_local_arith,rrr_local_arith_gen" in str(info.value)
