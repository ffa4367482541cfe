"""The evaluation procedure of issue 23 with a keyed stand-in for the sampler: k samples per
distinct problem, a reflection and retry per failed sample, noise keyed on (eval.seed,
problem, sample, stage) and nothing else, one size key, a sync before every periodic eval.
tests/test_eval_crn.py runs the same procedure on a real vLLM engine."""

from __future__ import annotations

import json
import re

import pytest
from transformers import AutoTokenizer

from rrr.actors.verifier_pool import LocalVerifier
from rrr.core.chat import ChatRenderer
from rrr.core.config import ConfigError, load_config
from rrr.core.crn import noise_key
from rrr.core.episodes import EpisodeEngine
from rrr.core.generation import GenRequest, Sample
from rrr.core.tasks import get_task
from rrr.driver import evaluate as evaluate_module
from rrr.driver.evaluate import chunk_spans, evaluate, load_eval_rows, run_placebo

ROWS = [{"nums": [1, 2], "target": 3}, {"nums": [2, 5], "target": 7}, {"nums": [4, 4], "target": 8}]


class Keyed:
    """Output is a function of the request's noise key only (as keyed sampling on fixed weights
    is): a first try is right when key % 3 == 0, a retry when key % 2 == 0."""

    def __init__(self, tok):
        self.tok, self.requests = tok, []

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        out = []
        for req in requests:
            self.requests.append(req)
            text = self.tok.decode(req.prompt_ids)
            last_user = text.rsplit("<|im_start|>user", 1)[1]
            target = int(text.split("equals ")[1].split(".")[0]) if "equals " in text else 0
            nums = text.rsplit("Using the numbers", 1)[-1]
            group = []
            for j in range(req.n):
                key = req.noise_keys[j] if req.noise_keys else 1
                if "Reflect on what went wrong" in last_user:
                    reply = f"hint {key % 97}"
                elif "hint" in text:
                    reply = _answer(nums, target) if key % 2 == 0 else r"\boxed{1}"
                else:
                    reply = _answer(nums, target) if key % 3 == 0 else r"\boxed{1}"
                ids = self.tok.encode(reply, add_special_tokens=False)
                group.append(Sample(ids, [], self.tok.decode(ids), "stop"))
            out.append(group)
        return out


def _answer(text: str, target: int) -> str:
    for row in ROWS:
        if row["target"] == target:
            return r"\boxed{" + "+".join(map(str, row["nums"])) + "}"
    return r"\boxed{0}"


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def _run(tok, rows, overrides, first_tries_from=None):
    cfg = load_config(None, ["eval.temperature=0.7", "eval.samples_per_problem=4", *overrides])
    task = get_task("countdown", "qwen")
    gen = Keyed(tok)
    engine = EpisodeEngine(task, ChatRenderer(tok), gen, LocalVerifier(task), cfg.episode, 2048)
    return evaluate(cfg, engine, rows, first_tries_from=first_tries_from), gen, task


def test_first_tries_reused_from_a_reference_only_the_reflection_and_retry_are_new(tok):
    ref, _, task = _run(tok, ROWS, ["eval.seed=7"])
    assert ref["first_tries"] == "sampled"
    ref = json.loads(json.dumps(ref))  # what --first-tries-from reads back
    out, gen, _ = _run(tok, ROWS, ["eval.seed=8"], first_tries_from=ref)
    assert out["first_tries"] == "reused"
    failed = sum(4 - q["first"] for q in ref["per_query"])
    assert len(gen.requests) == 2 * failed  # no first try was sampled: reflections + retries
    for q, r, row in zip(out["per_query"], ref["per_query"], ROWS):
        assert q["first_outcomes"] == r["first_outcomes"]
        assert q["failed_first_ids"] == r["failed_first_ids"]
        key = task.row_key(row)
        retries = [noise_key(8, key, j, "retry:0:0") % 2 == 0 for j in range(4)]
        assert q["second_outcomes"] == [int(f or t) for f, t in zip(r["first_outcomes"], retries)]
    assert out["first_try_error_counts"] == ref["first_try_error_counts"]  # verified again
    # the reflection sees the reference's failed attempt, token for token
    first_failed = next(ids for q in ref["per_query"] for ids in q["failed_first_ids"] if ids)
    assert any(tok.decode(first_failed) in tok.decode(r.prompt_ids) for r in gen.requests)
    with pytest.raises(ConfigError, match="samples_per_problem"):
        _run(tok, ROWS, ["eval.samples_per_problem=2"], first_tries_from=ref)
    with pytest.raises(ConfigError, match="no first tries of"):
        _run(tok, [{"nums": [3, 3], "target": 6}], [], first_tries_from=ref)


