"""Episode-engine throughput vs raw `vllm.LLM.generate` on the same prompts and token counts.

The engine runs real reflect -> retry episodes (chat rendering, per-phase batching, verifier
calls included in its wall time). Every generate call it made is recorded; then the same
prompts are replayed straight into `vllm.LLM.generate`, each sample forced to the exact length
the engine got (ignore_eos + min_tokens), with the prefix cache reset before each run so neither
side inherits the other's cache. Goal: engine >= 0.9x raw tokens/s.

Like for like on the prefix cache (issue 15). In the engine, a retry prompt extends the very
reflection ids just generated, so their KV is in vLLM's prefix cache; a raw replay re-samples
the reflections (other ids), so its retry prompts would miss it, which flattered the engine. Two
fair ways, both measured (`--prefix-caching both`, the default):

  on   prefix caching on both sides; before each raw phase after the first, the raw side's cache
       is warmed, untimed, with what the engine had cached at that point: the previous phase's
       prompts followed by the ids the ENGINE generated (`warm_prompts`). The unwarmed replay
       is printed too, for comparison with the old figure only.
  off  prefix caching off on both sides (a second engine): nothing is reused anywhere.

  .venv/bin/python bench/rollout.py [--failures 16] [--reflections 4] [--model smollm2-135m]
                                    [--prefix-caching both|on|off]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rrr.actors.verifier_pool import LocalVerifier
from rrr.actors.vllm_engine import VLLMEngine
from rrr.core.chat import ChatRenderer
from rrr.core.config import EpisodeConfig
from rrr.core.episodes import EpisodeEngine, Failure
from rrr.core.generation import GenRequest, Sample
from rrr.core.models import resolve_model
from rrr.core.tasks import get_task

DATA = Path(__file__).resolve().parents[1] / "data" / "countdown_sample.jsonl"


class Recorder:
    """A Generator that remembers every call (requests and what came back)."""

    def __init__(self, inner: VLLMEngine) -> None:
        self.inner, self.calls = inner, []

    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        out = self.inner.generate(requests)
        self.calls.append((requests, out))
        return out


Calls = list[tuple[list[GenRequest], list[list[Sample]]]]


def warm_prompts(calls: Calls, index: int) -> list[list[int]]:
    """What the engine had in its prefix cache when it made call `index`, as prompts: each
    request of the previous call followed by each sample it got (the chains grow by appending,
    so earlier calls' prompts are prefixes of these). Nothing before the first call."""
    if index == 0:
        return []
    requests, outs = calls[index - 1]
    return [
        [*req.prompt_ids, *s.token_ids] for req, samples in zip(requests, outs) for s in samples
    ]


def warm(engine: VLLMEngine, prompts: list[list[int]]) -> None:
    """Prefill `prompts` (one token generated each), untimed: their full blocks enter the
    prefix cache exactly as the engine's generated blocks did."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if prompts:
        engine.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                            SamplingParams(max_tokens=1), use_tqdm=False)  # fmt: skip


def replay_raw(engine: VLLMEngine, calls: Calls, *, warm_cache: bool) -> tuple[int, float]:
    """The recorded phases straight into vllm.LLM.generate, same prompts, same lengths."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tokens, seconds = 0, 0.0
    for index, (requests, outs) in enumerate(calls):
        if warm_cache:
            warm(engine, warm_prompts(calls, index))
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


def replay_same_requests(
    engine: VLLMEngine, calls: Calls, *, warm_cache: bool
) -> tuple[int, float]:
    """The recorded phases with identical sampling params (n, max_tokens, stop) straight into
    vllm.LLM.generate: same prompts, token counts equal only in expectation."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tokens, seconds = 0, 0.0
    for index, (requests, _) in enumerate(calls):
        if warm_cache:
            warm(engine, warm_prompts(calls, index))
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p,
                                 max_tokens=r.max_tokens, stop_token_ids=list(r.stop_token_ids),
                                 logprobs=0) for r in requests]  # fmt: skip
        t0 = time.perf_counter()
        results = engine.llm.generate(prompts, params, use_tqdm=False)
        seconds += time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for r in results for c in r.outputs)
    return tokens, seconds


def run_engine(
    engine: VLLMEngine, task, renderer: ChatRenderer, cfg: EpisodeConfig, failures
) -> tuple[Calls, int, float, int]:
    """One timed episode-engine run from a cold prefix cache: (calls, tokens, seconds,
    episodes)."""
    recorder = Recorder(engine)
    episodes = EpisodeEngine(task, renderer, recorder, LocalVerifier(task), cfg, 2048)
    engine.reset_prefix_cache()
    t0 = time.perf_counter()
    batch = episodes.run(failures)
    seconds = time.perf_counter() - t0
    tokens = sum(len(s.token_ids) for _, outs in recorder.calls for g in outs for s in g)
    return recorder.calls, tokens, seconds, len(batch.episodes)


def measure(
    engine: VLLMEngine, task, renderer: ChatRenderer, cfg: EpisodeConfig, failures, caching: bool
) -> dict[str, tuple[int, float]]:
    """(tokens, seconds) per contender: the engine (before and after the raw runs, summed:
    machine drift hits both sides alike) and the raw replays, each from a cold cache."""
    calls, e_tokens, e_s, n_episodes = run_engine(engine, task, renderer, cfg, failures)
    out: dict[str, tuple[int, float]] = {}
    engine.reset_prefix_cache()
    out["raw"] = replay_raw(engine, calls, warm_cache=caching)
    engine.reset_prefix_cache()
    out["raw_n_g"] = replay_same_requests(engine, calls, warm_cache=caching)
    if caching:  # the old, unwarmed replay: its retries miss the cache the engine's hit
        engine.reset_prefix_cache()
        out["raw_unwarmed"] = replay_raw(engine, calls, warm_cache=False)
    _, tokens2, seconds2, _ = run_engine(engine, task, renderer, cfg, failures)
    out["engine"] = (e_tokens + tokens2, e_s + seconds2)
    print(f"episodes: {n_episodes} ({len(failures)} failures x G={cfg.num_reflections}), "
          f"generate calls: {len(calls)}")  # fmt: skip
    return out


def report(mode: str, r: dict[str, tuple[int, float]]) -> float:
    """Print one mode's table; return its worse engine/raw ratio."""
    rate = {k: t / s for k, (t, s) in r.items()}
    warmed = ", cache warmed)" if mode == "on" else ")"
    labels = {
        "engine": ("episode engine", "(2 runs)"),
        "raw": ("raw vLLM", "(same lengths, n=1 each" + warmed),
        "raw_n_g": ("raw vLLM, n=G", "(same params" + warmed),
        "raw_unwarmed": ("raw, unwarmed", "(old replay: its retries miss the cache)"),
    }
    print(f"prefix caching {mode} on both sides")
    print(f"{'':16}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    for key in ("engine", "raw", "raw_n_g", "raw_unwarmed"):
        if key in r:
            name, note = labels[key]
            print(f"{name:16}{r[key][0]:>8}{r[key][1]:>10.2f}{rate[key]:>10.1f}  {note}")
    ratio, ratio_g = rate["engine"] / rate["raw"], rate["engine"] / rate["raw_n_g"]
    extra = ""
    if "raw_unwarmed" in rate:
        extra = f", engine/raw(unwarmed) = {rate['engine'] / rate['raw_unwarmed']:.3f}"
    worst = min(ratio, ratio_g)
    print(f"ratio engine/raw = {ratio:.3f}, engine/raw(n=G) = {ratio_g:.3f}{extra}  "
          f"(goal >= 0.9 for both: {'PASS' if worst >= 0.9 else 'FAIL'})")  # fmt: skip
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--failures", type=int, default=16)
    ap.add_argument("--reflections", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--prefix-caching", choices=("both", "on", "off"), default="both")
    args = ap.parse_args()

    path = resolve_model(args.model)
    modes = ["on", "off"] if args.prefix_caching == "both" else [args.prefix_caching]
    task = get_task("countdown", "qwen")
    rows = [
        task.validate_row(json.loads(line))
        for line in DATA.read_text().splitlines()[: args.failures]
    ]
    cfg = EpisodeConfig(
        num_reflections=args.reflections,
        max_attempt_tokens=args.max_tokens,
        max_reflection_tokens=args.max_tokens,
        max_retry_tokens=args.max_tokens,
    )
    failures: list[Failure] | None = None
    results = {}
    for mode in modes:
        # One engine per mode, in turn; the same failures for both. The first attempts also
        # warm each engine up (their output is used once).
        engine = VLLMEngine(
            path, max_model_len=2048, kv_cache_gib=2, enable_prefix_caching=mode == "on"
        )
        renderer = ChatRenderer(engine.tokenizer)
        first = EpisodeEngine(task, renderer, engine, LocalVerifier(task), cfg, 2048)
        samples, _, _ = first.first_attempts(rows)
        if failures is None:
            failures = [Failure(r, g[0].token_ids, g[0].text) for r, g in zip(rows, samples)]
        results[mode] = measure(engine, task, renderer, cfg, failures, caching=mode == "on")
        del first, engine  # the engine core process goes with its last reference
        gc.collect()
    for mode in modes:
        report(mode, results[mode])


if __name__ == "__main__":
    main()
