"""One import name: the wheel installs `rrr` and nothing else at the top level, so a user who
also has PyPI's `verifiers` (RL environments, same field) installed gets both, whichever comes
first on sys.path. A stand-in `verifiers` distribution is installed with pip beside rrr (local
directory, no network) and put first on the path; rrr's own verifiers must still judge."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The names rrr's packages once had at the top level; none may be imported as such again.
FORMER_TOP_LEVEL = ("actors", "learner", "verifiers")


def test_the_distribution_installs_one_top_level_name() -> None:
    assert distribution("rrr").read_text("top_level.txt").split() == ["rrr"]


def test_no_code_imports_a_former_top_level_name() -> None:
    bad = []
    for folder in ("rrr", "tests", "bench", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                bad += [
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                    for n in names
                    if n.split(".")[0] in FORMER_TOP_LEVEL
                ]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def other_verifiers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution named `verifiers` with a top-level package `verifiers`, as PyPI's is,
    installed by pip into a directory of its own."""
    src = tmp_path_factory.mktemp("src")
    (src / "verifiers").mkdir()
    (src / "verifiers" / "__init__.py").write_text('WHO = "the other verifiers"\n')
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "verifiers"
        version = "0.1.0"
        [tool.setuptools]
        packages = ["verifiers"]
    """))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def test_rrr_judges_beside_another_verifiers_package(other_verifiers: Path) -> None:
    """The other package is first on the path: `import verifiers` is theirs, and rrr's tasks,
    its verifier pool's module and the driver still import and judge with rrr's own."""
    probe = textwrap.dedent("""
        import json, verifiers
        from rrr.core.tasks import get_task
        import rrr.actors.verifier_pool, rrr.driver.cli, rrr.core.episodes
        task = get_task("countdown", "qwen")
        row = task.validate_row({"nums": [3, 5, 7], "target": 22})
        print(json.dumps({
            "theirs": verifiers.WHO,
            "right": task.verify(row, "<answer>3 * 5 + 7</answer>").correct,
            "wrong": task.verify(row, "<answer>3 + 5 + 7</answer>").correct,
            "ours": type(task.verify(row, "x")).__module__,
        }))
    """)
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True,
        env={"PYTHONPATH": str(other_verifiers), "PATH": "/usr/bin:/bin"},
        # outside the repository: at its root, the folder verifiers/ is on sys.path first
        # (and refuses a bare import by name; tests/test_import_flows.py)
        cwd=other_verifiers.parent,
    )  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {
        "theirs": "the other verifiers",
        "right": True,
        "wrong": False,
        "ours": "rrr.verifiers.verdict",
    }
