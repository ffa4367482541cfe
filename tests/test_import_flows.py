"""One import name in every flow a user takes (issue 31). The product card puts actors/,
learner/ and verifiers/ at the top of the repository; they are imported only as rrr.actors,
rrr.learner and rrr.verifiers (pyproject.toml's package-dir for installs, the finder in
rrr/__init__.py for a source tree):

  (a) `pip install -e .`                       test_editable_install_from_outside_the_repo
  (b) a wheel in a clean venv                  test_wheel_in_a_clean_venv
  (c) a Ray job whose working_dir is the repo  test_a_copy_imports_itself_beside_an_install
                                               (Ray's layout, no Ray); the real job in
                                               tests/test_job_submit.py
  (d) a vLLM worker process                    tests/test_rollout_real.py
                                               (test_vllm_worker_runs_this_checkouts_extension)
  (e) pytest from the repository root          test_pytest_from_the_root_imports_the_folders
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rrr

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("actors", "learner", "verifiers")
PY = sys.executable  # the test venv's python: rrr is installed there with `pip install -e .`

# Imports the three folders and reports where each came from, whether the source-tree finder is
# installed, and which of the bare names import (none may).
PROBE = """
import importlib, json, sys
import rrr, rrr.verifiers.countdown
out = {"rrr": rrr.__file__, "finder": any(type(f).__name__ == "_SourceTreeFinder"
                                          for f in sys.meta_path)}
for name in ("actors", "learner", "verifiers"):
    spec = importlib.util.find_spec("rrr." + name)
    out[name] = spec.origin
    try:
        importlib.import_module(name)
        out["bare_" + name] = True
    except ModuleNotFoundError as e:
        out["bare_" + name] = False
        out["why_" + name] = str(e)
out["judged"] = rrr.verifiers.countdown.verify("<answer>3 + 5</answer>", [3, 5], 8).correct
print(json.dumps(out))
"""


def _probe(python: str | Path, cwd: Path, env: dict | None = None) -> dict:
    done = subprocess.run([str(python), "-c", PROBE], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_from(out: dict, base: Path) -> None:
    for name in FOLDERS:
        assert Path(out[name]).resolve().is_relative_to(base.resolve()), (name, out[name], base)
        assert out["bare_" + name] is False, f"`import {name}` worked: {out}"
    assert out["judged"] is True


def test_pytest_from_the_root_imports_the_folders() -> None:
    """(e) This very process: pytest from the root finds rrr/ in the root, and the finder
    serves the three folders from the same root."""
    import rrr.actors
    import rrr.learner
    import rrr.verifiers

    assert Path(rrr.__file__).parent == ROOT / "rrr"
    for module, name in ((rrr.actors, "actors"), (rrr.learner, "learner"),
                         (rrr.verifiers, "verifiers")):  # fmt: skip
        assert Path(module.__file__) == ROOT / name / "__init__.py"
        assert list(module.__path__) == [str(ROOT / name)]
    assert not {"actors", "learner", "verifiers"} & set(sys.modules)


def test_the_finder_answers_only_its_three_names() -> None:
    finder = rrr._SourceTreeFinder(ROOT)
    spec = finder.find_spec("rrr.learner")
    assert spec is not None and Path(spec.origin) == ROOT / "learner" / "__init__.py"
    assert spec.submodule_search_locations == [str(ROOT / "learner")]
    for other in ("actors", "learner", "verifiers", "rrr.core", "rrr.driver", "rrr.tests",
                  "rrr.actors.vllm_engine", "other.actors", "rrr"):  # fmt: skip
        assert finder.find_spec(other) is None, other
    # one finder per process, first on the path, whatever reloads rrr
    assert sum(isinstance(f, rrr._SourceTreeFinder) for f in sys.meta_path) == 1


def test_editable_install_from_outside_the_repo(tmp_path: Path) -> None:
    """(a) The test venv holds rrr as `pip install -e .`: from a directory outside the repo the
    three names resolve into this checkout, and `import actors` (learner, verifiers) fails."""
    out = _probe(PY, tmp_path)
    assert Path(out["rrr"]).parent == ROOT / "rrr"
    _assert_from(out, ROOT)


def test_a_copy_imports_itself_beside_an_install(tmp_path: Path) -> None:
    """(c) without Ray: a Ray job unpacks its working_dir elsewhere, makes it the cwd and puts
    it first on PYTHONPATH. The copy must import completely from itself even though this
    checkout is installed (editable) in the same venv."""
    copy = tmp_path / "working_dir"
    for name in ("rrr", *FOLDERS):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy), "HOME": str(tmp_path)}
    out = _probe(PY, copy, env)
    assert Path(out["rrr"]).parent == copy / "rrr" and out["finder"] is True
    _assert_from(out, copy)
    # There the root is on sys.path, so a bare `import actors` finds the folder, and its guard
    # refuses it by name instead of loading rrr.actors a second time as `actors`.
    assert "is rrr.actors: import it as such" in out["why_actors"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "rrr"  # a clean copy: no build/ or egg-info left in ROOT
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "__pycache__", "*.egg-info", "build", "tests", "docs", "data"))
    done = subprocess.run(
        [PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("rrr-*.whl")
    return built


def test_the_wheel_holds_every_module_under_rrr(wheel: Path) -> None:
    """Every .py of the five layer folders is in the wheel, under rrr/, and nothing at the top
    level but rrr/ and the metadata (the package list in pyproject.toml is explicit)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"rrr/{p.relative_to(ROOT / 'rrr').as_posix()}"
                for p in (ROOT / "rrr").rglob("*.py")}  # fmt: skip
    for name in FOLDERS:
        expected |= {f"rrr/{name}/{p.relative_to(ROOT / name).as_posix()}"
                     for p in (ROOT / name).rglob("*.py")}  # fmt: skip
    assert expected - names == set()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rrr"}
    assert any(n.startswith("rrr/driver/lm_eval_tasks/") and n.endswith(".yaml") for n in names)


def test_wheel_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    """(b) The wheel, installed with nothing else into a venv outside the repo: rrr.actors and
    friends come from the venv's rrr/ package, the finder is not installed, and the bare names
    do not import. (The venv has no Ray or torch: find_spec locates the layer packages, whose
    __init__ files import nothing heavy; the verifiers, pure stdlib, judge.)"""
    venv = tmp_path / "venv"
    subprocess.run([PY, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = _probe(python, tmp_path)
    site = Path(out["rrr"]).parent
    assert site.name == "rrr" and site.resolve().is_relative_to(venv.resolve())
    assert out["finder"] is False
    _assert_from(out, site)
