"""`rrr paper-report`: the paper-shaped report built from result files other rrr code wrote for
real in this session: the `rrr eval-general` run of tests/general_eval_run.py (Table 3), `rrr
eval` results.json from rrr.driver.evaluate (the real first try -> reflection -> retry code and
writer, driven by a scripted generator instead of an LLM), an `rrr export` of the run's
checkpoint, and metrics.jsonl from the real JSONL metrics sink."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rrr.actors.verifier_pool import LocalVerifier
from rrr.core.chat import ChatRenderer
from rrr.core.config import load_config
from rrr.core.episodes import EpisodeEngine
from rrr.core.generation import GenRequest, Sample
from rrr.core.metrics import JsonlSink
from rrr.core.models import trained_provenance
from rrr.core.tasks import get_task
from rrr.driver import evaluate as evaluation
from rrr.driver import paper_report as pr
from rrr.driver.cli import main
from tests import general_eval_run

ROWS = [
    {"nums": [1, 2, 3], "target": 6},
    {"nums": [2, 5, 7], "target": 14},
    {"nums": [3, 4, 5], "target": 12},
    {"nums": [1, 1, 8], "target": 10},
]
# Per model: first tries (by target), reflection text, and which targets the retry solves.
BEHAVIOUR = {
    "vanilla": {
        "first": {6: "1+2+3", 14: "2+5+8", 12: "3+4-5", 10: "hello"},  # ok, wrong numbers,
        "reflection": "I am sorry for the confusion. " * 12,  # missed target, invalid
        "solves": set(),
    },
    "trained": {
        "first": {6: "1+2+3", 14: "2+5+7", 12: "3+4-5", 10: "1+9"},
        "reflection": "Use each number once.",
        "solves": {12},
    },
}


class ScriptedModel:
    """Stands in for the LLM: first tries, reflections and retries per BEHAVIOUR."""

    def __init__(self, tok, behaviour: dict):
        self.tok, self.b = tok, behaviour

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        out = []
        for req in requests:
            text = self.tok.decode(req.prompt_ids)
            target = int(re.search(r"equals (\d+)", text)[1])
            if "Reflect on what went wrong" in text.rsplit("<|im_start|>user", 1)[1]:
                reply = self.b["reflection"]
            elif text.count("<|im_start|>assistant") > 1:  # a retry after a reflection
                solved = target in self.b["solves"]
                reply = "\\boxed{" + ("3+4+5" if solved else "1") + "}"
            else:
                reply = "\\boxed{" + self.b["first"][target] + "}"
            ids = self.tok.encode(reply, add_special_tokens=False)[: req.max_tokens]
            out.append([Sample(ids, [-0.5] * len(ids), self.tok.decode(ids), "stop")
                        for _ in range(req.n)])  # fmt: skip
        return out


def scripted_eval(model_path: str, tok_path: str, role: str, out: Path) -> dict:
    """results.json as `rrr eval` writes it: rrr.driver.evaluate.evaluate + write_results, and the
    "trained" record the command adds."""
    cfg = load_config(None, [f"model.name_or_path={model_path}", "data.task=countdown",
                             "data.eval_source=inline-test-rows", "data.fewshot=0"])  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tok_path)
    task = get_task("countdown", "qwen")
    engine = EpisodeEngine(task, ChatRenderer(tok), ScriptedModel(tok, BEHAVIOUR[role]),
                           LocalVerifier(task), cfg.episode, 2048)  # fmt: skip
    results = evaluation.evaluate(cfg, engine, ROWS)
    results["trained"] = trained_provenance(model_path)
    evaluation.write_results(results, out)
    return results


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, smollm2_path, tiny_model_path):
    """Everything the report reads, produced by the real code paths named in the module doc."""
    root = tmp_path_factory.mktemp("paper-report")
    run = general_eval_run.get(tmp_path_factory.mktemp("general-eval"), smollm2_path,
                               tiny_model_path)  # fmt: skip
    assert run.rc == 0, run.printed
    export = root / "export"
    assert main(["export", str(run.run_dir), "--out", str(export)]) == 0
    sink = JsonlSink(run.run_dir / "metrics.jsonl")
    for step in range(1, 9):
        metrics = {"rollout/reward_mean": step / 10, "rollout/first_try_success": 0.25,
                   "learner/kl": 0.001 * step, "rollout/second_try_success": step / 10,
                   "rollout/reflection_tokens_mean": 40.0 - 4 * step,
                   "timing/step_s": 10.0}  # fmt: skip
        sink.write(step, metrics, 1.7e9)
    sink.close()
    vanilla = scripted_eval(smollm2_path, smollm2_path, "vanilla", root / "eval-vanilla")
    trained = scripted_eval(str(export), smollm2_path, "trained", root / "eval-trained")
    return {"root": root, "run": run, "export": export, "vanilla": vanilla, "trained": trained}


@pytest.mark.slow  # the shared eval-general run (~30 s)
def test_the_scripted_evals_are_what_the_tables_should_show(inputs):
    v, t = inputs["vanilla"], inputs["trained"]
    assert (v["first_try_accuracy"], v["second_try_accuracy"]) == (0.25, 0.25)
    assert (t["first_try_accuracy"], t["second_try_accuracy"]) == (0.5, 0.75)
    assert v["first_try_errors"] == {"invalid_equation": 0.25, "missed_target": 0.25,
                                     "wrong_numbers": 0.25}  # fmt: skip
    assert v["trained"] is None and t["trained"]["step"] == general_eval_run.STEP
    assert v["avg_reflection_tokens"] > 5 * t["avg_reflection_tokens"] > 0


@pytest.mark.slow  # the shared eval-general run (~30 s)
def test_full_report(inputs, smollm2_path, capsys):
    root, run = inputs["root"], inputs["run"]
    out = root / "report"
    trained = root / "eval-trained" / "results.json"  # a file, the others directories
    argv = ["paper-report", str(run.run_dir), str(root / "eval-vanilla"), str(trained),
            str(run.out), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 result files used (0 ignored)" in printed
    md = (out / "report.md").read_text()

    # Table 2: one row, the trained result paired with its base model's vanilla result.
    assert "## Table 2: Countdown (math equations), first and second try" in md
    assert f"| `{smollm2_path}` | 4 / 4 | 25.0% | 25.0% | 50.0% | 75.0% |" in md
    # Table 1 and 4 (APIGen) had no input: marked missing with the commands to run.
    table1 = md.split("## Table 1")[1].split("## Table 2")[0]
    assert "_missing: `rrr eval --config CONFIG data.task=apigen --out DIR`" in table1
    table4 = md.split("## Table 4")[1].split("## Table 5")[0]
    assert "_missing:" in table4 and "data.task=apigen" in table4
    # Table 3 from the real eval-general run, and the paper's benchmarks it did not run.
    table3 = md.split("## Table 3")[1].split("## Table 4")[0]
    assert "| rrr_local_arith | acc,none | 10 |" in table3 and "**YES**" in table3
    assert "_missing: paper benchmarks not run: MMLU-Pro, GSM8K, HellaSwag, MATH" in table3
    # Table 5: first-try error shares, the paper's column order.
    assert "| model | invalid_equation | wrong_numbers | missed_target |" in md
    assert f"| Vanilla `{smollm2_path}` | 25.0% | 25.0% | 25.0% |" in md
    assert f"| Trained `{smollm2_path}` | 0.0% | 25.0% | 25.0% |" in md
    # Figure 2: reflections with their lengths, before and after.
    fig = md.split("## Figure 2")[1].split("## Training curves")[0]
    v_len = inputs["vanilla"]["avg_reflection_tokens"]
    assert f"**Before (vanilla)**: average reflection length {v_len:.1f} tokens" in fig
    assert "I am sorry for the confusion." in fig and "Use each number once." in fig
    assert re.search(r"> \(\d+ tokens, retry fixed\) Use each number once\.", fig)
    # Training curves: the summary and the PNG drawn by `rrr report`'s code.
    curves = md.split("## Training curves")[1]
    assert "steps: 8 (step 1 to 8)" in curves
    png = out / f"curves-{run.run_dir.name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png.name})" in curves
    # Sources: each file's role and the rule that decided it.
    assert "| task_eval | vanilla | recorded by rrr eval (not an rrr-trained model) |" in md
    assert f"| task_eval | trained | recorded by rrr eval (step {general_eval_run.STEP}) |" in md
    # Tables 1, 4, Table 3's four paper benchmarks and the transfer table (one task only)
    assert md.count("_missing") == 4

    page = (out / "report.html").read_text()
    assert (
        page.startswith("<!DOCTYPE html>") and page.count("<table>") == 4
    )  # Tables 2, 3, 5, sources
    assert '<img alt="training curves of run" src="data:image/png;base64,' in page
    assert "<em>missing: <code>rrr eval" in page and "|---|" not in page


@pytest.mark.slow  # the shared eval-general run (~30 s)
def test_everything_missing_but_a_training_run(inputs):
    out = inputs["root"] / "report-train-only"
    assert main(["paper-report", str(inputs["run"].run_dir / "metrics.jsonl"),
                 "--out", str(out)]) == 0  # fmt: skip
    md = (out / "report.md").read_text()
    for part in ("## Table 1", "## Table 2", "## Table 3", "## Table 4", "## Table 5",
                 "## Figure 2"):  # fmt: skip
        section = md.split(part)[1].split("\n## ")[0]
        assert "_missing: " in section, part
    assert "rrr eval-general --model VANILLA --model TRAINED" in md
    assert "steps: 8" in md and "curves-run.png" in md


@pytest.mark.slow  # the shared eval-general run (~30 s)
def test_roles_of_older_results_and_explicit_flags(inputs, tmp_path):
    # An older results.json without "trained": the model directory (an rrr export) decides.
    old = dict(inputs["trained"])
    del old["trained"]
    evaluation.write_results(old, tmp_path / "old-trained")
    src = pr.load_source(tmp_path / "old-trained" / "results.json")
    assert (src.kind, src.role) == ("task_eval", "trained") and "rrr export" in src.why
    assert src.data["trained"]["base_model"] == inputs["vanilla"]["model"]
    unknown = {**dict(inputs["vanilla"]), "model": "org/some-model"}
    del unknown["trained"]
    evaluation.write_results(unknown, tmp_path / "old-vanilla")
    src = pr.load_source(tmp_path / "old-vanilla" / "results.json")
    assert src.role == "vanilla" and src.why.startswith("assumed")
    # --trained overrides whatever the file says.
    out = tmp_path / "report"
    assert main(["paper-report", "--trained", str(inputs["root"] / "eval-vanilla"),
                 "--out", str(out)]) == 0  # fmt: skip
    md = (out / "report.md").read_text()
    assert "| task_eval | trained | given with --trained |" in md
    assert "| - / 4 | _missing_ | _missing_ | 25.0% | 25.0% |" in md


def test_not_rrr_files_are_ignored_and_bad_paths_fail(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"hello": 1}))
    assert main(["paper-report", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert "0 result files used (1 ignored)" in capsys.readouterr().out
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| ignored | - | not an rrr results file |" in md
    assert main(["paper-report", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["paper-report"]) == 2


def test_pairing_by_base_model():
    def src(task, role, model, base=None):
        data = {"task": task, "model": model, "trained": {"base_model": base} if base else None}
        return pr.Source(Path(f"/r/{model}/results.json"), "task_eval", data, role)

    a, b = src("countdown", "vanilla", "org/a"), src("countdown", "vanilla", "org/b")
    tb = src("countdown", "trained", "/x/export-b", base="org/b")
    lone = src("apigen", "vanilla", "org/a")
    pairs = pr.pair_results([a, b, tb, lone])
    assert pairs["countdown"] == [(b, tb), (a, None)]
    assert pairs["apigen"] == [(lone, None)]
    # No known base: paired with the only vanilla result of its task.
    t2 = src("apigen", "trained", "/x/e2")
    assert pr.pair_results([lone, t2])["apigen"] == [(lone, t2)]


def test_html_converter():
    md = ("# T\n\npara _em `a_b` x_ **b** <tag>\n\n| h1 | h2 |\n|---|---|\n| `c|d` | 2 |\n\n"
          "- one\n- two\n\n> quote &amp; more\n\n```\nx < y\n```\n")  # fmt: skip
    page = pr.markdown_to_html(md)
    assert "<h1>T</h1>" in page
    assert "<p>para <em>em <code>a_b</code> x</em> <strong>b</strong> &lt;tag&gt;</p>" in page
    assert "<tr><th>h1</th><th>h2</th></tr>" in page and "<td>2</td>" in page
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in page
    assert "<blockquote>quote &amp; more</blockquote>" in page
    assert "<pre><code>x &lt; y</code></pre>" in page
