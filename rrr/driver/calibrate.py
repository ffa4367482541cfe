"""Measure whether a task carries a GRPO signal for a model, before spending a training run.

Samples K first attempts per query (failures.samples_per_query, failures.temperature), keeps
the failures by the paper's rule (section 4.3), then runs G reflections + retries on each
(episode.*), exactly as `rrr train` would. Prints, as JSON:

  first_try_success    share of the K x N first attempts that were correct
  retry_success        share of retries (after a reflection) that fixed a failure
  frac_zero_std        share of failure groups whose G rewards are all equal: no signal
  reward_mean          what the training reward would start at

A task trains when retry_success is roughly 20-60 % (frac_zero_std at or below 0.5); near 0 the
reflections never help, near 1 there is nothing to learn. Also measures the evaluation decoding
(eval.*) on the same queries, so that a held-out evaluation does not saturate.

  rrr calibrate --config configs/replicate-cpu.yaml data.limit=64
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from rrr.core.config import Config

log = logging.getLogger("rrr.calibrate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-eval", action="store_true", help="skip the eval-decoding measure")
    parser.add_argument("--out", help="also write the JSON to this file")


def run(args: argparse.Namespace, cfg: Config) -> int:
    import torch

    from rrr.core import failure_data as fd
    from rrr.core.episodes import Failure
    from rrr.core.tasks.loading import load_rows
    from rrr.core.train_batch import valid_group_advantages
    from rrr.driver.evaluate import evaluate
    from rrr.driver.stack import generation_stack

    f = cfg.failures
    out: dict[str, Any] = {"model": cfg.model.name_or_path, "source": cfg.data.source}
    with generation_stack(cfg) as stack:
        rows = load_rows(stack.task, cfg.data.source, split=cfg.data.split, limit=cfg.data.limit)
        log.info(rows.summary())
        t0 = time.perf_counter()
        samples, verdicts, _ = stack.engine.first_attempts(
            rows.rows, n=f.samples_per_query, temperature=f.temperature, max_tokens=f.max_tokens
        )
        judged = [v for group in verdicts for v in group if v is not None]
        records = fd.failure_records(
            rows.rows, samples, verdicts, stack.task, f.keep, cfg.model.name_or_path
        )
        failures = [
            Failure(json.loads(r["row"]), r["failed_token_ids"], r["failed_response"])
            for r in records
        ]
        batch = stack.engine.run(failures) if failures else None
        out.update(
            queries=len(rows.rows),
            first_try_success=sum(v.correct for v in judged) / max(len(judged), 1),
            failures=len(failures),
            seconds_train_shape=round(time.perf_counter() - t0, 1),
        )
        if batch is not None:
            m = batch.metrics()
            # The trainer's statistics: episodes without a reward (verifier error, context
            # overflow) leave their group, as in rrr.core.train_batch.build_train_batch.
            adv, _ = valid_group_advantages(
                torch.tensor(batch.rewards(), dtype=torch.float32),
                torch.tensor([ep.trainable for ep in batch.episodes], dtype=torch.bool),
                batch.group_size,
            )
            out.update(
                retry_success=m["second_try_success"],
                reward_mean=m["reward_mean"],
                frac_zero_std=adv.frac_zero_std,
                reflection_tokens_mean=m["reflection_tokens_mean"],
                reflection_truncated_frac=m["reflection_truncated_frac"],
                dropped={k: v for k, v in m.items() if k.startswith("dropped_") and v},
                # What the reward would reinforce: reflections after which the retry succeeded.
                rewarded_examples=[
                    {"reflection": ep.reflection_text, "retry": ep.retry_texts[0]}
                    for ep in batch.episodes
                    if ep.trainable and ep.reward > 0 and ep.retry_texts
                ][:3],
            )
        if not args.no_eval:
            res = evaluate(cfg, stack.engine, rows.rows)
            out["eval"] = {
                k: res[k]
                for k in ("temperature", "first_try_accuracy", "second_try_accuracy", "seconds")
            }
            out["eval"]["examples"] = res["examples"][:2]  # what a failure and its retry look like
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
