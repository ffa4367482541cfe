"""Bad input at the command line fails at start, on one line that names the culprit, before Ray
or any actor starts: a missing model, a tokenizer without a chat template, a dataset with no
usable row, a config with an unknown key, a wrong type or more resources than the cluster has.

Each test runs the real `rrr` entry point (rrr.driver.cli.main) in-process; none starts a vLLM
engine, which is the point: a user learns of the mistake in seconds, not after a minute of start-up.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rrr.driver.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke-cpu.yaml")
COMMANDS = ["build-failures", "train"]


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    # `rrr train` installs SIGINT/SIGTERM handlers; one that fails at start must not leave
    # them on the test process (Ctrl-C would stop working).
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _actor_ids() -> set[str]:
    import ray

    return set(ray._private.state.actors())


@contextmanager
def no_ray_actor_started() -> Iterator[None]:
    """Fail if the block started Ray (when it was not running) or created any actor (when it
    was: the session's Ray, shared with other tests)."""
    import ray

    running = ray.is_initialized()
    before = _actor_ids() if running else set()
    yield
    if not running:
        started = ray.is_initialized()
        if started:
            ray.shutdown()  # leave the session as it was for the tests that follow
        assert not started, "Ray was started before the bad input was refused"
    else:
        new = _actor_ids() - before
        assert not new, f"actors started before the bad input was refused: {new}"


def run_cli(capsys: pytest.CaptureFixture[str], command: str, *words: str) -> tuple[int, str]:
    """`rrr COMMAND --config smoke-cpu.yaml WORDS...`: the exit code and the error, which is
    the last line on stderr (log lines may come before it)."""
    with no_ray_actor_started():
        code = main([command, "--config", SMOKE, *words, "logging.progress=false"])
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr  # a message, not a stack
    lines = stderr.strip().splitlines()
    return code, lines[-1] if lines else ""


def _args(command: str, tmp_path: Path, *overrides: str) -> list[str]:
    """Output locations in tmp_path for either command."""
    run_dir = tmp_path / "run"
    out = ["--out", str(tmp_path / "failures")] if command == "build-failures" else []
    return [*out, f"logging.output_dir={run_dir}", *overrides]


def _nothing_written(tmp_path: Path, *, manifest_ok: bool = False) -> None:
    """No failure shard and no checkpoint from a refused start; and, unless `manifest_ok`, no
    failure-dataset manifest either: one naming a bad model would make the rerun with the model
    fixed be refused as "built with other settings". (Resources are not in the manifest.)"""
    for failures in (tmp_path / "failures", tmp_path / "run" / "failures"):
        assert not list(failures.glob("shard-*")), failures
        if not manifest_ok:
            assert not failures.exists(), failures
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("/nope/no-such-model", "does not exist"),
        # Shaped like a hub id, so not refused as a path; offline, its tokenizer cannot load.
        ("no-such-org/no-such-model", "cannot load the tokenizer"),
    ],
)
def test_missing_model_is_named(capsys, tmp_path, command, model, says):
    code, err = run_cli(capsys, command, *_args(command, tmp_path, f"model.name_or_path={model}"))
    assert code == 1, err
    assert err.startswith(f"rrr {command}: ModelError: "), err
    assert model in err and says in err, err
    _nothing_written(tmp_path)


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory: pytest.TempPathFactory, smollm2_path: str) -> str:
    """SmolLM2's config and tokenizer with its chat template removed (both places transformers
    keeps one: chat_template.jinja and tokenizer_config.json), and no weights: the template is
    checked before anything loads them."""
    path = tmp_path_factory.mktemp("no-template")
    for name in ("config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):  # fmt: skip
        if (Path(smollm2_path) / name).is_file():
            shutil.copy(Path(smollm2_path) / name, path / name)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    from transformers import AutoTokenizer

    assert not AutoTokenizer.from_pretrained(path).chat_template  # the fixture is what it says
    return str(path)


@pytest.mark.parametrize("command", COMMANDS)
def test_tokenizer_without_chat_template_is_named(capsys, tmp_path, command, no_template_model):
    words = _args(command, tmp_path, f"model.name_or_path={no_template_model}")
    code, err = run_cli(capsys, command, *words)
    assert code == 1, err
    assert err.startswith(f"rrr {command}: ChatTemplateError: "), err
    assert "no chat template" in err and no_template_model in err, err
    _nothing_written(tmp_path)


# --- the data -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_dataset_of_only_bad_rows_stops_with_counts(capsys, tmp_path, tiny_model_path, command):
    rows = [
        {"nums": [1, 2]},  # missing_field:target
        {"target": 3},  # missing_field:nums
        {"nums": "1,2", "target": 3},  # bad_type:nums
        {"nums": [1, 2], "target": "3"},  # bad_type:target
        {"nums": [1, 2], "target": None},  # missing_field:target
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json", "[1, 2, 3]"]
    source = tmp_path / "all-bad.jsonl"
    source.write_text("\n".join(lines) + "\n")
    words = _args(command, tmp_path,
                  f"model.name_or_path={tiny_model_path}", f"data.source={source}")  # fmt: skip
    code, err = run_cli(capsys, command, *words)
    assert code == 1, err
    assert err.startswith(f"rrr {command}: DataError: no usable countdown rows"), err
    assert str(source) in err and "all 7 skipped" in err, err
    for reason in ("missing_field:target=2", "bad_json=1", "bad_type:nums=1", "not_an_object=1",
                   "missing_field:nums=1", "bad_type:target=1"):  # fmt: skip
        assert reason in err, (reason, err)
    _nothing_written(tmp_path)


# --- the config -----------------------------------------------------------------------------
# tests/test_config.py checks load_config's messages key by key; these check that the commands
# that start actors refuse the same mistakes at the door, with exit status 2.


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("yaml_text", "override", "says"),
    [
        ("rollout:\n  num_worker: 2\n", None, "rollout.num_worker: unknown key (valid: "),
        ("learner:\n  lr: fast\n", None, "learner.lr: expected float, got str 'fast'"),
        (None, "rollout.num_workers=two", "rollout.num_workers: expected int, got str 'two'"),
        (None, "verifier.timeout_s=[1]", "verifier.timeout_s: expected float, got list"),
    ],
)
def test_bad_config_is_refused_with_the_key_path(
    capsys, tmp_path, command, yaml_text, override, says
):
    words = _args(command, tmp_path, *([override] if override else []))
    if yaml_text:
        config = tmp_path / "bad.yaml"
        config.write_text(yaml_text)
        words = ["--config", str(config), *words]  # argparse: the last --config wins
    code, err = run_cli(capsys, command, *words)
    assert code == 2, err
    assert err.startswith(f"rrr {command}: bad config: {says}"), err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    _nothing_written(tmp_path)


# Without the check a rollout worker that can never be scheduled waits for its whole start-up
# time-out (15 min): the test's own time-out turns such a hang into a failure.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["rollout.num_gpus_per_worker=1"], "asks for 1 GPU but the Ray cluster has 0"),
        (["rollout.num_cpus_per_worker=64"], "asks for 65.5 CPU but the Ray cluster has 8"),
        (
            ["rollout.tensor_parallel_size=2", "rollout.num_gpus_per_worker=1"],
            "rollout.tensor_parallel_size=2 needs rollout.num_gpus_per_worker=2, got 1",
        ),
    ],
)
def test_impossible_resources_are_refused_before_any_actor(
    capsys, tmp_path, ray_local, tiny_model_path, command, overrides, says
):
    """On the session's CPU-only Ray (8 logical CPUs, no GPU), already running: the check must
    hold for a cluster the command joins, not only one it starts."""
    words = _args(command, tmp_path, f"model.name_or_path={tiny_model_path}", *overrides)
    code, err = run_cli(capsys, command, *words)
    assert code == 1, err
    assert err.startswith(f"rrr {command}: ResourceError: "), err
    assert says in err, err
    assert "rollout.num_" in err or "rollout.tensor_parallel_size" in err, err  # the key to fix
    _nothing_written(tmp_path, manifest_ok=True)
