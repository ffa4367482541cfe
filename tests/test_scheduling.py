"""The split between two pytest workers (tests/scheduling.py): units, order, pinning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rrr.core.cpus import usable_cpus
from tests.scheduling import EXPECTED_SECONDS, SHARED_UNITS, unit_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_named_module_exists_and_shared_modules_form_one_unit():
    for module in [*EXPECTED_SECONDS, *SHARED_UNITS, *SHARED_UNITS.values()]:
        assert (ROOT / module).is_file(), f"{module} was renamed: update tests/scheduling.py"
    assert unit_of("tests/test_paper_report.py::test_x") == "tests/test_general_eval.py"
    assert unit_of("tests/test_general_eval.py::test_y[a]") == "tests/test_general_eval.py"
    assert unit_of("tests/test_sync.py::test_z") == "tests/test_sync.py"


@pytest.mark.skipif(len(usable_cpus()) < 2, reason="pinning splits at least 2 CPUs")
def test_a_worker_and_what_it_starts_run_on_its_share_of_the_cpus():
    code = (
        "import os, subprocess, sys; from tests.scheduling import pin_worker; pin_worker(); "
        "child = subprocess.run([sys.executable, '-c', 'import os; print(sorted("
        "os.sched_getaffinity(0)))'], capture_output=True, text=True).stdout.strip(); "
        "print(sorted(os.sched_getaffinity(0)), child)"
    )
    cpus = usable_cpus()
    for worker in ("gw0", "gw1"):
        env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": "2"}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
        share = str(cpus[int(worker[2:]) :: 2]).replace(" ", "")
        assert "".join(out).count(share) == 2, (out, share)  # the worker and its child
