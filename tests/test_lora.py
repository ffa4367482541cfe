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
    adapter_config,
    engine_lora_rank,
    is_adapter_dir,
    serving_config,
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


def _adapter_dir(tmp_path, **config) -> str:
    d = tmp_path / "adapter"
    d.mkdir()
    full = {**adapter_config(LORA, "/models/base"), **config}
    (d / ADAPTER_CONFIG).write_text(json.dumps(full))
    return str(d)


def test_an_adapter_directory_is_served_on_its_base_with_its_own_settings(tmp_path):
    cfg = load_config(None, [f"model.name_or_path={_adapter_dir(tmp_path, r=12)}",
                             "rollout.max_lora_rank=8"])  # fmt: skip
    served, adapter = serving_config(cfg)
    assert adapter is not None and str(adapter) == cfg.model.name_or_path
    assert served.model.name_or_path == "/models/base"
    assert (served.learner.lora.rank, served.learner.lora.alpha) == (12, 8.0)
    assert served.learner.lora.target_modules == sorted(LORA.target_modules)
    assert engine_lora_rank(served) == 16  # the user's max_lora_rank=8 could not hold it
    assert serving_config(load_config(None, []))[1] is None  # a model: served as it is


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"r": 1024}, r"rank-1024 adapter; vLLM serves ranks 1 to 512"),
        ({"target_modules": ".*proj"}, "as a pattern"),
        ({"base_model_name_or_path": None}, "names no base model"),
        ({"r": "four"}, "unreadable"),
    ],
)
def test_an_adapter_directory_rrr_cannot_serve_fails_naming_the_key(tmp_path, config, message):
    cfg = load_config(None, [f"model.name_or_path={_adapter_dir(tmp_path, **config)}"])
    with pytest.raises(ConfigError, match=rf"model\.name_or_path: .*{message}"):
        serving_config(cfg)


def test_training_refuses_an_adapter_as_its_model(tmp_path):
    from rrr.driver.train import check_model

    cfg = load_config(None, [f"model.name_or_path={_adapter_dir(tmp_path)}"])
    with pytest.raises(ConfigError, match=r"model\.name_or_path: .* is a LoRA adapter"):
        check_model(cfg)


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


def test_rrr_plan_counts_the_adapter_peft_builds(tiny_model_path):
    """`rrr plan`'s adapter (names, shapes) is the one peft builds and a push ships."""
    from transformers import AutoModelForCausalLM

    from rrr.core.model_shapes import model_shape
    from rrr.learner.lora import apply_lora

    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_path), LORA, "")
    built = {wire_name(n): tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    planned = model_shape(tiny_model_path).lora_tensors(LORA.rank, LORA.target_modules)
    assert dict(planned) == built and len(planned) == len(built)


def test_rrr_train_checks_the_target_modules_before_anything_starts(
    tiny_model_path, tmp_path, monkeypatch, capsys
):
    import rrr.driver.stack
    from rrr.driver.cli import main

    def started(cfg):
        raise AssertionError("a generation stack started before the config was checked")

    monkeypatch.setattr(rrr.driver.stack, "generation_stack", started)
    code = main(["train", f"model.name_or_path={tiny_model_path}", "learner.lora.rank=4",
                 "learner.lora.target_modules=[q_proj,qkv_proj]",
                 f"logging.output_dir={tmp_path / 'run'}"])  # fmt: skip
    assert code != 0
    assert "learner.lora.target_modules: ['qkv_proj']" in capsys.readouterr().err


@pytest.mark.parametrize(("backend", "zero_stage"), [("torch", 2), ("deepspeed", 2),
                                                     ("deepspeed", 3)])  # fmt: skip
def test_lora_trains_the_adapter_alone_against_the_base_as_reference(
    tiny_model_path, batch, backend, zero_stage
):
    """The adapter's weights move and the base's do not; before the first step the policy is
    the base exactly (peft's B = 0); the reference is the base model itself (the adapter off);
    the manifest, the push and the checkpoint hold the adapter's tensors alone."""
    from transformers import AutoModelForCausalLM

    # The base's log-probs first: while a ZeRO-3 worker lives, transformers builds every model
    # partitioned (its HfDeepSpeedConfig), and a partitioned model has no weights of its own.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    with torch.no_grad():
        want = next_token_logprobs(base(batch.tokens).logits, batch.tokens) * batch.mask
    del base
    worker = LearnerWorker(tiny_model_path, _cfg(backend=backend, zero_stage=zero_stage))
    assert torch.allclose(worker.logprobs(batch), want, atol=1e-5)

    names = worker.manifest.names
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(names) == 2 * 7 * 2  # A and B, seven targets, two layers
    frozen = _frozen_params(worker)
    before = {n: t.clone() for n, t in worker.state_dict_cpu().items()}
    metrics = worker.step([batch])
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # the step's policy is the base
    for _ in range(2):
        metrics = worker.step([batch])
    assert metrics["kl"] > 0
    after = worker.state_dict_cpu()
    assert set(after) == set(names)
    assert any(not torch.equal(before[n], after[n]) for n in names if ".lora_B." in n)
    for n, p in _frozen_params(worker).items():
        assert torch.equal(p, frozen[n]), n
    # The reference is still the base: the adapter off gives the base's log-probs exactly.
    layout = worker.layout(batch)
    assert torch.allclose(worker._reference_logprobs(layout).cpu(), want, atol=1e-5)
    assert not torch.allclose(worker.logprobs(batch), want, atol=1e-4)


def _frozen_params(worker: LearnerWorker) -> dict[str, torch.Tensor]:
    """Copies of the base's parameters, whole (ZeRO-3 keeps each rank's partition alone)."""
    import contextlib

    frozen = {n: p for n, p in worker.hf_model.named_parameters() if not p.requires_grad}
    gather = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in frozen.values()):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(frozen.values()))
    with gather:
        return {n: p.detach().clone() for n, p in frozen.items()}


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
