"""Learner step: shared-prefix vs one row per episode, and rrr vs TRL's GRPOTrainer loss path.

Same model, same batch, same process; steps alternate between the sides so that load from other
processes hits them alike. One optimizer step = reference log-probs (no grad) + policy
forward/backward over the micro-batches + clipping + AdamW, on every side:

  shared     rrr.learner.worker.LearnerWorker.step, learner.shared_prefix=true (the default): each
             failure's context forwarded once, then its G reflections (issue 14)
  unshared   the same worker with learner.shared_prefix=false: one row per episode
  trl        (--trl) TRL's GRPOTrainer: _get_per_token_logps_and_entropies(ref_model) +
             compute_loss (loss_type "grpo", beta 0.001, the sampler's log-probs as old
             log-probs) + backward per micro-batch (loss / GAS, as the HF Trainer does),
             clip_grad_norm_, AdamW

Batch shapes (issue 14), each a batch of whole groups that share their context exactly, as
rrr.core.episodes makes them; reflections vary in length and one per group is truncated at the
limit:
  smoke    the smoke preset's step: 4 failures x G=4, context ~200 tokens, reflections <= 64
           (~48), micro_batch_size 8, gradient checkpointing on (configs/smoke-cpu.yaml)
  apigen   tool definitions make the context ~1,000 tokens; reflections ~100, G=8

Like for like with TRL (issue 15): entropy on neither side (rrr never computes it; TRL's
policy head is re-patched without its entropy output and the entropy metric reads 0), and the
same padding (TRL gets rrr's unshared micro-batches, each padded to its own longest prompt and
completion, not the batch's). TRL 1.16's fused LM head scores every position off Triton
devices (its own choice: "the number of valid positions would change the tile shapes"), so on
CPU it projects the context too; that is TRL as shipped, not a bench setting.

Prints per side: median step seconds (and the fastest: load only slows a step), tokens/s (the
episodes' real tokens / step seconds: the same numerator on every side), tokens forwarded, peak
memory of the step (CPU: peak RSS during the step above the RSS before it, sampled every few
ms, glibc's free lists trimmed first; GPU: torch.cuda.max_memory_allocated above the allocation
before it), the load average after each step, and the speed-ups.

  .venv/bin/python bench/learner.py [--shape smoke|apigen|all] [--steps 2] [--trl]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.episodes import synthetic_episodes
from rrr.core.config import LearnerConfig
from rrr.core.models import resolve_model
from rrr.core.train_batch import TrainBatch, build_train_batch
from rrr.learner.layout import shared_layout, unshared_layout
from rrr.learner.packing import default_budget, shard_batch, shard_groups
from rrr.learner.worker import LearnerWorker

MIB = 2**20
RSS_SAMPLE_S = 0.005


@dataclass(frozen=True)
class Shape:
    groups: int
    group_size: int
    context: int
    reflection: int  # the limit (episode.max_reflection_tokens); the mean is ~3/4 of it
    micro_batch_size: int
    goal: float  # speed-up of shared over unshared asked by issue 14


SHAPES = {
    # configs/smoke-cpu.yaml: failures_per_step 4, G 4, max_reflection_tokens 64, mbs 8.
    "smoke": Shape(groups=4, group_size=4, context=200, reflection=64, micro_batch_size=8, goal=2),
    # One APIGen group per step keeps the unshared side to minutes on 2 cores.
    "apigen": Shape(
        groups=1, group_size=8, context=1000, reflection=128, micro_batch_size=8, goal=4
    ),
}


def make_groups(shape: Shape, vocab: int, seed: int = 0):
    """The shape's episodes (bench/episodes.py), with a trained sampler's log-probs."""
    return synthetic_episodes(shape.groups, shape.group_size, shape.context, shape.reflection,
                              vocab, seed=seed)  # fmt: skip


# ---------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory of a block above its start: RSS sampled by a thread on CPU (torch ops
    release the GIL), the CUDA allocator's peak on GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self._base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return self
        _release_freed_memory()
        self._base = _rss()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / MIB
            return
        self._stop.set()
        self._thread.join()
        self.peak_mib = (max(self._peak, _rss()) - self._base) / MIB


def _release_freed_memory() -> None:
    """Hand memory that earlier steps freed back to the OS (glibc keeps it in its arenas), so
    that a step's RSS growth is its own and not hidden by the previous side's leftovers."""
    # Not glibc: nothing is trimmed, and a side may reuse what the previous one freed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


# ---------------------------------------------------------------------------------- TRL


def trl_micro_inputs(batch: TrainBatch, pad_id: int) -> dict[str, torch.Tensor]:
    """TRL's layout for one micro-batch of rrr's rows: left-padded prompts (the context),
    right-padded completions (the reflection), each to this micro-batch's own longest."""
    rows = []
    for b in range(batch.size):
        cols = batch.mask[b].nonzero().squeeze(1)
        start, end = int(cols[0]) + 1, int(cols[-1]) + 2  # the reflection's token span
        rows.append(
            (batch.tokens[b, :start], batch.tokens[b, start:end], batch.old_logprobs[b, cols])
        )
    pl, cl = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    n = len(rows)
    out = {
        "prompt_ids": torch.full((n, pl), pad_id),
        "prompt_mask": torch.zeros((n, pl), dtype=torch.long),
        "completion_ids": torch.full((n, cl), pad_id),
        "completion_mask": torch.zeros((n, cl), dtype=torch.long),
        "old_per_token_logps": torch.zeros((n, cl)),
        "advantages": batch.advantages,
    }
    for i, (prompt, completion, old) in enumerate(rows):
        out["prompt_ids"][i, pl - len(prompt) :] = prompt
        out["prompt_mask"][i, pl - len(prompt) :] = 1
        out["completion_ids"][i, : len(completion)] = completion
        out["completion_mask"][i, : len(completion)] = 1
        out["old_per_token_logps"][i, : len(completion)] = old
    return out


