"""Typed config: presets load, overrides apply, bad keys/types/values fail with the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrr.core.config import Config, ConfigError, describe, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers():
    cfg = Config()
    assert cfg.learner.kl_coef == 0.001 and cfg.learner.lr == 5e-7
    assert cfg.learner.lr_scheduler == "cosine" and cfg.learner.warmup_ratio == 0.03
    assert cfg.learner.failures_per_step == 256 and cfg.learner.max_steps == 1750
    assert cfg.failures.samples_per_query == 64


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(preset):
    assert isinstance(load_config(preset), Config)


def test_overrides_apply_with_types():
    cfg = load_config(ROOT / "configs/smoke-cpu.yaml",
                      ["learner.lr=1e-6", "episode.num_reflections=2", "data.limit=null",
                       "rollout.enforce_eager=true", "learner.adam_betas=[0.8, 0.9]"])  # fmt: skip
    assert cfg.learner.lr == 1e-6 and cfg.episode.num_reflections == 2
    assert cfg.data.limit is None and cfg.rollout.enforce_eager is True
    assert cfg.learner.adam_betas == [0.8, 0.9]
    assert cfg.model.name_or_path == "smollm2-135m"  # from the preset


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.lrr=1", r"learner\.lrr: unknown key"),
        ("nosection.x=1", r"nosection: unknown key"),
        ("learner.lr=fast", r"learner\.lr: expected float, got str"),
        ("episode.num_reflections=2.5", r"episode\.num_reflections: expected int"),
        ("rollout.enable_prefix_caching=1", r"rollout\.enable_prefix_caching: expected bool"),
        ("learner.zero_stage=1", r"learner\.zero_stage: must be one of \[2, 3\]"),
        ("episode.num_reflections=0", r"episode\.num_reflections: must be > 0"),
        ("learner.warmup_ratio=1.5", r"learner\.warmup_ratio: must be in \[0, 1\]"),
        ("learner.lr=-1.0", r"learner\.lr: must be >= 0"),
        ("learner.cpu_threads=-1", r"learner\.cpu_threads: must be >= 0"),
        ("episode.rewarded_reflection=1", r"episode\.rewarded_reflection: 1 must be <"),
        ("learner.adam_betas=[0.9]", r"learner\.adam_betas: expected 2 values"),
        ("learner.lr.x=1", r"learner\.lr: expected float, got dict"),
        ("justtext", r"must look like section\.key=value"),
    ],
)
def test_bad_overrides_fail_with_key_path(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("learner: {lr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("learner:\n  kl_coeff: 0.1\n")
    with pytest.raises(ConfigError, match=r"learner\.kl_coeff: unknown key"):
        load_config(tmp_path / "typo.yaml")


def test_parse_override_reads_yaml_scalars():
    assert parse_override("a.b=1e-6") == ("a.b", 1e-6)
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=hello world") == ("a.b", "hello world")
    assert parse_override("a.b=") == ("a.b", "")


def test_every_key_has_help():
    rows = describe()
    assert len(rows) > 60
    assert all(help_text for _, _, _, help_text in rows), [k for k, *_, h in rows if not h]


def test_impossible_resources_are_refused_before_any_actor():
    from rrr.driver.stack import ResourceError, check_resources

    cfg = load_config(ROOT / "configs/qwen2.5-7b-countdown-8xh100.yaml")
    check_resources(cfg, {"CPU": 64.0, "GPU": 8.0})
    with pytest.raises(ResourceError, match=r"asks for 8 GPU but the Ray cluster has 4"):
        check_resources(cfg, {"CPU": 64.0, "GPU": 4.0})
    bad_tp = load_config(ROOT / "configs/qwen2.5-7b-countdown-8xh100.yaml",
                         ["rollout.tensor_parallel_size=2"])  # fmt: skip
    with pytest.raises(ResourceError, match="tensor_parallel_size=2 needs"):
        check_resources(bad_tp, {"CPU": 64.0, "GPU": 8.0})


def test_async_rollout_keys_fail_at_load_with_the_key():
    from rrr.core.config import ConfigError, load_config

    assert load_config(None, ["rollout.max_staleness=1"]).rollout.max_staleness == 1
    with pytest.raises(ConfigError, match=r"rollout\.max_staleness.*colocate"):
        load_config(None, ["rollout.max_staleness=1", "cluster.colocate=true"])
    with pytest.raises(ConfigError, match=r"rollout\.max_staleness"):
        load_config(None, ["rollout.max_staleness=-1"])
    with pytest.raises(ConfigError, match=r"learner\.tis_cap"):
        load_config(None, ["learner.tis_cap=0"])
    assert load_config(None, ["learner.tis_cap=2.0"]).learner.tis_cap == 2.0
    with pytest.raises(ConfigError, match=r"eval\.reuse_first_tries"):
        load_config(None, ["eval.reuse_first_tries=true"])


def test_training_refuses_a_nucleus_the_learner_does_not_see(tmp_path, monkeypatch):
    """episode.top_p < 1 (issue 32): vLLM's log-probs are of the renormalised nucleus, the
    learner's of the full softmax, so TIS ratios and the sampler's old log-probs are biased."""
    from rrr.core.config import check_training
    from rrr.driver import stack, train

    nucleus = load_config(None, ["episode.top_p=0.9"])  # loads: commands that do not train
    with pytest.raises(ConfigError, match=r"^episode\.top_p: 0\.9 .*training.*TIS ratios"):
        check_training(nucleus)
    for preset in [None, *sorted((ROOT / "configs").glob("*.yaml"))]:
        check_training(load_config(preset))  # no preset trains with a nucleus
    # `rrr train` checks before it writes or starts anything.

    def started(*args, **kwargs):
        raise AssertionError("rrr train went past its config check")

    monkeypatch.setattr(train, "check_data", started)
    monkeypatch.setattr(stack, "generation_stack", started)
    nucleus.logging.output_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^episode\.top_p"):
        train.train(nucleus)
    assert not (tmp_path / "run").exists()
