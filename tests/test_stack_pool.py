"""Generation stacks kept between runs (rrr/driver/stack.py, StackPool): the test session's
end-to-end runs share rollout workers and verifiers per configuration, so a kept stack must
sample exactly what a freshly started one does, whatever the run before it did to its weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rrr.core.config import load_config
from rrr.core.generation import GenRequest
from rrr.driver.cli import main
from rrr.driver.stack import StackPool, _stack_key, shared_stacks

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "configs/smoke-cpu.yaml")


def test_the_key_counts_what_builds_a_stack_and_nothing_else() -> None:
    base = load_config(PRESET, [])
    key = _stack_key(base, "/m")
    assert key == _stack_key(load_config(PRESET, ["episode.num_reflections=3",
                                                  "learner.lr=1e-3", "eval.max_tokens=5",
                                                  "rollout.max_staleness=1",
                                                  "rollout.max_restarts=0"]), "/m")
    for change in ("rollout.kv_cache_gib=0.5", "rollout.seed=7", "model.max_model_len=512",
                   "verifier.num_workers=3", "cluster.colocate=true", "data.fewshot=0"):
        assert _stack_key(load_config(PRESET, [change]), "/m") != key, change
    assert _stack_key(base, "/other") != key


class _Fleet:
    def __init__(self, restarts: int = 0) -> None:
        self.restarts, self.resets = restarts, 0

    def reset_to_base(self) -> None:
        self.resets += 1


class _Stack:
    """What StackPool touches of a Stack (the real one: the test below)."""

    def __init__(self, restarts: int = 0, placement_group: object = None) -> None:
        self.fleet, self.placement_group, self.down = _Fleet(restarts), placement_group, False

    def shutdown(self) -> None:
        self.down = True


def test_the_pool_keeps_the_newest_clean_stack_and_frees_the_rest() -> None:
    pool = StackPool(max_idle=1)
    a, b = _Stack(), _Stack()
    pool.give_back("A", a)
    assert a.fleet.resets == 1 and not a.down and pool.take("A") is a
    pool.give_back("A", a)
    pool.give_back("B", b)  # over max_idle: the oldest goes
    assert a.down and list(pool.idle) == ["B"]
    assert pool.take("C") is None and b.down and not pool.idle  # a miss frees the kept ones
    for unfit in (_Stack(restarts=1), _Stack(placement_group=object())):
        pool.give_back("D", unfit)
        assert unfit.down and unfit.fleet.resets == 0 and not pool.idle
    assert (pool.reused, pool.started) == (1, 0)


def test_a_kept_stack_samples_exactly_as_a_fresh_one(ray_local, tiny_model_path, sample_data,
                                                     tmp_path, capsys):  # fmt: skip
    """An evaluation on a fresh stack; then the kept stack's weights are changed (as a training
    run changes them) and it is handed back; a second evaluation on the kept stack gives the
    same outcomes and texts, sample for sample."""
    overrides = [
        f"model.name_or_path={tiny_model_path}", "model.max_model_len=1024",
        f"data.eval_source={sample_data / 'countdown_sample.jsonl'}", "data.eval_limit=3",
        "eval.max_tokens=12", "eval.max_reflection_tokens=8", "eval.temperature=0.8",
        "eval.samples_per_problem=2", "rollout.kv_cache_gib=0.25",
        "rollout.in_process_engine=true", "logging.progress=false",
        "rollout.seed=11",  # a key of its own: no other test's kept stack is taken here
    ]  # fmt: skip
    cfg = load_config(PRESET, overrides)
    with shared_stacks() as pool:  # the innermost pool: this test's own
        assert main(["eval", "--config", PRESET, "--out", str(tmp_path / "a"), *overrides]) == 0
        assert (pool.started, pool.reused, len(pool.idle)) == (1, 0, 1)
        (key,) = pool.idle
        assert key == _stack_key(cfg, tiny_model_path)
        stack = pool.take(key)
        greedy = [GenRequest(list(range(5, 25)), n=1, temperature=0.0, max_tokens=12)]
        before = stack.fleet.generate(greedy)[0][0].token_ids
        state = {name: torch.randn_like(t) * 0.05 for name, t in _weights(tiny_model_path).items()}
        stack.fleet.load_state_dict(state)
        assert stack.fleet.generate(greedy)[0][0].token_ids != before  # the change shows
        pool.give_back(key, stack)  # resets to the base model
        pool.reused = 0
        assert stack.fleet.group.max_restarts == 3  # the preset's
        # A run setting its own restart budget takes the kept stack with that budget.
        again = [*overrides, "rollout.max_restarts=1"]
        assert main(["eval", "--config", PRESET, "--out", str(tmp_path / "b"), *again]) == 0
        assert (pool.started, pool.reused) == (1, 1)
        kept = pool.idle[key]
        assert kept.fleet.group.max_restarts == 1
        assert kept.fleet.generate(greedy)[0][0].token_ids == before
    capsys.readouterr()
    a, b = (json.loads((tmp_path / x / "results.json").read_text()) for x in "ab")
    assert a["per_query"] == b["per_query"]
    texts = [[(x["first_try"], x["reflection"], x["retry"]) for x in r["examples"]]
             for r in (a, b)]  # fmt: skip
    assert texts[0] and texts[0] == texts[1]
    assert len({t[0] for t in texts[0]}) > 1  # sampled, not one text repeated


def _weights(model_path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (path,) = Path(model_path).glob("*.safetensors")
    return load_file(str(path))
