"""Episode-engine throughput vs raw `vllm.LLM.generate` on the same prompts and token counts.

The engine runs real reflect -> retry episodes (chat rendering, per-phase batching, verifier
calls included in its wall time). Every generate call it made is recorded; then the same
prompts are replayed straight into `vllm.LLM.generate`, each sample forced to the exact length
the engine got (ignore_eos + min_tokens), with the prefix cache reset before each run so neither
side inherits the other's cache. Goal: engine >= 0.9x raw tokens/s.

  .venv/bin/python bench/rollout.py [--failures 16] [--reflections 4] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.verifier_pool import LocalVerifier
from actors.vllm_engine import VLLMEngine
from rrr.chat import ChatRenderer
from rrr.config import EpisodeConfig
from rrr.episodes import EpisodeEngine, Failure
from rrr.generation import GenRequest, Sample
from rrr.models import resolve_model
from rrr.tasks import get_task

DATA = Path(__file__).resolve().parents[1] / "data" / "countdown_sample.jsonl"


class Recorder:
    """A Generator that remembers every call (requests and what came back)."""

    def __init__(self, inner: VLLMEngine) -> None:
        self.inner, self.calls = inner, []

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        out = self.inner.generate(requests)
        self.calls.append((requests, out))
        return out


def replay_raw(engine: VLLMEngine, calls) -> tuple[int, float]:
    """The recorded phases straight into vllm.LLM.generate, same prompts, same lengths."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tokens, seconds = 0, 0.0
    for requests, outs in calls:
        prompts, params = [], []
        for req, samples in zip(requests, outs):
            for s in samples:
                n = max(len(s.token_ids), 1)
                prompts.append(TokensPrompt(prompt_token_ids=list(req.prompt_ids)))
                params.append(
                    SamplingParams(
                        temperature=req.temperature,
                        max_tokens=n,
                        min_tokens=n,
                        ignore_eos=True,
                        logprobs=0,
                    )
                )
        t0 = time.perf_counter()
        results = engine.llm.generate(prompts, params, use_tqdm=False)
        seconds += time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for r in results for c in r.outputs)
    return tokens, seconds


def replay_same_requests(engine: VLLMEngine, calls) -> tuple[int, float]:
    """The recorded phases with identical sampling params (n, max_tokens, stop) straight into
    vllm.LLM.generate: same prompts, token counts equal only in expectation."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tokens, seconds = 0, 0.0
    for requests, _ in calls:
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p,
                                 max_tokens=r.max_tokens, stop_token_ids=list(r.stop_token_ids),
                                 logprobs=0) for r in requests]  # fmt: skip
        t0 = time.perf_counter()
        results = engine.llm.generate(prompts, params, use_tqdm=False)
        seconds += time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for r in results for c in r.outputs)
    return tokens, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--failures", type=int, default=16)
    ap.add_argument("--reflections", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()

    path = resolve_model(args.model)
    engine = VLLMEngine(path, max_model_len=2048, kv_cache_gib=2)
    task = get_task("countdown", "qwen")
    rows = [
        task.validate_row(json.loads(line))
        for line in DATA.read_text().splitlines()[: args.failures]
    ]
    renderer = ChatRenderer(engine.tokenizer)
    cfg = EpisodeConfig(
        num_reflections=args.reflections,
        max_attempt_tokens=args.max_tokens,
        max_reflection_tokens=args.max_tokens,
        max_retry_tokens=args.max_tokens,
    )
    warm = EpisodeEngine(task, renderer, engine, LocalVerifier(task), cfg, 2048)
    samples, _, _ = warm.first_attempts(rows)  # also warms the engine up
    failures = [Failure(r, g[0].token_ids, g[0].text) for r, g in zip(rows, samples)]

    recorder = Recorder(engine)
    episodes = EpisodeEngine(task, renderer, recorder, LocalVerifier(task), cfg, 2048)
    engine.reset_prefix_cache()
    t0 = time.perf_counter()
    batch = episodes.run(failures)
    engine_s = time.perf_counter() - t0
    engine_tokens = sum(len(s.token_ids) for _, outs in recorder.calls for g in outs for s in g)

    engine.reset_prefix_cache()
    raw_tokens, raw_s = replay_raw(engine, recorder.calls)
    engine.reset_prefix_cache()
    same_tokens, same_s = replay_same_requests(engine, recorder.calls)
    # The engine again, after the raw runs: machine drift hits both sides alike.
    again = Recorder(engine)
    engine.reset_prefix_cache()
    t0 = time.perf_counter()
    EpisodeEngine(task, renderer, again, LocalVerifier(task), cfg, 2048).run(failures)
    engine_s += time.perf_counter() - t0
    engine_tokens += sum(len(s.token_ids) for _, outs in again.calls for g in outs for s in g)
    ours, raw, same = engine_tokens / engine_s, raw_tokens / raw_s, same_tokens / same_s
    ratio = ours / raw
    print(
        f"episodes: {len(batch.episodes)} ({len(failures)} failures x G={args.reflections}), "
        f"generate calls: {len(recorder.calls)}"
    )
    print(f"{'':14}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    print(f"{'episode engine':14}{engine_tokens:>8}{engine_s:>10.2f}{ours:>10.1f}  (2 runs)")
    print(f"{'raw vLLM':14}{raw_tokens:>8}{raw_s:>10.2f}{raw:>10.1f}  (same lengths, n=1 each)")
    print(f"{'raw vLLM, n=G':14}{same_tokens:>8}{same_s:>10.2f}{same:>10.1f}  (same params)")
    worst = min(ratio, ours / same)
    print(
        f"ratio engine/raw = {ratio:.3f}, engine/raw(n=G) = {ours / same:.3f}  "
        f"(goal >= 0.9 for both: {'PASS' if worst >= 0.9 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