def build_trl(model_path: str, mbs: int, group: int, lr: float, out: str):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    args = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=mbs,
        num_generations=group,
        beta=0.001,
        learning_rate=lr,
        loss_type="grpo",
        gradient_checkpointing=True,  # as rrr's learner (learner.gradient_checkpointing)
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        report_to=[],
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
    )
    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["x"] * 16}),
    )
    model = trainer.model
    # Entropy on neither side: the policy's fused head again, without its entropy output, and
    # the loss path told not to ask for it (its entropy metric then reads 0).
    add_fused_lm_head(model, temperature=trainer.temperature, outputs=("log_probs",))
    scored = trainer._get_per_token_logps_and_entropies

    def logps_only(*a, compute_entropy: bool = False, **kw):
        logps, _, aux = scored(*a, compute_entropy=False, **kw)
        return logps, torch.zeros_like(logps), aux

    trainer._get_per_token_logps_and_entropies = logps_only
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return trainer, model, opt


def trl_step(trainer, model, opt, micro: list[dict[str, torch.Tensor]]) -> float:
    t0 = time.perf_counter()
    # The HF Trainer sets this each step; TRL's "grpo" loss divides by it (accumulation).
    trainer.current_gradient_accumulation_steps = len(micro)
    for mb in micro:
        ids = torch.cat([mb["prompt_ids"], mb["completion_ids"]], dim=1)
        attn = torch.cat([mb["prompt_mask"], mb["completion_mask"]], dim=1)
        with torch.no_grad():  # TRL computes these in _generate_and_score_completions
            mb["ref_per_token_logps"], _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.ref_model, ids, attn, mb["completion_ids"].size(1)
            )
        trainer.compute_loss(model, mb).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- run


@dataclass
class Side:
    name: str
    step: Callable[[], float]  # runs one step, returns its seconds
    forwarded: int  # tokens the side forwards per step (pads included)
    times: list[float]
    peak_mib: float = float("nan")