def test_k_samples_each_failure_reflects_and_retries_with_its_own_keys(tok):
    results, gen, task = _run(tok, ROWS, ["eval.seed=7"])
    assert results["num_queries"] == 3 and results["samples_per_problem"] == 4
    assert results["num_samples"] == 12 and results["noise"] == "keyed"
    for q, row in zip(results["per_query"], ROWS):
        key = task.row_key(row)
        firsts = [noise_key(7, key, j, "first") % 3 == 0 for j in range(4)]
        retries = [noise_key(7, key, j, "retry:0:0") % 2 == 0 for j in range(4)]
        assert q["first_outcomes"] == [int(f) for f in firsts]
        assert q["second_outcomes"] == [int(f or r) for f, r in zip(firsts, retries)]
        assert q["first"] == sum(firsts)
    # One first-try request per problem (n = k), then one reflection and one retry per
    # failed sample, every one with its key.
    failed = sum(4 - q["first"] for q in results["per_query"])
    assert [r.n for r in gen.requests[:3]] == [4, 4, 4]
    assert len(gen.requests) == 3 + 2 * failed
    assert all(r.noise_keys is not None and len(r.noise_keys) == r.n for r in gen.requests)
    total_first = sum(q["first"] for q in results["per_query"])
    assert results["first_try_accuracy"] == pytest.approx(total_first / 12)
    assert 0 <= results["first_try_interval"][0] <= results["first_try_accuracy"]


def test_same_weights_same_outcomes_whatever_came_before_and_in_any_order(tok):
    a, _, _ = _run(tok, ROWS, ["eval.seed=3"])
    b, _, _ = _run(tok, list(reversed(ROWS)), ["eval.seed=3"])
    assert {q["key"]: q["second_outcomes"] for q in a["per_query"]} == {
        q["key"]: q["second_outcomes"] for q in b["per_query"]
    }
    c, _, _ = _run(tok, ROWS, ["eval.seed=4"])  # another seed is other noise
    assert [q["first_outcomes"] for q in a["per_query"]] != [
        q["first_outcomes"] for q in c["per_query"]
    ]


def test_greedy_evaluation_draws_no_noise(tok):
    cfg = load_config(None, ["eval.temperature=0"])
    task = get_task("countdown", "qwen")
    gen = Keyed(tok)
    engine = EpisodeEngine(task, ChatRenderer(tok), gen, LocalVerifier(task), cfg.episode, 2048)
    results = evaluate(cfg, engine, ROWS)
    assert results["noise"] == "greedy" and all(r.noise_keys is None for r in gen.requests)


def test_chunks_cover_every_problem_once_near_equal_and_not_too_small():
    # replicate-cpu: 517 problems x 4 on one CPU worker (>= 128 samples a call): 16 calls.
    spans = chunk_spans(517, 4, 128, 20)
    assert [i for s in spans for i in s] == list(range(517))
    assert len(spans) == 16 and {len(s) for s in spans} <= {32, 33}
    assert chunk_spans(100, 1, 1, 20) == [range(5 * i, 5 * i + 5) for i in range(20)]
    assert chunk_spans(3, 4, 1, 20) == [range(0, 1), range(1, 2), range(2, 3)]  # never empty
    assert chunk_spans(32, 1, 128, 20) == [range(0, 32)]  # small: one call, as before
    assert chunk_spans(0, 4, 128, 20) == []


class Calls(Keyed):
    """Keyed, counting its generate calls."""

    def __init__(self, tok):
        super().__init__(tok)
        self.calls = 0

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        self.calls += 1
        return super().generate(requests)


def _evaluate(tok, overrides, first_tries_from=None):
    cfg = load_config(None, ["eval.temperature=0.7", "eval.samples_per_problem=4",
                             "eval.seed=7", *overrides])  # fmt: skip
    task = get_task("countdown", "qwen")
    gen = Calls(tok)
    engine = EpisodeEngine(task, ChatRenderer(tok), gen, LocalVerifier(task), cfg.episode, 2048)
    results = evaluate(cfg, engine, ROWS, first_tries_from=first_tries_from)
    results.pop("seconds")
    return results, gen


