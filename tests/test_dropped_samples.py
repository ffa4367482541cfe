"""Samples whose reward is unknown leave the batch instead of being trained as bad reflections
(issue 15, fix 1), and online first attempts that cannot be judged are skipped and counted
(fix 4).

Episodes run on a scripted generator (deterministic control flow, as in test_episodes.py); the
verifier is the real one (`verify_items`, and once the real Ray pool with a real time-out), and
the batch is the learner's own `batch_from_episodes`.
"""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from transformers import AutoTokenizer

from rrr.actors.verifier_pool import VERIFIER_ERROR, LocalVerifier
from rrr.core.chat import ChatRenderer
from rrr.core.config import EpisodeConfig
from rrr.core.episodes import (
    CONTEXT_OVERFLOW,
    SOLVED_BEFORE_REWARD,
    EpisodeEngine,
    Failure,
    drop_reason,
)
from rrr.core.generation import GenRequest, Sample
from rrr.core.grpo import group_advantages
from rrr.core.tasks import get_task
from rrr.core.tasks.countdown import CountdownTask
from rrr.core.train_batch import batch_from_episodes, build_train_batch, valid_group_advantages

ROWS = [{"nums": [1, 2, 3], "target": 6}, {"nums": [2, 5, 7], "target": 14}]
SOLUTIONS = {6: r"\boxed{1+2+3}", 14: r"\boxed{2+5+7}"}


class FaultyCountdown(CountdownTask):
    """Countdown whose verifier crashes on 'CRASH' and hangs on 'HANG'."""

    def verify(self, row, response):
        if "CRASH" in response:
            raise RuntimeError("boom")
        if "HANG" in response:
            time.sleep(60)
        return super().verify(row, response)


class Scripted:
    """Reflections are 'hint <k>' (k counts up over the run), or for k in `long` 3,000 words
    then 'hint <k>' (cut at the room left: it fills the context). The retry after hint k is
    the solution when k is in `solves`, `special[k]` when given ('CRASH', 'HANG'), else a wrong
    answer. A first attempt is wrong, or 'CRASH' for targets in `crash_first`."""

    def __init__(self, tok, solves, special=None, crash_first=(), long=()):
        self.tok, self.solves, self.special = tok, solves, special or {}
        self.crash_first, self.long = set(crash_first), set(long)
        self.counter = itertools.count()

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        out = []
        for req in requests:
            text = self.tok.decode(req.prompt_ids)
            last_user = text.rsplit("<|im_start|>user", 1)[1]
            target = int(text.split("equals ")[1].split(".")[0]) if "equals " in text else 0
            group = []
            for _ in range(req.n):
                if "Reflect on what went wrong" in last_user:
                    k = next(self.counter)
                    reply = ("pad " * 3000 if k in self.long else "") + f"hint {k}"
                elif "hint " not in text:  # a first attempt (online mode)
                    reply = "CRASH" if target in self.crash_first else r"\boxed{1}"
                else:
                    hint = int(text.rsplit("hint ", 1)[1].split("<")[0])
                    reply = self.special.get(
                        hint, SOLUTIONS[target] if hint in self.solves else r"\boxed{1}"
                    )
                ids = self.tok.encode(reply, add_special_tokens=False)[: req.max_tokens]
                group.append(Sample(ids, [-0.5] * len(ids), self.tok.decode(ids), "stop"))
            out.append(group)
        return out


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def _engine(tok, gen, verifier=None, max_model_len=2048, **cfg):
    task = get_task("countdown", "qwen")
    verifier = verifier or LocalVerifier(FaultyCountdown("qwen"))
    return EpisodeEngine(task, ChatRenderer(tok), gen, verifier, EpisodeConfig(**cfg),
                         max_model_len)  # fmt: skip


def _failures(tok):
    ids = [*tok.encode(r"\boxed{9}", add_special_tokens=False), tok.eos_token_id]
    return [Failure(row, ids, r"\boxed{9}") for row in ROWS]


# ----------------------------------------------------------------------------- verifier errors


