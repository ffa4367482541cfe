"""Executions per second per core of the code verifier (rrr.verifiers.code.verify), against a
plain subprocess peer measured in the same run.

Usage: python bench/code_verifier.py [--seconds N]

Workload: the vendored HumanEval rows (data/humaneval_sample.jsonl), each answered three ways in
turn, as a model would: the canonical solution in a fenced block (passes), a wrong body
(wrong_answer) and a syntax error. The process and its children are pinned to one core, so
the rate is per core. Measured:

* sandbox: ``rrr.verifiers.code.verify`` as the code task runs it (process group, PID and network
  namespaces, rlimits, nobody, temp dir, audit guard);
* no guard: the same without the audit hook (what the OS layer alone costs);
* peer: ``subprocess.run([python, -I, -S, -c, code + tests])``, no isolation at all: the floor
  any process-per-execution verifier pays.

The ratio sandbox / peer is what the isolation costs; start-up of a Python process dominates
both. Data: the bundled samples in ``<repo>/data`` (sources in data/SOURCES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, without installing the package

from rrr.core.tasks.code import CodeTask, prompt_imports  # noqa: E402
from rrr.verifiers.sandbox import run_python  # noqa: E402

TASK = CodeTask("qwen")


def workload() -> list[tuple[dict, str, bool]]:
    items = []
    for line in (ROOT / "data" / "humaneval_sample.jsonl").open():
        raw = json.loads(line)
        row = TASK.validate_row(raw)
        ep = raw["entry_point"]
        items += [
            (row, f"```python\n{raw['prompt']}{raw['canonical_solution']}```", True),
            (row, f"```python\ndef {ep}(*args):\n    return None\n```", False),
            (row, f"```python\ndef {ep}(*args)\n    return None\n```", False),
        ]
    return items


def sandbox(row: dict, response: str) -> bool:
    return TASK.verify(row, response).correct


def no_guard(row: dict, response: str) -> bool:
    from rrr.verifiers.code import extract_code

    code = prompt_imports(row["prompt"]) + (extract_code(response, row["entry_point"]) or "")
    return run_python(code, row["tests"], row["entry_point"], guard=False).outcome == "passed"


def peer(row: dict, response: str) -> bool:
    from rrr.verifiers.code import extract_code

    code = prompt_imports(row["prompt"]) + (extract_code(response, row["entry_point"]) or "")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code + "\n" + row["tests"]],
                          capture_output=True, timeout=5)  # fmt: skip
    return proc.returncode == 0


def measure(fns: list[Callable[[dict, str], bool]], items: list, seconds: float) -> dict:
    """Executions per second of each ``fn``, interleaved pass by pass over ``items`` so that
    load from other work falls on every side alike; checks every verdict is right."""
    spent = {fn.__name__: 0.0 for fn in fns}
    done = {fn.__name__: 0 for fn in fns}
    while min(spent.values()) < seconds:
        for fn in fns:
            start = time.perf_counter()
            for row, response, expected in items:
                assert fn(row, response) == expected, (fn.__name__, row.get("id"), expected)
            spent[fn.__name__] += time.perf_counter() - start
            done[fn.__name__] += len(items)
    return {name: (done[name] / spent[name], done[name]) for name in spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # children inherit it
    items = workload()
    results = measure([sandbox, no_guard, peer], items, args.seconds)
    rates = {name: rate for name, (rate, _) in results.items()}
    for name, (rate, n) in results.items():
        print(f"{name:>9}: {rate:6.1f} executions/s on one core ({n} runs)")
    print(f"sandbox / peer: {rates['sandbox'] / rates['peer']:.2f}x; "
          f"guard costs {1 - rates['sandbox'] / rates['no_guard']:+.0%}")  # fmt: skip
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} (other work skews the rate)")


if __name__ == "__main__":
    main()