def test_chunked_evaluation_changes_no_outcome_and_its_bars_count_every_sample(
    tok, monkeypatch, capsys
):
    """Issue 31: the bar moves per chunk of problems (one generate call each); the chunks leave
    every outcome, text and example as one call over everything gives, and the bars go to
    stderr only when logging.progress is on."""
    whole, gen = _evaluate(tok, ["logging.progress=false"])
    assert gen.calls == 3  # first tries, reflections, retries: one call each
    assert capsys.readouterr() == ("", "")  # progress off: nothing at all
    # One problem (first tries) or one failed sample (reflection + retry) per call.
    monkeypatch.setitem(evaluate_module.CHUNK_PER_WORKER, "cpu", 1)
    monkeypatch.setattr(evaluate_module, "PROGRESS_STEPS", 1000)
    chunked, gen = _evaluate(tok, ["logging.progress=true"])
    failed = whole["num_samples"] - whole["first_try_correct"]
    assert 0 < failed < whole["num_samples"]  # both phases have work: the test has teeth
    assert gen.calls == len(ROWS) + 2 * failed
    assert chunked == whole
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays the commands' JSON and tables
    # Each bar ends at all n x k samples (the 2nd try's starts at the first tries that were right).
    assert re.search(r"eval 1st try: 100%.*\b12/12\b", err)
    assert re.search(r"eval 2nd try: 100%.*\b12/12\b", err)
    assert re.search(rf"eval 2nd try:\s+\d+%.*\b{12 - failed}/12\b", err)
    # Reused first tries: no first-try bar, the same second tries.
    reused, _ = _evaluate(tok, ["logging.progress=true"], first_tries_from=json.loads(
        json.dumps(whole)))  # fmt: skip
    assert [q["second_outcomes"] for q in reused["per_query"]] == [
        q["second_outcomes"] for q in whole["per_query"]
    ]
    err = capsys.readouterr().err
    assert "eval 1st try" not in err and re.search(r"eval 2nd try: 100%.*\b12/12\b", err)


def test_held_out_problems_are_distinct_and_the_universe_is_counted():
    source = ("gen:countdown?n=500&seed=1&min_nums=2&max_nums=2&min_num=1&max_num=50"
              "&min_target=2&max_target=100&ops=+&part=heldout")  # fmt: skip
    cfg = load_config(None, [f"data.eval_source={source}"])
    rows, info = load_eval_rows(cfg, get_task("countdown", "qwen"))
    # Issue 23: 500 draws with replacement hold 323 distinct problems of 517.
    counts = (info["rows_read"], info["distinct_problems"], info["duplicates_dropped"])
    assert counts == (500, 323, 177)
    assert info["source_universe"] == 517
    keys = [get_task("countdown", "qwen").row_key(r) for r in rows]
    assert len(set(keys)) == len(keys) == 323
    cfg = load_config(None, [f"data.eval_source={source}", "data.eval_limit=50"])
    assert len(load_eval_rows(cfg, get_task("countdown", "qwen"))[0]) == 50


def test_one_size_key_and_samples_need_sampling():
    from rrr.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"logging\.eval_size: removed; set data\.eval_limit"):
        load_config(None, ["logging.eval_size=64"])
    with pytest.raises(ConfigError, match=r"eval\.samples_per_problem"):
        load_config(None, ["eval.samples_per_problem=4"])  # greedy by default


def test_periodic_eval_steps_sync_first():
    from rrr.driver.train import sync_due

    cfg = load_config(
        None, ["sync.every_n_steps=4", "logging.eval_every=3", "learner.max_steps=10"]
    )
    # Scheduled syncs 4, 8; evaluations 3, 6, 9 and the last step 10 sync too.
    assert [s for s in range(1, 11) if sync_due(cfg, s)] == [3, 4, 6, 8, 9, 10]
    cfg = load_config(None, ["sync.every_n_steps=1"])
    assert all(sync_due(cfg, s) for s in range(1, 6))


def test_placebo_cli_from_existing_samples(tmp_path, capsys):
    """`rrr eval --placebo --placebo-from` reuses a results.json with 2k samples per problem."""
    import random

    from rrr.driver.cli import main

    rng = random.Random(0)
    per_query = []
    for i in range(300):
        p = rng.random()
        o = [int(rng.random() < p) for _ in range(4)]
        per_query.append({"key": f"p{i}", "samples": 4, "first": sum(o), "second": sum(o),
                          "first_outcomes": o, "second_outcomes": o})  # fmt: skip
    results = {"model": "m", "num_queries": 300, "samples_per_problem": 4, "per_query": per_query}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "placebo"
    assert main(["eval", "--placebo", "--placebo-from", str(tmp_path), "--out", str(out),
                 "eval.temperature=0.7", "eval.samples_per_problem=2"]) == 0  # fmt: skip
    p = json.loads((out / "placebo.json").read_text())
    assert p["splits"] == 200 and p["k"] == 2 and p["pool"] == 4
    assert 0.02 <= p["first"]["false_positive_rate"] <= 0.09
    assert "false positives" in capsys.readouterr().out
    assert run_placebo(results, 2, 50)["splits"] == 50
    # k = 4 from 4 samples a problem cannot split: a clear error naming the key, no traceback
    assert main(["eval", "--placebo", "--placebo-from", str(tmp_path), "--out", str(out),
                 "eval.temperature=0.7", "eval.samples_per_problem=4"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "eval.samples_per_problem=4" in err and "needs 2k = 8" in err and "=2 or lower" in err
    assert "Traceback" not in err
