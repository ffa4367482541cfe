"""The test tiers (tests/conftest.py) hold: every test has exactly one of unit / model / stack,
no unit test asks for a model or Ray, every model and stack test is slow, and a unit test that
starts Ray or builds a model anyway fails instead of passing in the wrong tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ray
from transformers import LlamaConfig, LlamaForCausalLM

from tests.conftest import COLLECTED, MODEL_FIXTURES, STACK_FIXTURES, TIERS

ROOT = Path(__file__).resolve().parents[1]

DUMP = """
import json

from tests.conftest import COLLECTED

def pytest_collection_finish(session):
    with open(OUT, "w") as handle:
        json.dump(session.config.stash[COLLECTED], handle)
"""


@pytest.fixture(scope="module")
def collected(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list:
    """Every test of the suite as pytest collects it: this session's own list when it collected
    every module (a whole run, or one `-m` selects from), else a separate collection."""
    rows = request.config.stash.get(COLLECTED, [])
    modules = {row["id"].split("::")[0] for row in rows}
    if {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")} <= modules:
        return rows
    folder = tmp_path_factory.mktemp("tier-dump")
    out = folder / "items.json"
    (folder / "tier_dump.py").write_text(f"OUT = {str(out)!r}\n" + textwrap.dedent(DUMP))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "tier_dump",
         "-p", "no:cacheprovider", "tests"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return json.loads(out.read_text())


def _tiers(row: dict) -> list[str]:
    return [m for m in row["marks"] if m in TIERS]


def test_every_test_has_exactly_one_tier(collected: list[dict]) -> None:
    assert len(collected) > 500
    assert [(r["id"], _tiers(r)) for r in collected if len(_tiers(r)) != 1] == []
    assert {_tiers(r)[0] for r in collected} == set(TIERS)


def test_unit_tests_ask_for_no_model_and_no_ray(collected: list[dict]) -> None:
    heavy = MODEL_FIXTURES | STACK_FIXTURES
    wrong = [(r["id"], sorted(heavy & set(r["fixtures"]))) for r in collected
             if _tiers(r) == ["unit"] and heavy & set(r["fixtures"])]  # fmt: skip
    assert wrong == []
    # A test that asks for Ray is in the stack tier even where it also builds a model.
    for r in collected:
        if STACK_FIXTURES & set(r["fixtures"]):
            assert _tiers(r) == ["stack"], r["id"]


def test_not_slow_is_part_of_the_unit_tier(collected: list[dict]) -> None:
    assert [r["id"] for r in collected if "slow" not in r["marks"] and _tiers(r) != ["unit"]] == []
    # Tests that start their own Ray head or `rrr train` process carry the mark by hand.
    by_module = {r["id"].split("::")[0]: _tiers(r) for r in collected}
    for module in ("test_job_submit", "test_dashboard", "test_two_node"):
        assert by_module[f"tests/{module}.py"] == ["stack"], module


def test_a_unit_test_cannot_start_ray_or_build_a_model() -> None:
    # This test is in the unit tier, so tests/conftest.py guards it while it runs.
    assert getattr(ray.init, "__name__", "") == "refuse", "the unit guard is not on"
    with pytest.raises(AssertionError, match="unit tier but starts Ray"):
        ray.init(address="local")
    tiny = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                       num_attention_heads=1, num_key_value_heads=1)  # fmt: skip
    with pytest.raises(AssertionError, match="unit tier but builds a model"):
        LlamaForCausalLM(tiny)