def run_shape(name: str, shape: Shape, path: str, vocab: int, args) -> dict[str, float]:
    batch = build_train_batch(*make_groups(shape, vocab), shape.group_size)
    episode_tokens = batch.num_tokens
    mbs = shape.micro_batch_size
    cfg = dict(
        lr=1e-6,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=100,
        micro_batch_size=mbs,
        kl_coef=0.001,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = shard_batch(batch, 1, mbs)[0]
    groups = shard_groups(batch, 1, default_budget(batch, mbs))[0]
    sides = []
    for shared, micro in ((False, rows), (True, groups)):
        worker = LearnerWorker(path, LearnerConfig(**cfg, shared_prefix=shared))
        layout = shared_layout if shared else unshared_layout
        sides.append(
            Side(
                "shared" if shared else "unshared",
                lambda w=worker, m=micro: w.step(m)["step_s"],
                sum(layout(mb).input_ids.numel() for mb in micro),
                [],
            )
        )
    tmp = tempfile.TemporaryDirectory()
    if args.trl:
        trainer, model, opt = build_trl(path, mbs, shape.group_size, 1e-6, tmp.name)
        micro_trl = [trl_micro_inputs(mb, pad_id=0) for mb in rows]
        sides.append(
            Side(
                "trl",
                lambda: trl_step(trainer, model, opt, micro_trl),
                sum(m["prompt_ids"].numel() + m["completion_ids"].numel() for m in micro_trl),
                [],
            )
        )
    for i in range(args.steps + 1):
        line = []
        for side in sides:
            seconds = side.step()
            if i:  # the first step of each side warms up allocators and kernels
                side.times.append(seconds)
            line.append(f"{side.name} {seconds:.2f}s")
        # Other processes' load, for reading the figures (1-minute average, sampled after).
        load = os.getloadavg()[0]
        print(f"[{name}] step {i}: " + "  ".join(line) + f"  (load {load:.1f})", flush=True)
    # Memory in its own untimed step per side: trimming the allocator before a step makes it
    # fault its pages in again, which would tax the timed steps.
    for side in sides:
        with PeakMemory(device) as mem:
            side.step()
        side.peak_mib = mem.peak_mib
    tmp.cleanup()

    print(
        f"\n[{name}] {shape.groups} groups x G={shape.group_size}, context ~{shape.context}, "
        f"reflections <= {shape.reflection} (mean {batch.metrics['reflection_tokens_mean']:.0f}); "
        f"{batch.size} episodes, {episode_tokens} tokens/step, micro-batches: unshared "
        f"{len(rows)} x <= {mbs} rows, shared {len(groups)} (budget "
        f"{default_budget(batch, mbs)} tokens); {torch.get_num_threads()} threads, {device}"
    )
    med = {side.name: statistics.median(side.times) for side in sides}
    # Load from other processes only ever slows a step: the fastest step is the least
    # disturbed estimate, the median the typical one. Both are printed, ratios of both.
    best = {side.name: min(side.times) for side in sides}
    for side in sides:
        print(
            f"  {side.name:8s} median {med[side.name]:7.2f} s/step (min {best[side.name]:7.2f})  "
            f"{episode_tokens / med[side.name]:7.1f} tokens/s  forwarded {side.forwarded:6d}  "
            f"peak +{side.peak_mib:7.0f} MiB"
        )

    def ratio(slow: str, fast: str) -> str:
        return f"{med[slow] / med[fast]:.2f}x (min: {best[slow] / best[fast]:.2f}x)"

    speedup = med["unshared"] / med["shared"]
    verdict = "PASS" if speedup >= shape.goal else "FAIL"
    goal = f"goal >= {shape.goal:g}x on the median: {verdict}"
    print(f"  shared vs unshared: {ratio('unshared', 'shared')} ({goal})")
    if "trl" in med:
        print(f"  unshared vs TRL: {ratio('trl', 'unshared')} (goal >= 1.0)")
        print(f"  shared vs TRL: {ratio('trl', 'shared')}")
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side (after 1 warm-up)")
    p.add_argument("--trl", action="store_true", help="also TRL (pip install -e .[bench])")
    args = p.parse_args()

    path = resolve_model(args.model)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(path).vocab_size
    for name in SHAPES if args.shape == "all" else [args.shape]:
        run_shape(name, SHAPES[name], path, vocab, args)


if __name__ == "__main__":
    main()
