"""Keyed evaluation noise on a real vLLM CPU engine (actors/crn_logits.py): a keyed request
samples the same tokens in any batch, beside training requests that keep vLLM's own sampling
and log-probs, and its first token follows softmax(logits / T) of the model."""

from __future__ import annotations

import math

import torch

from rrr.core.crn import noise_key
from rrr.core.generation import GenRequest

PROMPT = [1, 42, 77, 1337, 9, 2024, 31]
OTHER = [1, 5, 6, 7, 8]


def _keyed(prompt: list[int], keys: list[int], t: float = 0.8, tokens: int = 12) -> GenRequest:
    return GenRequest(prompt, n=len(keys), temperature=t, max_tokens=tokens,
                      noise_keys=tuple(keys))  # fmt: skip


def test_keyed_samples_do_not_depend_on_the_batch_or_the_engine_stream(ray_local, rollout_worker):
    keys = [noise_key(0, "p", j, "first") for j in range(3)]
    alone = ray_local.get(rollout_worker.generate.remote([_keyed(PROMPT, keys)]))[0]
    # Another batch: training requests (no keys) around it, another order, a reseeded stream.
    training = GenRequest(OTHER, n=3, temperature=1.0, max_tokens=12)
    batch = [training, _keyed(OTHER, [noise_key(0, "q", 0, "first")]), _keyed(PROMPT, keys[::-1])]
    mixed = ray_local.get(rollout_worker.generate.remote(batch, 12345))
    assert [s.token_ids for s in mixed[2]] == [s.token_ids for s in alone][::-1]
    assert len({tuple(s.token_ids) for s in alone}) == 3  # three keys, three samples
    # Training requests keep vLLM's sampler and their log-probs; keyed ones carry none.
    assert all(len(s.logprobs) == len(s.token_ids) > 0 for s in mixed[0])
    assert all(s.logprobs == [] for s in alone)
    # Same keys again, after all that: the same tokens.
    again = ray_local.get(rollout_worker.generate.remote([_keyed(PROMPT, keys)]))[0]
    assert [s.token_ids for s in again] == [s.token_ids for s in alone]


def test_keyed_first_token_follows_the_tempered_softmax(ray_local, rollout_worker,
                                                        tiny_model_path):  # fmt: skip
    from transformers import AutoModelForCausalLM

    t, n = 0.3, 400
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0, -1].double()
    p = torch.softmax(logits / t, 0)
    top = torch.topk(p, 3)
    keys = [noise_key(1, "dist", j, "first") for j in range(n)]
    samples = ray_local.get(rollout_worker.generate.remote([_keyed(PROMPT, keys, t, 1)]))[0]
    first = [s.token_ids[0] for s in samples]
    for prob, token in zip(top.values.tolist(), top.indices.tolist()):
        freq = first.count(token) / n
        assert abs(freq - prob) <= 4 * math.sqrt(prob * (1 - prob) / n) + 0.01, (token, freq, prob)
    assert top.values[0] > 0.1  # the check has teeth: the top token is not a rare one
