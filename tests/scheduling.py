"""How the suite is split between two pytest workers (`pytest -n 2`, the README's test command).

CI has 2 cores, and one pytest process leaves one of them idle for much of its time: actor
processes importing torch and vLLM, engines starting, a process waiting on a Ray call are one
thread each. Two workers fill that gap. Each worker is its own test session (its own Ray and
its own shared engines), so the split keeps together what a session shares:

- a unit is one test module, as with xdist's `--dist loadfile`, except that modules which share
  one run through a session cache form one unit (SHARED_UNITS), so the run happens once;
- the unit expected to take longest goes first (EXPECTED_SECONDS, measured), so no long module
  starts last and leaves one worker alone at the end. A module missing from the table counts as
  quick and keeps its collection order.
"""

from __future__ import annotations

import os

from xdist.scheduler import LoadScopeScheduling

from rrr.core.cpus import usable_cpus

# Modules whose tests read one run that a session cache holds (tests/general_eval_run.py).
SHARED_UNITS = {
    "tests/test_paper_report.py": "tests/test_general_eval.py",
}

# Seconds per module in one pytest process on 2 cores (2026-12-07 at 952d9ae, from the "seconds
# per test module" table every run prints). Only the order matters: round numbers are enough.
EXPECTED_SECONDS = {
    "tests/test_learnability.py": 494,
    "tests/test_sync.py": 242,
    "tests/test_train_real.py": 215,
    "tests/test_job_submit.py": 190,
    "tests/test_lora_train.py": 186,
    "tests/test_reliability_train.py": 184,
    "tests/test_plugin_train.py": 168,
    "tests/test_cluster_cpu.py": 145,
    "tests/test_learner.py": 135,
    "tests/test_reliability_rollout.py": 115,
    "tests/test_lora_sync.py": 82,
    "tests/test_commands_real.py": 77,
    "tests/test_two_node.py": 74,
    "tests/test_sync_tensor_parallel.py": 69,
    "tests/test_soak.py": 64,
    "tests/test_sync_receiver.py": 53,
    "tests/test_shared_prefix.py": 48,
    "tests/test_bad_input_cli.py": 46,
    "tests/test_actor_calls.py": 36,
    "tests/test_verifier_pool.py": 28,
    "tests/test_stack_pool.py": 26,
}


def unit_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return SHARED_UNITS.get(module, module)


class ModuleUnitScheduling(LoadScopeScheduling):
    """xdist's by-file scheduling with SHARED_UNITS merged and the slowest unit first."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _assign_work_unit(self, node) -> None:
        slowest = max(self.workqueue, key=lambda unit: EXPECTED_SECONDS.get(unit, 0))
        self.workqueue.move_to_end(slowest, last=False)  # the parent hands out the first unit
        super()._assign_work_unit(node)


def pin_worker() -> None:
    """In a pytest-xdist worker, keep this process, and every process it starts (Ray, its
    actors, vLLM), to the worker's share of the CPUs: gw0 the first, gw1 the second, ...
    Unpinned, each session's learners and engines size their threads to the whole machine and
    bind them to the same cores, and two sessions' threads spin against each other (measured on
    2 cores: every module 1.5x slower than alone, test_sync 2.2x). rrr sizes threads and vLLM
    binds from the affinity mask (rrr/core/cpus.py), so a pinned session is a smaller machine."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... (set by pytest-xdist)
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = usable_cpus()
    if worker is None or count > len(cpus):
        return
    share = cpus[int(worker.removeprefix("gw")) :: count]
    for thread in os.listdir("/proc/self/task"):  # the mask is per thread: set every one's
        os.sched_setaffinity(int(thread), share)
