"""Train with GRPO on reflection tokens (the Ray job entrypoint).

Connects to the Ray cluster it was submitted to (`ray job submit ... -- rrr train ...`) or
starts a local Ray; starts the rollout workers, the verifier pool and the learner group; then
loops: failures -> reflect x G -> retry -> verify -> group advantages -> learner step -> weight
sync -> metrics -> checkpoint. Restarted with the same logging.output_dir, it resumes from the
newest valid checkpoint (same step, same data order). Ctrl-C / SIGTERM / `ray job stop` finish
the current step, write a checkpoint and release the actors.

  rrr train --config configs/smoke-cpu.yaml
  rrr train --config configs/smoke-cpu.yaml learner.max_steps=30 logging.output_dir=runs/s30

Outputs in logging.output_dir: config.yaml, failures/ (when built here), metrics.jsonl,
tb/ (TensorBoard), checkpoints/step_XXXXXXXX; `rrr report DIR` draws the curves.
"""

from __future__ import annotations

import argparse
import json

from rrr.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # everything is configuration


def run(args: argparse.Namespace, cfg: Config) -> int:
    from rrr.trainer import train

    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {summary['run_dir']}  (curves: rrr report {summary['run_dir']})")
    return 0
