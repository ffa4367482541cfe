"""`rrr plan`: placement, sync backend and memory of every shipped preset on the cluster it is
meant for, and refusals that name the key to change. Starts nothing (no Ray, no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrr.core.config import load_config
from rrr.core.memory_budget import GIB, learner_budget
from rrr.core.model_shapes import ModelShape, from_config, model_shape
from rrr.core.placement import parse_cluster, place, sync_backend
from rrr.driver.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Each preset and the cluster it is written for (its header comment says which).
PRESET_CLUSTERS = {
    "smoke-cpu.yaml": "cpu",
    "single-gpu.yaml": "1x1@80",
    "qwen2.5-7b-countdown-lora-1xh100.yaml": "1x1@80",
    "qwen2.5-1.5b-countdown-4xh100.yaml": "1x4@80",
    "qwen2.5-7b-countdown-8xh100.yaml": "1x8@80",
    "qwen2-7b-apigen-8xh100.yaml": "1x8@80",
    "cluster-cpu.yaml": "cpu",
    "replicate-cpu.yaml": "cpu",
    "code-smoke-cpu.yaml": "cpu",
    "learnability-cpu.yaml": "cpu",
}


def test_every_preset_has_a_cluster_to_plan_for() -> None:
    presets = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert presets <= set(PRESET_CLUSTERS), presets - set(PRESET_CLUSTERS)


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_preset_plans_on_its_cluster(preset: str, capsys: pytest.CaptureFixture) -> None:
    code = main(["plan", "--config", str(ROOT / "configs" / preset),
                 "--cluster", PRESET_CLUSTERS[preset]])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "placement" in out and "sync " in out and "memory" in out
    if "@" in PRESET_CLUSTERS[preset]:
        assert "vLLM KV cache:" in out and "learner" in out


def _refused(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["plan", *args]) == 2
    return capsys.readouterr().err


def test_refusals_name_the_key(capsys: pytest.CaptureFixture) -> None:
    seven_b = ["--config", str(ROOT / "configs/qwen2.5-7b-countdown-8xh100.yaml")]
    err = _refused([*seven_b, "--cluster", "cpu"], capsys)
    assert "learner.num_gpus_per_learner" in err and "has none" in err
    err = _refused([*seven_b, "--cluster", "1x4@80"], capsys)  # 8 GPUs asked, 4 there
    assert "rollout.num_workers" in err
    err = _refused([*seven_b, "--cluster", "1x8@40", "learner.zero_stage=2"], capsys)
    assert "GiB of 40" in err and "learner.zero_stage=3" in err
    err = _refused([*seven_b, "--cluster", "1x8@80", "rollout.tensor_parallel_size=3",
                    "rollout.num_gpus_per_worker=3"], capsys)  # fmt: skip
    assert "rollout.tensor_parallel_size=3" in err
    # 0.19 x 80 GiB leaves no KV cache beside 14 GiB of 7B weights.
    err = _refused([*seven_b, "--cluster", "1x8@80", "rollout.gpu_memory_utilization=0.19"],
                   capsys)  # fmt: skip
    assert "model.max_model_len" in err
    single = ["--config", str(ROOT / "configs/single-gpu.yaml"), "--cluster", "1x1@80"]
    assert "cluster.colocate=true" in _refused([*single, "cluster.colocate=false"], capsys)
    assert "--cluster" in _refused([*single[:2], "--cluster", "8 GPUs"], capsys)
    err = _refused([*single, "rollout.num_workers=2"], capsys)
    assert "rollout.num_workers=2 must equal learner.num_learners=1" in err
    err = _refused([*single, "rollout.num_gpus_per_worker=0.6"], capsys)
    assert "must add up to at most 1" in err


@pytest.mark.model  # builds three tiny transformers models itself
def test_model_shape_counts_what_transformers_builds() -> None:
    """Parameter count and tensor list of the planner equal a real (tiny) model's, tied and
    untied, with and without attention biases."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96, vocab_size=320)  # fmt: skip
    cases = [
        (LlamaForCausalLM, LlamaConfig(**common, tie_word_embeddings=True)),
        (LlamaForCausalLM, LlamaConfig(**common, tie_word_embeddings=False)),
        (Qwen2ForCausalLM, Qwen2Config(**common, tie_word_embeddings=False)),
    ]
    for cls, config in cases:
        torch.manual_seed(0)
        model = cls(config)
        shape = from_config("tiny", config.to_dict())
        real = dict(model.named_parameters())  # a tied head is listed once, as the embedding
        assert shape.params == sum(p.numel() for p in real.values())
        assert {n: tuple(s) for n, s in shape.tensors()} == {
            n: tuple(p.shape) for n, p in real.items()
        }


