"""vLLM's engine core in the rollout worker's own process vs in a child process (vLLM's
default), on CPU: seconds to a ready engine, tokens/s of the same seeded batches, and whether a
repeat of a seeded call samples the same tokens (what worker restarts and exact resume rely on).

Each mode runs in its own Python process (the switch is read when vLLM builds the engine), the
two alternate twice so drift of this noisy machine hits both alike. Prints in-process / child
start seconds and tokens/s, and the repeat match counts (rollout.in_process_engine is an opt-in).

  .venv/bin/python bench/engine_core.py [--model smollm2-135m] [--prompts 48] [--tokens 64]
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


def run_mode(model: str, in_process: bool, prompts: int, tokens: int) -> dict:
    from rrr.actors.vllm_engine import VLLMEngine
    from rrr.core.generation import GenRequest
    from rrr.core.models import resolve_model

    path = resolve_model(model)
    t0 = time.perf_counter()  # vLLM imports inside: once here, once per child process
    engine = VLLMEngine(path, max_model_len=2048, kv_cache_gib=2, in_process=in_process)
    start_s = time.perf_counter() - t0
    ids = engine.tokenizer.encode("Using the numbers 3, 5 and 7, write an equation that")
    requests = [
        GenRequest(prompt_ids=[*ids, 100 + i], n=2, max_tokens=tokens) for i in range(prompts)
    ]
    engine.generate(requests[:4], seed=0)  # warm-up
    first, times, matches, generated = None, [], 0, 0
    for _ in range(3):
        t0 = time.perf_counter()
        out = engine.generate(requests, seed=7)
        times.append(time.perf_counter() - t0)
        generated += sum(len(s.token_ids) for g in out for s in g)
        tokens_out = [[s.token_ids for s in g] for g in out]
        if first is None:
            first = tokens_out
        else:
            matches += tokens_out == first
    return {"start_s": start_s, "tokens_per_s": generated / sum(times),
            "repeats_matching": matches, "repeats": 2}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", choices=["in", "out"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = run_mode(args.model, args.child == "in", args.prompts, args.tokens)
        print("RESULT " + json.dumps(result))
        return
    results: dict[str, list[dict]] = {"in": [], "out": []}
    for mode in ("in", "out", "out", "in"):
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model,
               "--prompts", str(args.prompts), "--tokens", str(args.tokens)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results[mode].append(json.loads(line[len("RESULT ") :]))
    tps = {m: sum(r["tokens_per_s"] for r in rs) / len(rs) for m, rs in results.items()}
    start = {m: sum(r["start_s"] for r in rs) / len(rs) for m, rs in results.items()}
    same = {m: sum(r["repeats_matching"] for r in rs) for m, rs in results.items()}
    total = {m: sum(r["repeats"] for r in rs) for m, rs in results.items()}
    print(f"engine core in process:  {tps['in']:.1f} tokens/s, seeded repeats identical "
          f"{same['in']}/{total['in']}")  # fmt: skip
    print(f"engine core in a child:  {tps['out']:.1f} tokens/s, seeded repeats identical "
          f"{same['out']}/{total['out']}")  # fmt: skip
    print(f"ratio in-process / child: {tps['in'] / tps['out']:.2f}x tokens/s")
    print(f"engine start: {start['in']:.1f} s in process, {start['out']:.1f} s with a child "
          f"({start['out'] / start['in']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
