"""The split between two pytest workers (tests/scheduling.py): units, order, pinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scheduling import EXPECTED_SECONDS, SHARED_UNITS, unit_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_named_module_exists_and_shared_modules_form_one_unit():
    for module in [*EXPECTED_SECONDS, *SHARED_UNITS, *SHARED_UNITS.values()]:
        assert (ROOT / module).is_file(), f"{module} was renamed: update tests/scheduling.py"
    assert unit_of("tests/test_paper_report.py::test_x") == "tests/test_general_eval.py"
    assert unit_of("tests/test_general_eval.py::test_y[a]") == "tests/test_general_eval.py"
    assert unit_of("tests/test_sync.py::test_z") == "tests/test_sync.py"


# A worker under `pytest -n 2` is itself pinned to one core: the child first widens its mask
# to the machine's CPUs (allowed unless a cpuset forbids it), then pins as a worker would.
_PIN = """
import json, os, subprocess, sys
try:
    os.sched_setaffinity(0, range(os.cpu_count()))
except OSError:
    pass
before = sorted(os.sched_getaffinity(0))
from tests.scheduling import pin_worker
pin_worker()
child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                       capture_output=True, text=True).stdout
print(json.dumps([before, sorted(os.sched_getaffinity(0)), json.loads(child)]))
"""


def test_a_worker_and_what_it_starts_run_on_its_share_of_the_cpus():
    for worker in ("gw0", "gw1"):
        env = {**os.environ, "PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": "2"}
        out = subprocess.run([sys.executable, "-c", _PIN], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        before, pinned, child = json.loads(out.strip().splitlines()[-1])
        if len(before) < 2:
            pytest.skip("this machine offers one CPU: there is nothing to split")
        assert pinned == before[int(worker[2:]) :: 2], (worker, before, pinned)
        assert child == pinned  # what the worker starts (Ray, actors, vLLM) inherits its share
