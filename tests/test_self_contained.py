"""The repository needs nothing beside it: a user clones it and nothing else.

Two checks: no tracked file names a path outside the tree (the team's notes live beside the
checkout during development, never beside a user's clone), and the data-reading tests pass
from a copy of the tracked files placed in an empty directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The two spellings that once pointed at the team's notes beside the checkout.
OUTSIDE = re.compile(r"\.\./shared\b|parent\s*/\s*[\"']shared[\"']")


def _tracked() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an sdist): nothing to list")
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


def test_no_tracked_file_points_outside_the_tree() -> None:
    me = Path(__file__).relative_to(ROOT).as_posix()
    offenders = []
    for name in _tracked():
        if name == me:
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{name}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_data_tests_pass_from_a_lonely_copy(tmp_path: Path) -> None:
    """The verifier and loading tests, run from a copy with nothing beside it."""
    copy = tmp_path / "lonely" / "rrr"
    for name in _tracked():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    assert list(copy.parent.iterdir()) == [copy]  # nothing beside it
    env = {**os.environ, "PYTHONPATH": str(copy)}  # the copy's modules, not the checkout's
    tests = [
        "tests/test_verifiers_countdown.py",
        "tests/test_verifiers_apigen.py",
        "tests/test_loading.py::test_bundled_countdown_sample",
        "tests/test_loading.py::test_bundled_xlam_sample",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=copy, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
