"""Forgetting check (paper section 5.2, Table 3): run lm-evaluation-harness on general benchmarks
for a vanilla and a trained model and tabulate trained - vanilla per benchmark, with the standard
error of the difference, flagging drops larger than --threshold points (the paper: < 1 %).

The first --model is the vanilla (baseline) one, the second the trained one; with a single
--model only its scores are written. A model is a Hugging Face directory, a hub id, the
embedded `smollm2-135m`, an `rrr export` output, or a training run / checkpoint directory (its
newest valid checkpoint is loaded in place). Benchmarks are lm-eval task names, by default the
paper's MMLU-Pro, GSM8K, HellaSwag and MATH (mmlu_pro, gsm8k, hellaswag, minerva_math), which
lm-eval downloads from the Hugging Face hub; rrr_local_arith and rrr_local_arith_gen are small
offline tasks shipped with rrr. Backend: vLLM where lm-eval can use it (the `vllm` package and
a CUDA GPU), else Hugging Face transformers ("hf"). Needs the eval extra (pip install -e .[eval]).

Writes results.json (all lm-eval metrics of both models plus the table) and results.md into
--out (default <logging.output_dir>/eval-general).

  rrr eval-general --model smollm2-135m --model runs/smoke --tasks rrr_local_arith --limit 20
  rrr eval-general --model Qwen/Qwen2.5-1.5B-Instruct --model runs/qwen1.5b-countdown/export \\
      --out runs/forgetting
  rrr eval-general --model A --model B --tasks gsm8k,hellaswag --limit 200 --threshold 2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rrr.core.config import Config

log = logging.getLogger("rrr.eval_general")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rrr.driver.lm_eval_harness import DEFAULT_DROP_THRESHOLD, PAPER_TASKS

    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="MODEL",
        help="model to evaluate; give it twice: first the vanilla, then the trained one",
    )
    parser.add_argument(
        "--tasks",
        default=",".join(PAPER_TASKS),
        help="comma-separated lm-eval task names (default: the paper's Table 3: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="at most this many samples per task (a value below 1 is a fraction); quick runs",
    )
    parser.add_argument(
        "--out", help="output directory (default: <logging.output_dir>/eval-general)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "hf", "vllm"),
        default="auto",
        help="lm-eval model backend (auto: vllm where usable, else hf)",
    )
    parser.add_argument(
        "--batch-size", default=None, help="lm-eval batch size or 'auto' (default: 8 on CPU, auto)"
    )
    parser.add_argument("--num-fewshot", type=int, help="override the tasks' few-shot count")
    parser.add_argument(
        "--apply-chat-template", action="store_true", help="wrap prompts in the chat template"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_DROP_THRESHOLD,
        help="flag drops larger than this many percentage points (default: %(default)s)",
    )
    parser.add_argument(
        "--include-path",
        action="append",
        default=[],
        metavar="DIR",
        help="extra directory of lm-eval YAML tasks",
    )
    parser.add_argument("--seed", type=int, default=1234, help="lm-eval random seeds")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from rrr.driver import lm_eval_harness as ge

    if len(args.model) > 2:
        raise ge.GeneralEvalError("give one --model (scores only) or two (vanilla, trained)")
    if args.limit is not None and args.limit <= 0:
        raise ge.GeneralEvalError("--limit must be > 0")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ge.GeneralEvalError("--tasks is empty")
    # Cheap checks first: a typo'd model path fails before lm-eval loads anything.
    models = [ge.resolve_eval_model(spec, cfg.model.name_or_path) for spec in args.model]
    ge.require_lm_eval()
    backend = ge.choose_backend(args.backend)
    manager = ge.task_manager(tasks, args.include_path)
    ge.check_tasks(manager, tasks)
    import torch

    batch_size = args.batch_size or ("auto" if torch.cuda.is_available() else "8")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "eval-general"
    roles = ["vanilla", "trained"] if len(models) == 2 else ["model"]

    t0 = time.perf_counter()
    outputs, model_rows = [], []
    for role, model in zip(roles, models):
        log.info("lm-eval (%s backend) on %s model %s: %s", backend, role, model.path, tasks)
        start = time.perf_counter()
        lm_out = ge.run_lm_eval(
            model,
            tasks,
            manager,
            backend=backend,
            limit=limit,
            batch_size=batch_size,
            num_fewshot=args.num_fewshot,
            apply_chat_template=args.apply_chat_template,
            max_model_len=cfg.model.max_model_len,
            seed=args.seed,
        )
        outputs.append(lm_out)
        model_rows.append(
            {
                "role": role,
                "spec": model.spec,
                "path": model.path,
                "tokenizer": model.tokenizer,
                "trained": model.trained,
                "seconds": round(time.perf_counter() - start, 2),
                "lm_eval": {k: lm_out.get(k) for k in ge.KEPT_OUTPUT_KEYS if k in lm_out},
            }
        )
    results = {
        "kind": "general_eval",  # how `rrr paper-report` recognises a Table 3 result
        "paper_table": 3,
        "models": model_rows,
        "tasks": ge.build_table(outputs, tasks, args.threshold),
        "threshold_points": args.threshold,
        "limit": limit,
        "backend": backend,
        "batch_size": batch_size,
        "num_fewshot": args.num_fewshot,
        "apply_chat_template": args.apply_chat_template,
        "seed": args.seed,
        "lm_eval_version": ge.lm_eval_version(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    missing = [r["task"] for r in results["tasks"] if not all(r["scores"])]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(out / "results.json")
    md = "## Forgetting check (paper Table 3)\n\n" + ge.markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    if missing:
        print(f"no headline metric found for: {', '.join(missing)}", file=sys.stderr)
    flagged = ge.summary_flags(results)
    if flagged:
        print(f"drops larger than {args.threshold:g} point(s): {', '.join(flagged)}")
    print(f"results: {out / 'results.json'}  table: {out / 'results.md'}")
    return 0