def _check_batch(batch, reason: str) -> None:
    """Hints 0..3 are row 0's group, 4..7 row 1's; hints 0 and 4 solve; the retries after
    hints 1, 5, 6 and 7 have no verdict (`reason`)."""
    reasons = [e.drop_reason for e in batch.episodes]
    assert reasons == [None, reason, None, None, None, *[reason] * 3]
    m = batch.metrics()
    assert m[f"dropped_{reason}"] == 4
    assert sum(m[f"dropped_{r}"] for r in (VERIFIER_ERROR, CONTEXT_OVERFLOW)) == 4
    assert m["reward_mean"] == 2 / 4  # over the 4 judged episodes, not 2 / 8

    train = batch_from_episodes(batch)
    # Row 0's group is normalised over its 3 judged members; row 1's has one left: no relative
    # signal (advantage 0, a zero-std group), kept for its KL term like any zero-std group.
    assert train.size == 4 and train.metrics["dropped_seqs"] == 4
    assert train.metrics["groups_under_2"] == 1 and train.metrics["frac_zero_std"] == 0.5
    want = group_advantages(torch.tensor([1.0, 0.0, 0.0]), 3).advantages
    assert torch.allclose(train.advantages, torch.cat([want, torch.zeros(1)]))
    kept = [e for e in batch.episodes if e.trainable]
    for row, e in enumerate(kept):  # the trained rows are the judged episodes, in order
        assert torch.equal(train.tokens[row, : len(e.tokens)], torch.tensor(e.tokens))
    assert (train.advantages < 0).sum() == 2  # only the two judged wrong retries are pushed down


def test_crashed_verifier_drops_the_sample_instead_of_scoring_zero(tok):
    special = {k: "CRASH" for k in (1, 5, 6, 7)}
    gen = Scripted(tok, solves={0, 4}, special=special)
    batch = _engine(tok, gen, num_reflections=4).run(_failures(tok))
    _check_batch(batch, VERIFIER_ERROR)
    assert batch.counters[VERIFIER_ERROR] == 4


@pytest.mark.slow
def test_verifier_time_out_in_the_real_pool_drops_the_sample(tok, ray_local):
    from rrr.actors.verifier_pool import VerifierPool

    # One item per batch over two actors; the hang is the last item, so nothing queues behind
    # it on its actor and only it times out.
    pool = VerifierPool(FaultyCountdown("qwen"), num_workers=2, batch_size=1, timeout_s=3)
    try:
        # Both actors up first: the deadline runs from the call, and actor start-up on a loaded
        # 2-core machine can take longer than it.
        assert ray_local.get([a.ping.remote() for a in pool.actors], timeout=120) == [True] * 2
        special = {1: "CRASH", 5: "CRASH", 6: "CRASH", 7: "HANG"}
        gen = Scripted(tok, solves={0, 4}, special=special)
        t0 = time.monotonic()
        batch = _engine(tok, gen, verifier=pool, num_reflections=4).run(_failures(tok))
        assert time.monotonic() - t0 < 30  # the hang was cut by the deadline
        assert pool.counters[VERIFIER_ERROR] == 4
        assert batch.episodes[7].verdicts[0].detail == "verifier actor failed"  # the time-out
        _check_batch(batch, VERIFIER_ERROR)
    finally:
        pool.shutdown()


# ----------------------------------------------------------------------------- context overflow


def test_retry_that_overflows_the_context_is_dropped(tok):
    # The reflections after hints 1, 5, 6, 7 are cut where the context ends: no room is left for
    # their retries, which used to be scored 0.
    gen = Scripted(tok, solves={0, 4}, long={1, 5, 6, 7})
    batch = _engine(tok, gen, num_reflections=4, max_reflection_tokens=4096).run(_failures(tok))
    assert all(len(batch.episodes[i].tokens) == 2048 for i in (1, 5, 6, 7))
    assert batch.counters[CONTEXT_OVERFLOW] == 4  # four retry requests could not be made
    _check_batch(batch, CONTEXT_OVERFLOW)


def test_reflection_that_overflows_is_dropped_not_scored(tok):
    gen = Scripted(tok, solves=set())
    prompt_len = len(ChatRenderer(tok).prompt_ids(get_task("countdown").first_messages(ROWS[0])))
    engine = _engine(tok, gen, num_reflections=2, max_model_len=prompt_len + 5)
    batch = engine.run(_failures(tok))
    assert {e.drop_reason for e in batch.episodes} == {CONTEXT_OVERFLOW}
    m = batch.metrics()
    assert m["dropped_context_overflow"] == 4 and m["reward_mean"] == 0.0
    train = batch_from_episodes(batch)
    assert train.size == 0 and train.metrics["groups_under_2"] == 2


def test_chain_solved_before_the_rewarded_round_is_not_a_context_overflow(tok):
    gen = Scripted(tok, solves={1, 8})
    engine = _engine(tok, gen, num_reflections=4, retry_depth=2, rewarded_reflection=1)
    batch = engine.run(_failures(tok))
    assert batch.episodes[1].drop_reason == SOLVED_BEFORE_REWARD  # hint 1 solved round 0
    assert CONTEXT_OVERFLOW not in batch.counters
    assert batch.metrics()["dropped_solved_before_reward"] == 1
    assert batch.metrics()["dropped_context_overflow"] == 0


