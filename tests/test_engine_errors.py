"""Start-up failures of a rollout engine name their cause at once instead of hanging."""

from __future__ import annotations

import pytest

from rrr.actors.vllm_engine import EngineStartError, VLLMEngine
from rrr.core.models import ModelError, resolve_model


def test_missing_model_path_is_named():
    with pytest.raises(EngineStartError, match="/nope/model"):
        VLLMEngine("/nope/model")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("./nope/model")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("not a hub id")


def test_cpu_tensor_parallel_threads_split_the_cores():
    """vLLM's CPU build runs tensor-parallel workers bound to "|"-separated core ranges."""
    from rrr.actors.vllm_engine import cpu_thread_binds

    assert cpu_thread_binds([0, 1], 1) == ("0,1", 2)
    assert cpu_thread_binds([0, 1], 2) == ("0|1", 1)
    assert cpu_thread_binds(list(range(16)), 4) == ("0,1,2,3|4,5,6,7|8,9,10,11|12,13,14,15", 4)
    assert cpu_thread_binds([0], 2) == ("0|0", 1)  # fewer cores than workers: they share
    # A pinned process binds the CPUs it may use, not the machine's first ones.
    assert cpu_thread_binds([1], 1) == ("1", 1)
    assert cpu_thread_binds([2, 3, 6, 7], 2) == ("2,3|6,7", 2)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model(str(tmp_path))


@pytest.mark.slow
def test_vllm_failure_inside_the_actor_surfaces_as_engine_start_error(ray_local, tmp_path):
    """A directory vLLM cannot load (a config naming an unknown architecture): the fleet
    raises EngineStartError carrying vLLM's message, never a hang."""
    import json

    from rrr.actors.rollout_worker import RolloutFleet
    from rrr.core.config import load_config

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["NoSuchModel"],
                                                      "model_type": "no_such_model"}))  # fmt: skip
    cfg = load_config(None, ["rollout.kv_cache_gib=1"])
    with pytest.raises(EngineStartError, match=r"(?s)failed to start.*" + str(tmp_path)):
        RolloutFleet.start(cfg, str(tmp_path), timeout_s=300)
