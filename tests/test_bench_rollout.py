"""bench/rollout.py's cache warm-up gives the raw replay exactly the prefixes the episode engine
had cached (issue 15: the old replay's retry prompts missed the cache the engine's hit)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rrr.actors.verifier_pool import LocalVerifier
from rrr.core.chat import ChatRenderer
from rrr.core.config import EpisodeConfig
from rrr.core.episodes import EpisodeEngine
from rrr.core.tasks import get_task
from tests.test_dropped_samples import Scripted, _failures

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rollout", ROOT / "bench" / "rollout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def test_warm_prompts_are_the_engine_cache_that_every_next_prompt_extends(tok):
    bench = _bench()
    task = get_task("countdown", "qwen")
    recorder = bench.Recorder(Scripted(tok, solves={0}))
    cfg = EpisodeConfig(num_reflections=4, retry_depth=2)
    EpisodeEngine(task, ChatRenderer(tok), recorder, LocalVerifier(task), cfg, 2048).run(
        _failures(tok)
    )
    calls = recorder.calls
    assert len(calls) == 4  # reflect, retry, reflect again, retry again
    assert bench.warm_prompts(calls, 0) == []
    for index in range(1, len(calls)):
        warmed = bench.warm_prompts(calls, index)
        _, outs = calls[index - 1]
        assert len(warmed) == sum(len(o) for o in outs)
        # Each warm prompt holds the ids the ENGINE generated, not a re-sample...
        assert warmed[0][-len(outs[0][0].token_ids) :] == outs[0][0].token_ids
        # ...and every prompt of this phase extends one of them: the same cache hit as the
        # engine's.
        for req in calls[index][0]:
            assert any(req.prompt_ids[: len(w)] == w for w in warmed)
