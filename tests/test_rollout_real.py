"""A real vLLM CPU engine inside a real Ray actor: generation, log-probs, live weight updates,
and the token/mask alignment of real episodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rrr.actors.rollout_worker import RolloutFleet
from rrr.actors.verifier_pool import LocalVerifier
from rrr.core.chat import ChatRenderer
from rrr.core.config import EpisodeConfig
from rrr.core.episodes import EpisodeEngine, Failure
from rrr.core.generation import GenRequest
from rrr.core.tasks import get_task
from tests.helpers import hf_token_logprobs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="module")
def prompt(tokenizer) -> list[int]:
    renderer = ChatRenderer(tokenizer)
    return renderer.prompt_ids([{"role": "user", "content": "Count from one to five."}])


def test_generate_returns_ids_logprobs_and_n_samples(ray_local, rollout_worker, prompt):
    reqs = [
        GenRequest(prompt, n=3, temperature=1.0, max_tokens=16),
        GenRequest(prompt[:-3], n=1, temperature=0.0, max_tokens=8),
    ]
    out = ray_local.get(rollout_worker.generate.remote(reqs))
    assert [len(o) for o in out] == [3, 1]
    for group, req in zip(out, reqs):
        for s in group:
            assert 1 <= len(s.token_ids) <= req.max_tokens
            assert len(s.logprobs) == len(s.token_ids)
            assert all(lp <= 0.0 for lp in s.logprobs)
            assert s.finish_reason in {"stop", "length"}
    # Three samples at temperature 1 from a random model: not all the same.
    assert len({tuple(s.token_ids) for s in out[0]}) > 1


def test_sampling_logprobs_match_transformers(ray_local, rollout_worker, prompt, tiny_model_path):
    out = ray_local.get(
        rollout_worker.generate.remote([GenRequest(prompt, n=2, temperature=1.0, max_tokens=24)])
    )
    seqs = [prompt + s.token_ids for s in out[0]]
    ref = hf_token_logprobs(tiny_model_path, seqs, [len(prompt)] * len(seqs))
    for sample, expected in zip(out[0], ref):
        got = torch.tensor(sample.logprobs)
        want = torch.tensor(expected)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=2e-3, rtol=1e-3), (got - want).abs().max()


def test_weight_update_changes_output_and_restores_token_for_token(
    ray_local, rollout_worker, prompt, tiny_model_path
):
    from transformers import AutoModelForCausalLM

    greedy = [GenRequest(prompt, n=1, temperature=0.0, max_tokens=24)]
    before = ray_local.get(rollout_worker.generate.remote(greedy))[0][0].token_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    perturbed = {k: v + 0.5 * torch.randn(v.shape, generator=gen) for k, v in original.items()}

    n = ray_local.get(rollout_worker.load_state_dict.remote(perturbed))
    assert n == len(perturbed)
    changed = ray_local.get(rollout_worker.generate.remote(greedy))[0][0].token_ids
    assert changed != before

    # A partial update (one layer) goes in too: it must also change nothing else's shape.
    partial = {k: v for k, v in original.items() if ".layers.0." in k}
    assert ray_local.get(rollout_worker.load_state_dict.remote(partial)) == len(partial)

    ray_local.get(rollout_worker.load_state_dict.remote(original))
    after = ray_local.get(rollout_worker.generate.remote(greedy))[0][0].token_ids
    assert after == before


def test_episode_tokens_and_mask_align(ray_local, rollout_worker, tokenizer, sample_data):
    import json

    task = get_task("countdown", "qwen")
    rows = [
        task.validate_row(json.loads(line))
        for line in (sample_data / "countdown_sample.jsonl").read_text().splitlines()[:3]
    ]
    renderer = ChatRenderer(tokenizer)
    cfg = EpisodeConfig(num_reflections=3, max_reflection_tokens=24, max_retry_tokens=16)
    engine = EpisodeEngine(
        task, renderer, RolloutFleet([rollout_worker]), LocalVerifier(task), cfg, 2048
    )
    attempt_ids = tokenizer.encode("The answer is \\boxed{1+2}", add_special_tokens=False)
    failures = [
        Failure(r, [*attempt_ids, tokenizer.eos_token_id], "The answer is \\boxed{1+2}")
        for r in rows
    ]
    batch = engine.run(failures)

    assert len(batch.episodes) == 3 * 3
    assert batch.generated_tokens > 0
    for ep in batch.episodes:
        row = failures[ep.failure_index].row
        prefix = renderer.prompt_ids(task.first_messages(row)) + failures[0].attempt_ids
        start, end = ep.span
        assert ep.tokens[: len(prefix)] == prefix
        assert end == len(ep.tokens) and end > start
        assert len(ep.logprobs) == end - start
        # The reflection prompt sits right before the span, rendered by the chat template.
        context = tokenizer.decode(ep.tokens[:start])
        assert context.endswith("<|im_start|>assistant\n")
        assert task.reflection_message(row)["content"] in context
        # Decoding exactly the masked ids gives the reflection text.
        assert tokenizer.decode(ep.tokens[start:end], skip_special_tokens=True) == (
            ep.reflection_text
        )
        assert len(ep.verdicts) == 1 and len(ep.retry_texts) == 1
    # The G episodes of a failure share its context but sample different reflections.
    group = batch.episodes[:3]
    assert len({tuple(e.tokens[e.span[0] :]) for e in group}) > 1


def test_sleep_and_wake_are_logged_no_ops_on_cpu(ray_local, rollout_worker, prompt):
    """vLLM's CPU build has no sleep mode: both calls say so and generation still works."""
    assert ray_local.get(rollout_worker.sleep.remote()) is False
    assert ray_local.get(rollout_worker.wake_up.remote()) is False
    out = ray_local.get(rollout_worker.generate.remote([GenRequest(prompt, max_tokens=4)]))
    assert len(out[0][0].token_ids) >= 1


