"""Failure building (paper 4.3) with and without vLLM prefix caching at K samples per query.

Each setting runs in its own subprocess (a fresh engine, same seed, same queries), timing only
the sampling + verification of K first attempts per query. Prints both rates and the speed-up.

  .venv/bin/python bench/failures.py [--queries 16] [--k 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data" / "countdown_sample.jsonl"


def one_run(args: argparse.Namespace) -> dict[str, float]:
    from rrr.actors.verifier_pool import LocalVerifier
    from rrr.actors.vllm_engine import VLLMEngine
    from rrr.core.chat import ChatRenderer
    from rrr.core.config import EpisodeConfig
    from rrr.core.episodes import EpisodeEngine
    from rrr.core.models import resolve_model
    from rrr.core.tasks import get_task

    engine = VLLMEngine(
        resolve_model(args.model),
        max_model_len=2048,
        kv_cache_gib=2,
        enable_prefix_caching=args.prefix_caching == "on",
    )
    task = get_task("countdown", "qwen")
    rows = [
        task.validate_row(json.loads(line))
        for line in DATA.read_text().splitlines()[: args.queries]
    ]
    episodes = EpisodeEngine(
        task, ChatRenderer(engine.tokenizer), engine, LocalVerifier(task), EpisodeConfig(), 2048
    )
    episodes.first_attempts(rows[:2], n=2, max_tokens=8)  # warm-up
    t0 = time.perf_counter()
    samples, verdicts, _ = episodes.first_attempts(rows, n=args.k, max_tokens=args.max_tokens)
    seconds = time.perf_counter() - t0
    failed = sum(any(not v.correct for v in vs) for vs in verdicts)
    tokens = sum(len(s.token_ids) for g in samples for s in g)
    return {"seconds": seconds, "tokens": tokens, "failed_queries": failed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prefix-caching", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prefix_caching:
        print("RESULT " + json.dumps(one_run(args)))
        return
    results = {}
    for setting in ("off", "on"):
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--queries",
            str(args.queries),
            "--k",
            str(args.k),
            "--max-tokens",
            str(args.max_tokens),
            "--prefix-caching",
            setting,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results[setting] = json.loads(line[len("RESULT ") :])
    print(f"{args.queries} queries x K={args.k} samples, <= {args.max_tokens} tokens each")
    for setting, r in results.items():
        rate = args.queries / r["seconds"]
        print(
            f"prefix caching {setting:>3}: {r['seconds']:7.2f} s  {rate:6.2f} queries/s  "
            f"{r['tokens'] / r['seconds']:7.1f} tokens/s  failed queries {r['failed_queries']}"
        )
    speedup = results["off"]["seconds"] / results["on"]["seconds"]
    print(f"speed-up from prefix caching: {speedup:.2f}x")


if __name__ == "__main__":
    main()
