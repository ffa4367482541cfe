"""LoRA (issue 30): the config's checks, the learner's adapter (torch and DeepSpeed), its
reference with the adapter off, adapter-only weights, checkpoints that resume exactly, and
export. The rollout side (vLLM serving the pushed adapter) is in tests/test_lora_sync.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rrr.core.config import ConfigError, LearnerConfig, LoraConfig, load_config
from rrr.core.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    engine_lora_rank,
    is_adapter_dir,
    wire_name,
)
from rrr.core.train_batch import build_train_batch
from rrr.learner.worker import LearnerWorker
from tests.helpers import next_token_logprobs
from tests.test_learner import _episodes

LORA = LoraConfig(rank=4, alpha=8.0)


def _cfg(**kw) -> LearnerConfig:
    base = dict(lr=5e-3, lr_scheduler="constant", warmup_ratio=0.0, max_steps=100,
                gradient_checkpointing=False, micro_batch_size=3, kl_coef=0.05, seed=0,
                lora=LORA)  # fmt: skip
    base.update(kw)
    return LearnerConfig(**base)


# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learner.lora.rank=64", "rollout.max_lora_rank=32"], r"learner\.lora\.rank: 64 is above"),
        (["learner.lora.rank=600"], r"learner\.lora\.rank: 600 is above vLLM's largest"),
        (["rollout.max_lora_rank=12"], r"rollout\.max_lora_rank: vLLM builds engines"),
        (["learner.lora.rank=-1"], r"learner\.lora\.rank: must be >= 0"),
        (["learner.lora.rank=8", "learner.lora.alpha=0"], r"learner\.lora\.alpha: must be > 0"),
        (["learner.lora.rank=8", "learner.lora.target_modules=[]"], r"target_modules: expected"),
        (["learner.lora.rank=8", "learner.lora.dropout=1.0"], r"learner\.lora\.dropout"),
        (["learner.lora.rnak=8"], r"learner\.lora\.rnak: unknown key"),
    ],
)
def test_bad_lora_settings_fail_at_load_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(("rank", "most", "engine"), [(0, None, 0), (4, None, 8), (8, None, 8),
                                                      (12, None, 16), (64, None, 64),
                                                      (12, 32, 32)])  # fmt: skip
def test_the_engines_rank_is_the_smallest_vllm_rank_that_holds_the_adapter(rank, most, engine):
    extra = [] if most is None else [f"rollout.max_lora_rank={most}"]
    cfg = load_config(None, [f"learner.lora.rank={rank}", *extra])
    assert engine_lora_rank(cfg) == engine


def test_saved_names_drop_the_adapter_name_and_skip_the_base():
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    assert wire_name(f"{prefix}.lora_A.default.weight") == f"{prefix}.lora_A.weight"
    assert wire_name(f"{prefix}.lora_B.default.weight") == f"{prefix}.lora_B.weight"
    assert wire_name(f"{prefix}.base_layer.weight") is None
    assert wire_name("base_model.model.lm_head.weight") is None


# ----------------------------------------------------------------------------- the learner


@pytest.fixture(scope="module")
def batch(tiny_model_path):
    tokens, spans, logprobs, rewards = _episodes(n=8)
    return build_train_batch(tokens, spans, logprobs, rewards, 4)


def test_an_unknown_target_module_fails_at_start_naming_the_key(tiny_model_path):
    from rrr.learner.lora import check_target_modules

    check_target_modules(tiny_model_path, LORA, False)  # the defaults are all there
    with pytest.raises(ConfigError, match=r"learner\.lora\.target_modules: \['qkv_proj'\]"):
        check_target_modules(tiny_model_path, replace(LORA, target_modules=["qkv_proj", "q_proj"]),
                             False)  # fmt: skip
    with pytest.raises(ConfigError, match="lm_head"):  # vLLM serves no adapter on the head
        check_target_modules(tiny_model_path, replace(LORA, target_modules=["lm_head"]), False)


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_lora_trains_the_adapter_alone_against_the_base_as_reference(
    tiny_model_path, batch, backend
):
    """The adapter's weights move and the base's do not; before the first step the policy is
    the base exactly (peft's B = 0); the reference is the base model itself (the adapter off);
    the manifest, the push and the checkpoint hold the adapter's tensors alone."""
    from transformers import AutoModelForCausalLM

    worker = LearnerWorker(tiny_model_path, _cfg(backend=backend))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    with torch.no_grad():
        want = next_token_logprobs(base(batch.tokens).logits, batch.tokens) * batch.mask
    assert torch.allclose(worker.logprobs(batch), want, atol=1e-5)

    names = worker.manifest.names
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(names) == 2 * 7 * 2  # A and B, seven targets, two layers
    frozen = {n: p.detach().clone() for n, p in worker.hf_model.named_parameters()
              if not p.requires_grad}  # fmt: skip
    before = {n: t.clone() for n, t in worker.state_dict_cpu().items()}
    metrics = worker.step([batch])
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # the step's policy is the base
    for _ in range(2):
        metrics = worker.step([batch])
    assert metrics["kl"] > 0
    after = worker.state_dict_cpu()
    assert set(after) == set(names)
    assert any(not torch.equal(before[n], after[n]) for n in names if ".lora_B." in n)
    for n, p in worker.hf_model.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), n
    # The reference is still the base: the adapter off gives the base's log-probs exactly.
    layout = worker.layout(batch)
    assert torch.allclose(worker._reference_logprobs(layout).cpu(), want, atol=1e-5)
    assert not torch.allclose(worker.logprobs(batch), want, atol=1e-4)


def test_lora_checkpoint_is_an_adapter_and_resumes_exactly(tiny_model_path, batch, tmp_path):
    """The checkpoint's policy is an adapter directory (no copy of the base); a new worker
    resumed from it takes the same next step as the one that never stopped."""
    a = LearnerWorker(tiny_model_path, _cfg(backend="torch"))
    a.step([batch])
    a.save_state(str(tmp_path / "ckpt"))
    policy = tmp_path / "ckpt" / "policy"
    assert is_adapter_dir(policy)
    config = json.loads((policy / ADAPTER_CONFIG).read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 8.0)
    assert (policy / ADAPTER_WEIGHTS).stat().st_size < 200_000  # the tiny model's is 10x that
    want = a.step([batch])

    b = LearnerWorker(tiny_model_path, _cfg(backend="torch"))
    b.load_state(str(tmp_path / "ckpt"))
    got = b.step([batch])
    assert got["loss"] == want["loss"] and got["grad_norm"] == want["grad_norm"]
    for (n, x), (m, y) in zip(a.state_dict_cpu().items(), b.state_dict_cpu().items()):
        assert n == m and torch.equal(x, y), n