def test_presets_models_are_known_offline() -> None:
    for name, billions in [("Qwen/Qwen2.5-7B-Instruct", 7.62), ("Qwen/Qwen2.5-1.5B-Instruct", 1.54),
                           ("smollm2-135m", 0.1345)]:  # fmt: skip
        assert model_shape(name).params / 1e9 == pytest.approx(billions, rel=0.01)


def test_pack_puts_learners_together_and_colocation_picks_object_store() -> None:
    cfg = load_config(str(ROOT / "configs/qwen2.5-7b-countdown-8xh100.yaml"), [])
    placed = place(cfg, parse_cluster("2x4@80"))
    learners = [p for p in placed if p.role == "learner"]
    assert {p.node for p in learners} == {"gpu-node-0"}  # PACK: one node holds all four
    assert {p.node for p in placed if p.role == "rollout"} == {"gpu-node-1"}
    assert sync_backend("auto", placed, gpu=True)[0] == "collective"
    single = load_config(str(ROOT / "configs/single-gpu.yaml"), [])
    placed = place(single, parse_cluster("1x1@80"))
    assert [p.devices for p in placed if p.role != "verifier"] == [[(0, 0.6)], [(0, 0.4)]]
    assert sync_backend("auto", placed, gpu=True)[0] == "object_store"
    assert sync_backend("auto", place(load_config(None, []), parse_cluster("cpu")), False) == (
        "collective", "gloo broadcast from rrr.learner rank 0")


def test_zero_stages_shard_what_they_should() -> None:
    shape = ModelShape("m", hidden=1024, layers=4, heads=8, kv_heads=8, intermediate=2048,
                       vocab=1000, tied=True)  # fmt: skip
    p = shape.params

    def parts(stage: int, ranks: int, **extra: object) -> dict[str, float]:
        cfg = load_config(None, [f"learner.zero_stage={stage}", f"learner.num_learners={ranks}",
                                 "learner.backend=deepspeed", *(f"learner.{k}={v}" for k, v in
                                                               extra.items())])  # fmt: skip
        return {k: v * GIB for k, v in learner_budget(cfg, shape).parts.items()}

    z2, z3 = parts(2, 4), parts(3, 4)
    assert z2["weights"] == pytest.approx(2 * p) and z3["weights"] == pytest.approx(2 * p / 4)
    assert z2["gradients"] == pytest.approx(4 * p / 4) == z3["gradients"]
    assert z2["optimizer"] == pytest.approx(12 * p / 4)
    assert z2["reference"] == pytest.approx(2 * p) and z3["reference"] == 0  # offloaded
    assert parts(2, 4, offload_optimizer="true")["optimizer"] == 0


