"""Episode logic (phases, batching, retry depth, rewards, overflow) with a scripted generator.

The generator here is a deterministic stand-in for the sampler so the control flow can be
checked exactly; tests/test_rollout_real.py runs the same engine on a real vLLM worker.
"""

from __future__ import annotations

import itertools

import pytest
from transformers import AutoTokenizer

from rrr.actors.verifier_pool import LocalVerifier
from rrr.core.chat import ChatRenderer
from rrr.core.config import EpisodeConfig
from rrr.core.episodes import CONTEXT_OVERFLOW, EpisodeEngine, Failure
from rrr.core.generation import GenRequest, Sample
from rrr.core.tasks import get_task

ROWS = [{"nums": [1, 2, 3], "target": 6}, {"nums": [2, 5, 7], "target": 14}]
SOLUTIONS = {6: r"\boxed{1+2+3}", 14: r"\boxed{2+5+7}"}


class Scripted:
    """Reflections are 'hint <k>'; a retry is correct when its chain's reflection number is in
    `solves` (per round), else wrong. Records every call."""

    def __init__(self, tok, solves, version=0):
        self.tok, self.solves, self.calls = tok, solves, []
        self.counter = itertools.count()
        self.version = version  # stamped on every sample, as a vLLM engine stamps its weights'

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        self.calls.append(requests)
        out = []
        for req in requests:
            text = self.tok.decode(req.prompt_ids)
            last_user = text.rsplit("<|im_start|>user", 1)[1]
            group = []
            for _ in range(req.n):
                if "Reflect on what went wrong" in last_user:
                    reply = f"hint {next(self.counter)}"
                else:
                    hint = int(text.rsplit("hint ", 1)[1].split("<")[0])
                    target = int(last_user.split("equals ")[1].split(".")[0])
                    reply = SOLUTIONS[target] if hint in self.solves else r"\boxed{1}"
                ids = self.tok.encode(reply, add_special_tokens=False)[: req.max_tokens]
                group.append(Sample(ids, [-0.5] * len(ids), self.tok.decode(ids), "stop",
                                    version=self.version))  # fmt: skip
            out.append(group)
        return out


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def _engine(tok, gen, **cfg):
    task = get_task("countdown", "qwen")
    return EpisodeEngine(task, ChatRenderer(tok), gen, LocalVerifier(task),
                         EpisodeConfig(**cfg), 2048)  # fmt: skip


def _failures(tok):
    ids = [*tok.encode(r"\boxed{9}", add_special_tokens=False), tok.eos_token_id]
    return [Failure(row, ids, r"\boxed{9}") for row in ROWS]


def test_one_call_per_phase_and_group_rewards(tok):
    gen = Scripted(tok, solves={0, 3, 5})  # hints 0..3 for row 0, 4..7 for row 1
    batch = _engine(tok, gen, num_reflections=4).run(_failures(tok))
    assert len(gen.calls) == 2  # one reflect call, one retry call, for both failures
    assert [(r.n, len(gen.calls[0])) for r in gen.calls[0]] == [(4, 2), (4, 2)]
    assert len(gen.calls[1]) == 8 and all(r.n == 1 for r in gen.calls[1])
    assert batch.rewards() == [1, 0, 0, 1, 0, 1, 0, 0]
    assert [e.reflection_text for e in batch.episodes[:2]] == ["hint 0", "hint 1"]
    m = batch.metrics()
    assert m["reward_mean"] == 3 / 8 and m["second_try_success"] == 3 / 8
    for e in batch.episodes:
        assert tok.decode(e.tokens[e.span[0] : e.span[1]]) == e.reflection_text
        assert len(e.logprobs) == e.reflection_len


def test_retry_depth_two_rewards_the_first_reflection(tok):
    # Round 0 hints 0..3 (row 0) and 4..7 (row 1); round 1 gives each still-failing chain one
    # new hint. Solve chain of hint 1 at round 0 and the chain that gets hint 8 at round 1.
    gen = Scripted(tok, solves={1, 8})
    batch = _engine(tok, gen, num_reflections=4, retry_depth=2).run(_failures(tok))
    assert len(gen.calls) == 4
    assert len(gen.calls[2]) == 7  # the 7 chains that failed round 0 reflect again (n=1)
    assert all(r.n == 1 for r in gen.calls[2])
    assert batch.rewards() == [1, 1, 0, 0, 0, 0, 0, 0]
    second = batch.episodes[0]
    assert second.reflection_text == "hint 0" and len(second.verdicts) == 2
    assert [v.correct for v in second.verdicts] == [False, True]
    assert len(batch.episodes[1].verdicts) == 1  # solved at round 0, stopped


def test_every_part_carries_the_version_that_sampled_it(tok):
    class Stepping(Scripted):  # the weights change between the two retry rounds
        def generate(self, requests):
            if len(self.calls) == 3:
                self.version = 8
            return super().generate(requests)

    gen = Stepping(tok, solves={1}, version=7)
    failures = _failures(tok)
    failures[1].version = 6  # an online first attempt of row 1 (row 0's: from the dataset)
    batch = _engine(tok, gen, num_reflections=4, retry_depth=2).run(failures)
    assert batch.episodes[1].versions == {"reflect:0": 7, "retry:0": 7}  # solved at round 0
    assert batch.episodes[0].versions == {"reflect:0": 7, "retry:0": 7, "reflect:1": 7,
                                          "retry:1": 8}  # fmt: skip
    assert batch.episodes[4].versions["attempt"] == 6
    assert batch.versions() == {6, 7, 8}  # the pipeline refuses such a batch (VersionMixError)
    same = _engine(tok, Scripted(tok, solves={1}, version=3), num_reflections=4).run(_failures(tok))
    assert same.versions() == {3}


def test_rewarding_the_second_reflection(tok):
    gen = Scripted(tok, solves={8})
    batch = _engine(tok, gen, num_reflections=4, retry_depth=2, rewarded_reflection=1).run(
        _failures(tok)
    )
    assert batch.episodes[0].reflection_text == "hint 8"
    assert batch.rewards()[0] == 1 and sum(batch.rewards()) == 1


def test_context_overflow_is_counted_not_crashed(tok):
    gen = Scripted(tok, solves=set())
    prompt_len = len(ChatRenderer(tok).prompt_ids(get_task("countdown").first_messages(ROWS[0])))
    engine = _engine(tok, gen, num_reflections=2)
    engine.max_model_len = prompt_len + 5  # room for the attempt but not for the reflection
    batch = engine.run(_failures(tok))
    assert batch.counters[CONTEXT_OVERFLOW] > 0
    assert len(batch.episodes) == 4 and batch.rewards() == [0, 0, 0, 0]
    assert all(e.tokens == [] for e in batch.episodes)
