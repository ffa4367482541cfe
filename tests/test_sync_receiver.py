"""The collective receiver against vLLM's layerwise reload (actors/worker_extension.py).

vLLM 0.32's in-place reload keeps the tensors it is given until a whole layer has arrived
(q, k and v make one `qkv_proj`), or until its final pass (a vocabulary that vLLM pads is never
"complete", so the embedding and a tied head are loaded last). A receive buffer reused before
then silently loads overwritten memory. This module sends over gloo, from this process, with
buckets of one tensor each (so `qkv_proj` spans three buckets) to a real vLLM engine on a tiny
model whose vocabulary is odd (padded by vLLM), and checks that vLLM then computes exactly
what transformers computes with the sent weights.

Its own module: the odd-vocabulary engine is started here and stopped at the module's end.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tests.helpers import IN_PROCESS

PROMPT = [1, 42, 77, 1337, 9, 2024, 31]


@pytest.fixture(scope="module")
def odd_vocab_model(tmp_path_factory, smollm2_path) -> str:
    from tests.helpers import build_tiny_model

    # 49,152 + 5 rows: not a multiple of vLLM's padding (64), as Qwen2.5's 151,665-token
    # tokenizer on a 151,936-row embedding pads differently on TP ranks.
    return build_tiny_model(tmp_path_factory.mktemp("tiny-odd"), smollm2_path, tied=True,
                            extra_vocab=5)  # fmt: skip


@pytest.fixture(scope="module")
def odd_vocab_worker(ray_local, odd_vocab_model):
    from rrr.actors.rollout_worker import RolloutWorker

    worker = RolloutWorker.options(num_cpus=1).remote(
        model_path=odd_vocab_model,
        max_model_len=1024,
        kv_cache_gib=0.25,
        seed=0,
        in_process=IN_PROCESS,
    )
    ray_local.get(worker.ping.remote())
    yield worker
    ray_local.kill(worker)


def _perturbed(model_path: str, out: Path) -> tuple[str, list[tuple[str, torch.Tensor]]]:
    """New weights (the same model, every tensor moved), saved for transformers to read, and
    the (name, tensor) stream a learner would send: parameters in module order, the tied head
    only as an alias."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.detach().std().clamp(min=1e-3) * 0.5)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    return str(out), [(n, p.detach().clone()) for n, p in model.named_parameters()]


def test_one_layer_over_three_buckets_and_a_padded_vocab_load_what_was_sent(
    ray_local, odd_vocab_worker, odd_vocab_model, tmp_path
):
    from rrr.core.generation import GenRequest
    from rrr.learner.manifest import WeightEntry, WeightManifest
    from rrr.learner.sync_sender import WeightSender
    from tests.helpers import free_port, hf_token_logprobs

    new_path, weights = _perturbed(odd_vocab_model, tmp_path / "new")
    aliases = {"lm_head.weight": "model.embed_tokens.weight"}
    # 1 byte: every tensor travels alone, so q, k and v of one layer fill three buckets and
    # the embedding (loaded in the final pass) waits while every later bucket arrives.
    sender = WeightSender(0, torch.device("cpu"))
    manifest = WeightManifest(
        tuple(WeightEntry(n, "", n, "float32", tuple(t.shape)) for n, t in weights), aliases
    )
    plan = sender.prepare(manifest, 1, "float32")
    assert len(plan) == len(weights) > 6

    port = free_port()
    join = odd_vocab_worker.sync_join.remote("127.0.0.1", port, 1, 2, 60.0, plan, aliases)
    joined = threading.Thread(target=sender.join, args=("127.0.0.1", port, 2, 60.0))
    joined.start()
    ray_local.get(join, timeout=120)
    joined.join(timeout=120)
    try:
        received = odd_vocab_worker.sync_receive.remote()
        sender.broadcast(iter(weights))
        assert ray_local.get(received, timeout=120) == len(weights) + 1  # + the tied head
    finally:
        ray_local.get(odd_vocab_worker.sync_close.remote(), timeout=60)
        sender.close()

    req = GenRequest(PROMPT, n=1, temperature=1.0, max_tokens=16)
    sample = ray_local.get(odd_vocab_worker.generate.remote([req], seed=3))[0][0]
    (expected,) = hf_token_logprobs(new_path, [PROMPT + sample.token_ids], [len(PROMPT)])
    got = torch.tensor(sample.logprobs)
    assert torch.allclose(got, torch.tensor(expected), atol=2e-3), (got, expected)