def test_oversize_buckets_size_the_sync_buffers(capsys: pytest.CaptureFixture) -> None:
    """A 7B embedding (~1 GiB in bf16) travels alone, above sync.bucket_mb: the buffers on
    learner rank 0 (two pack buffers) and on every vLLM worker are sized by it, and counted in
    those GPUs' peaks (not in the other learner ranks')."""
    from rrr.core.memory_budget import sync_buffer_bytes
    from rrr.core.weights.wire import plan_buckets

    preset = ROOT / "configs/qwen2.5-7b-countdown-8xh100.yaml"
    cfg = load_config(preset, [])
    shape = model_shape(cfg.model.name_or_path)
    cap = cfg.sync.bucket_mb << 20
    sizes = [b.nbytes for b in plan_buckets(((n, "bfloat16", s) for n, s in shape.tensors()), cap)]
    largest = max(sizes)
    assert largest > cap  # the embedding
    sender, receiver = sync_buffer_bytes(sizes, cap)
    assert sender == 2 * largest and receiver == largest + 2 * cap
    assert main(["plan", "--config", str(preset), "--cluster", "1x8@80"]) == 0
    out = capsys.readouterr().out
    gpus = [line for line in out.splitlines() if " GPU" in line and "peak" in line]
    learners = [line for line in gpus if "learner:" in line]
    with_sync = [line for line in learners if f"sync buffers {sender / GIB:.1f}" in line]
    assert len(learners) == 4 and len(with_sync) == 1  # rank 0 only
    vllm = [line for line in gpus if "vllm:" in line]
    assert vllm and all(f"sync buffers {receiver / GIB:.1f}" in line for line in vllm)


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("offload", [False, True])
def test_the_reference_budget_is_where_the_engine_puts_it(stage: int, offload: bool) -> None:
    """The plan counts the reference on the GPU exactly when the engine's reference config
    keeps it there (learner/engines.py loads it under that config: a test in test_learner.py
    checks that zero.Init then partitions it to CPU memory)."""
    from rrr.learner.engines import deepspeed_config

    cfg = load_config(None, [f"learner.zero_stage={stage}", "learner.num_learners=4",
                             "learner.backend=deepspeed",
                             f"learner.offload_reference={str(offload).lower()}"])  # fmt: skip
    shape = ModelShape("m", hidden=1024, layers=4, heads=8, kv_heads=8, intermediate=2048,
                       vocab=1000, tied=True)  # fmt: skip
    engine_cfg = deepspeed_config(cfg.learner, gpu=True, reference=True)["zero_optimization"]
    on_cpu = "offload_param" in engine_cfg
    sharded = engine_cfg["stage"] == 3
    reference = learner_budget(cfg, shape).parts["reference"] * GIB
    expected = 0.0 if on_cpu else 2 * shape.params / (4 if sharded else 1)
    assert reference == pytest.approx(expected)
    assert on_cpu == (offload and stage == 3)


def test_colocation_with_vllm_tensor_parallelism_is_refused(capsys: pytest.CaptureFixture) -> None:
    err = _refused(["--config", str(ROOT / "configs/single-gpu.yaml"), "--cluster", "1x2@80",
                    "rollout.tensor_parallel_size=2"], capsys)  # fmt: skip
    assert "cluster.colocate" in err and "rollout.tensor_parallel_size=2" in err


def test_lora_fits_a_7b_on_one_gpu_where_full_fine_tuning_does_not(capsys) -> None:
    """The LoRA preset's reason to exist: on one 80 GB GPU the 7B's full fine-tune is refused,
    its LoRA run plans; the push ships the adapter alone (about 1/50 of the model's bytes)."""
    lora = ["--config", str(ROOT / "configs/qwen2.5-7b-countdown-lora-1xh100.yaml"),
            "--cluster", "1x1@80"]  # fmt: skip
    err = _refused([*lora, "learner.lora.rank=0"], capsys)
    assert "GiB of 80" in err
    assert main(["plan", *lora]) == 0
    out = capsys.readouterr().out
    assert "lora       r=64" in out and "161.5 M trained parameters" in out
    assert "308 MiB in bfloat16 per push" in out
    cfg = load_config(lora[1], [])
    shape = model_shape(cfg.model.name_or_path)
    full = learner_budget(load_config(lora[1], ["learner.lora.rank=0"]), shape)
    adapter = learner_budget(cfg, shape)
    assert adapter.parts["reference"] == 0 and full.parts["reference"] > 14
    assert adapter.parts["gradients"] < full.parts["gradients"] / 40
    err = _refused([*lora, "learner.lora.target_modules=[qkv_proj]"], capsys)
    assert "learner.lora.target_modules: ['qkv_proj']" in err
