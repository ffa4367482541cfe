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


def gpu_requirements() -> list[str]:
    """What a GPU job needs installed: pyproject.toml's dependencies plus its `gpu` extra."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["gpu"]]


def requirements_file() -> list[str]:
    lines = (CLUSTER / "requirements-gpu.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_the_gpu_requirements_follow_pyproject():
    assert requirements_file() == gpu_requirements(), (
        "cluster/requirements-gpu.txt is out of date; its lines should be:\n"
        + "\n".join(gpu_requirements())
    )


def test_runtime_env_is_valid_for_ray(monkeypatch: pytest.MonkeyPatch):
    """Each submission runs its own code (working_dir, never an installed rrr: nothing in pip
    names the project) and its own dependencies: Ray reads the requirements file at submit
    time, so the list it hashes into its env cache key is the file's content."""
    from ray.runtime_env import RuntimeEnv

    monkeypatch.chdir(ROOT)  # `ray job submit` runs from the repository root (cluster/README.md)
    env = load("runtime_env.yaml")
    check_runtime_env(env)
    assert env["working_dir"] == "."
    packages = RuntimeEnv(**env)["pip"]["packages"]
    assert [p for p in packages if p.strip() and not p.startswith("#")] == gpu_requirements()
    assert not any("RAY_RUNTIME_ENV_CREATE_WORKING_DIR" in p or p.startswith((".", "rrr"))
                   for p in packages)  # fmt: skip


def test_the_job_runs_rrr_from_its_working_dir():
    """rrr is not installed in the job's env, so every recipe runs `python -m rrr`, never the
    `rrr` console script; `python -m rrr` is the CLI."""
    import subprocess
    import sys

    recipes = [load("rayjob.yaml")["spec"]["entrypoint"]]
    readme = (CLUSTER / "README.md").read_text()
    recipes += [c for c in re.findall(r"ray job submit[^`]*?-- ([^\n]+)", readme)]
    assert len(recipes) >= 4
    for command in recipes:
        assert not re.search(r"(^|&& )rrr ", command.strip()), command
        assert "python -m rrr " in command, command
    done = subprocess.run([sys.executable, "-m", "rrr", "--help"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "build-failures" in done.stdout, done.stderr


def test_rayjob_manifest():
    job = load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    entrypoint = job["spec"]["entrypoint"]
    match = re.search(r"python -m rrr train --config (configs/\S+\.yaml)", entrypoint)
    assert match, entrypoint
    assert (ROOT / match.group(1)).is_file()
    for config in re.findall(r"--config (\S+)", entrypoint):
        assert (ROOT / config).is_file(), config
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    check_runtime_env(env)
    # the submitter pod has no requirements file: the list is written out, the same list
    assert env["pip"]["packages"] == gpu_requirements()
    assert "refs/heads" not in env["working_dir"]  # Ray caches a URL: a commit, not a branch
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