def test_kv_cache_is_the_configured_fraction_of_a_gib(ray_local, rollout_worker, tiny_model_path):
    """The session's engine asks for 0.25 GiB (conftest): vLLM's own CPU knob takes whole GiB,
    which once made every fraction 1 GiB. The blocks vLLM allocated hold exactly that."""
    from transformers import AutoConfig

    from rrr.actors.vllm_engine import kv_cache_bytes

    def blocks(engine) -> tuple[int, int]:
        cache = engine.llm.llm_engine.vllm_config.cache_config
        return cache.num_gpu_blocks, cache.block_size

    num_blocks, block_size = ray_local.get(rollout_worker.__ray_call__.remote(blocks))
    model = AutoConfig.from_pretrained(tiny_model_path)
    per_token = model.num_hidden_layers * 2 * model.num_key_value_heads * model.head_dim * 4
    assert num_blocks * block_size * per_token == kv_cache_bytes(0.25) == 1 << 28


def test_vllm_worker_runs_this_checkouts_extension(ray_local, rollout_worker):
    """Import flow (d) of tests/test_import_flows.py: vLLM's worker process (a separate
    process of the multiprocess engine) resolves `worker_extension_cls` by its dotted name
    rrr.actors.worker_extension, and gets this checkout's top-level actors/ folder."""
    info = ray_local.get(rollout_worker.sync_info.remote())
    (worker,) = info["workers"]
    assert Path(worker["code"]) == ROOT / "actors" / "worker_extension.py"


def test_a_failed_reload_leaves_the_base_model_and_says_version_0(
    ray_local, rollout_worker, prompt, tiny_model_path, tmp_path
):
    """A reload that fails, even before its first tensor (a file that is not there), leaves the
    engine on the model directory's weights, and its samples say version 0: never a
    half-loaded engine, never a version it does not hold (actors/worker_extension.py)."""
    from transformers import AutoModelForCausalLM

    greedy = [GenRequest(prompt, n=1, temperature=0.0, max_tokens=24)]
    base = ray_local.get(rollout_worker.generate.remote(greedy))[0][0]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    gen = torch.Generator().manual_seed(2)
    moved = {k: v + 0.5 * torch.randn(v.shape, generator=gen)
             for k, v in model.state_dict().items()}  # fmt: skip
    path = tmp_path / "moved.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in moved.items()}, str(path))
    try:
        ray_local.get(rollout_worker.load_weights_file.remote(str(path), None, 7))
        stamped = ray_local.get(rollout_worker.generate.remote(greedy))[0][0]
        assert stamped.version == 7 and stamped.token_ids != base.token_ids
        with pytest.raises(ray_local.exceptions.RayTaskError, match=r"No such file|not found"):
            ray_local.get(rollout_worker.load_weights_file.remote(str(tmp_path / "gone"), None, 8))
        after = ray_local.get(rollout_worker.generate.remote(greedy))[0][0]
        assert after.version == 0 and after.token_ids == base.token_ids
    finally:
        ray_local.get(rollout_worker.load_weights_file.remote(
            str(Path(tiny_model_path) / "model.safetensors"), None, 0))  # fmt: skip
