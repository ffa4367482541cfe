"""The test suite in one pytest process against two pinned workers (the README's test command).

Runs the same selection both ways, taking turns (one process, then `-n 2 --dist loadfile`, for
`--rounds` rounds), each from a cold start (its own Ray, its own engines), and prints each side's
wall seconds and the ratio. The one-process side gets what the two workers get: the same tests,
the same warm model cache on disk, the same machine; it is the command the README gave before.

  .venv/bin/python bench/suite_workers.py                        # the whole suite (~80 min)
  .venv/bin/python bench/suite_workers.py tests/test_actor_calls.py tests/test_verifier_pool.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = {"one process": [], "two pinned workers": ["-n", "2", "--dist", "loadfile"]}


def run(extra: list[str], selection: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *selection]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:  # a failing side would time something else
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("selection", nargs="*", help="pytest paths or node ids (default: all tests)")
    p.add_argument("--rounds", type=int, default=1, help="turns per side")
    args = p.parse_args()

    times: dict[str, list[float]] = {name: [] for name in SIDES}
    for i in range(args.rounds):
        for name, extra in SIDES.items():
            times[name].append(run(extra, args.selection))
            print(f"round {i}: {name} {times[name][-1]:.1f} s", flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    one, two = SIDES
    print(f"\nselection: {' '.join(args.selection) or 'all tests'}")
    for name in SIDES:
        print(f"  {name:20s} median {med[name]:8.1f} s over {args.rounds} round(s)")
    print(f"  speed-up: {med[one] / med[two]:.2f}x")


if __name__ == "__main__":
    main()
