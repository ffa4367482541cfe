"""vLLM's sampled-token log-probs are those of the policy that sampled (after temperature), and
the learner scores the same tokens with the same temperature (issue 15, fix 2): with vLLM's
default raw log-probs, or a learner that ignores the temperature, the PPO ratio of an
unchanged policy would not be 1."""

from __future__ import annotations

import pytest
import torch

from rrr.core.config import LearnerConfig
from rrr.core.generation import GenRequest
from rrr.core.train_batch import build_train_batch
from rrr.learner.worker import LearnerWorker

PROMPT = [1, 42, 77, 1337, 9, 2024, 31]
TOKENS = 16
# fp32 on both sides; vLLM's CPU kernels differ from torch's in the last bits (test_sync.py).
ATOL = 2e-3


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.6, 1.4])
def test_vllm_and_learner_log_probs_agree_at_the_sampling_temperature(
    ray_local, rollout_worker, tiny_model_path, temperature
):
    req = GenRequest(PROMPT, n=4, temperature=temperature, max_tokens=TOKENS)
    samples = ray_local.get(rollout_worker.generate.remote([req]))[0]
    tokens = [PROMPT + list(s.token_ids) for s in samples]
    spans = [(len(PROMPT), len(t)) for t in tokens]
    batch = build_train_batch(tokens, spans, [s.logprobs for s in samples], [0.0] * 4, 4)
    cfg = LearnerConfig(kl_coef=0.0, gradient_checkpointing=False)
    learner = LearnerWorker(tiny_model_path, cfg, temperature=temperature).logprobs(batch)
    vllm = batch.old_logprobs[batch.mask]
    torch.testing.assert_close(learner[batch.mask], vllm, rtol=0, atol=ATOL)
    # The check has teeth: the untempered log-probs of the same tokens are far from both.
    plain = LearnerWorker(tiny_model_path, cfg, temperature=1.0).logprobs(batch)[batch.mask]
    assert (plain - vllm).abs().max() > 20 * ATOL
