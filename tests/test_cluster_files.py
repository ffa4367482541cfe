"""cluster/: the YAML files are valid for the tools that read them (Ray's runtime_env and
cluster-launcher schemas, KubeRay's RayJob shape) and the README's commands name real files."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def check_runtime_env(env: dict) -> None:
    """Only keys Ray knows (RuntimeEnv forwards unknown ones as plugins instead of failing,
    so check them explicitly), values accepted by Ray's own validation, string env vars."""
    from ray.runtime_env import RuntimeEnv

    unknown = set(env) - RuntimeEnv.known_fields
    assert not unknown, f"keys Ray does not accept: {unknown}"
    RuntimeEnv(**env)  # raises on malformed pip / env_vars / config values
    assert all(isinstance(v, str) for v in env.get("env_vars", {}).values())
    # Without it `ray job stop` SIGKILLs the driver after 3 s, before its final checkpoint.
    assert int(env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 60


def test_runtime_env_is_valid_for_ray():
    env = load("runtime_env.yaml")
    check_runtime_env(env)
    assert env["working_dir"] == "."
    assert any("[gpu]" in p for p in env["pip"]["packages"])


def test_rayjob_manifest():
    job = load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    entrypoint = job["spec"]["entrypoint"]
    match = re.search(r"rrr train --config (configs/\S+\.yaml)", entrypoint)
    assert match, entrypoint
    assert (ROOT / match.group(1)).is_file()
    for config in re.findall(r"--config (\S+)", entrypoint):
        assert (ROOT / config).is_file(), config
    check_runtime_env(yaml.safe_load(job["spec"]["runtimeEnvYAML"]))
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    (group,) = cluster["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_cluster_launcher_config_matches_ray_schema():
    import jsonschema
    import ray.autoscaler

    config = load("ray-cluster.yaml")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    assert workers and all(t["resources"].get("GPU", 0) == 8 for t in workers.values())
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any("[gpu]" in cmd for cmd in config["setup_commands"])


def _shell_commands(markdown: str) -> list[str]:
    """Commands inside ```bash blocks, with backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_readme_commands_reference_existing_files():
    readme = (CLUSTER / "README.md").read_text()
    submits = [c for c in _shell_commands(readme) if c.startswith("ray job submit")]
    assert any("rrr train --config configs/qwen2.5-7b-countdown-8xh100.yaml" in c for c in submits)
    for command in submits:
        words = shlex.split(command.split("#")[0])
        for flag in ("--runtime-env", "--config", "--working-dir"):
            for i, word in enumerate(words[:-1]):
                if word == flag:
                    assert (ROOT / words[i + 1]).exists(), f"{command}: {words[i + 1]}"
    for path in set(re.findall(r"\bcluster/[\w.-]+", readme)):
        assert (ROOT / path).exists(), path


@pytest.mark.parametrize("name", ["runtime_env.yaml", "ray-cluster.yaml", "rayjob.yaml"])
def test_yaml_parses(name):
    assert isinstance(load(name), dict)


def test_grafana_dashboard_plots_rrr_series_per_run() -> None:
    """cluster/grafana-rrr.json is a Grafana dashboard whose every query is a ray_rrr_* series
    filtered by the `run` variable (that the dashboard defines from ray_rrr_step)."""
    dash = json.loads((ROOT / "cluster" / "grafana-rrr.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "ray_rrr_step" in variables["run"]["definition"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for expr in exprs:
        assert re.fullmatch(r'ray_rrr_[a-z0-9_]+\{run=~"\$run"\}', expr), expr
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