@pytest.mark.parametrize(
    ("rewarded", "solved", "incident", "incident_round", "rewarded_round", "want"),
    [
        (True, False, None, 0, 0, None),
        (True, True, None, 0, 0, None),
        (True, False, VERIFIER_ERROR, 0, 0, VERIFIER_ERROR),
        (True, False, CONTEXT_OVERFLOW, 1, 0, CONTEXT_OVERFLOW),  # cut short: reward unknown
        (True, True, VERIFIER_ERROR, 0, 0, None),  # a later success settles it at 1
        (True, True, VERIFIER_ERROR, 0, 1, VERIFIER_ERROR),  # before the rewarded round
        (False, False, CONTEXT_OVERFLOW, 0, 0, CONTEXT_OVERFLOW),
        (False, True, None, 0, 1, SOLVED_BEFORE_REWARD),
    ],
)
def test_drop_reason(rewarded, solved, incident, incident_round, rewarded_round, want):
    got = drop_reason(
        rewarded=rewarded,
        solved=solved,
        incident=incident,
        incident_round=incident_round,
        rewarded_round=rewarded_round,
    )
    assert got == want


# ----------------------------------------------------------------------------- group statistics


def test_valid_group_advantages_normalise_over_the_judged_members_only():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    valid = torch.tensor([1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    adv, short = valid_group_advantages(rewards, valid, 4)
    # group 0: [1, 0, 1] judged; group 1: [0] alone; group 2: [0, 0, 0] all equal
    want0 = group_advantages(torch.tensor([1.0, 0.0, 1.0]), 3).advantages
    assert torch.allclose(adv.advantages[[0, 1, 3]], want0)
    assert torch.equal(adv.advantages[[2, 5, 6, 7]], torch.zeros(4))
    assert adv.keep.tolist() == valid.tolist()
    assert short == 1 and adv.frac_zero_std == pytest.approx(2 / 3)
    assert adv.reward_mean == pytest.approx(2 / 7)
    dropped, _ = valid_group_advantages(rewards, valid, 4, drop_zero_std=True)
    assert dropped.keep.tolist() == [True, True, False, True] + [False] * 8
    # All valid: exactly group_advantages.
    full, short = valid_group_advantages(rewards, torch.ones(12, dtype=torch.bool), 4)
    ref = group_advantages(rewards, 4)
    assert short == 0 and torch.allclose(full.advantages, ref.advantages)
    assert full.frac_zero_std == pytest.approx(ref.frac_zero_std)
    assert full.reward_mean == pytest.approx(ref.reward_mean)


def test_build_train_batch_valid_leaves_the_statistics_too():
    tokens = [[1, 2, 3, 4]] * 4
    spans, logprobs = [(2, 4)] * 4, [[-0.1, -0.2]] * 4
    b = build_train_batch(tokens, spans, logprobs, [1.0, 0.0, 0.0, 0.0], 4,
                          valid=[True, True, False, False])  # fmt: skip
    assert b.size == 2
    assert torch.allclose(b.advantages, group_advantages(torch.tensor([1.0, 0.0]), 2).advantages)
    with pytest.raises(ValueError, match="valid"):
        build_train_batch(tokens, spans, logprobs, [0.0] * 4, 4, valid=[True])


# ----------------------------------------------------------------------------- online mode


def test_online_prompt_longer_than_the_context_is_skipped_and_counted(tok):
    """Used to raise IndexError (`group[0]` of an empty sample list)."""
    renderer, task = ChatRenderer(tok), get_task("countdown", "qwen")
    long_row = {"nums": [11, 22, 33, 44, 55, 66, 77, 88, 99, 111], "target": 999}
    short_len = len(renderer.prompt_ids(task.first_messages(ROWS[0])))
    long_len = len(renderer.prompt_ids(task.first_messages(long_row)))
    assert long_len > short_len + 10
    engine = _engine(tok, Scripted(tok, solves=set()), max_model_len=short_len + 10)
    rows = [ROWS[0], long_row]
    got = engine.online_first_attempts(rows)
    assert [f.row for f in got.failures] == [ROWS[0]]
    assert got.drawn == 2 and got.solved == 0 and got.skipped[CONTEXT_OVERFLOW] == 1
    assert got.first_try_success == 0.0  # 0 of the 1 judged, not 1 - 1/2
    assert got.metrics()["skipped_first_context_overflow"] == 1.0
    assert [f.row for f in engine.online_failures(rows)] == [ROWS[0]]


def test_online_first_attempt_with_verifier_error_is_not_a_failure(tok):
    gen = Scripted(tok, solves=set(), crash_first={14})
    got = _engine(tok, gen).online_first_attempts(ROWS)
    assert [f.row for f in got.failures] == [ROWS[0]]
    assert got.skipped[VERIFIER_ERROR] == 1 and got.metrics()["skipped_first_verifier_error"] == 1
