"""Learner check for a machine with CUDA torch and nothing else (issue 32, item 5).

Many GPU machines hold torch alone. This script shows a learner problem before vLLM, Ray and
the rest of the stack are installed. It imports torch, transformers (with what transformers
itself needs: numpy, pyyaml, safetensors) and rrr's own learner code from this source tree.
It puts the repository root on sys.path, and rrr/__init__.py's finder then serves
rrr.learner. It never imports Ray or vLLM, and the summary lists the modules of either that
were imported. DeepSpeed is optional. Models are random-init, built from transformers' config
classes with the shapes of rrr.core.model_shapes, so nothing is downloaded.

Checks, in order; each ends PASS, FAIL or SKIP, with its numbers:

  learner_step    rrr.learner.worker.LearnerWorker, torch engine (fp32 master weights, bf16
                  autocast on GPU, gradient checkpointing, k3 KL to a frozen reference, fused
                  AdamW). It runs two optimizer steps on a batch of whole groups in the
                  shared-prefix layout. The loss and gradient norm must be finite, the weights
                  must move, and there must be no fallback to one row per episode.
  shared_prefix   One model and one batch, two layouts: the shared-prefix layout against one
                  row per episode. It compares the log-probs of the trained tokens and the
                  gradients of the same GRPO loss (max abs difference against a tolerance:
                  bf16 on GPU, tight on CPU). It also reports the time and peak memory of each
                  side's forward + backward (torch.cuda.max_memory_allocated above the start;
                  n/a on CPU). On CUDA, SDPA is held to its memory-efficient kernel
                  (sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)). That is the kernel that takes
                  the block mask.
  adamw           torch.optim.AdamW(fused=True), the optimizer of both learner engines, against
                  foreach AdamW on the same parameters and gradients, checked for equal
                  updates. The time of each step is reported.
  mfu             MFU of the torch engine's recipe (fp32 master weights + bf16 autocast,
                  gradient checkpointing, fused AdamW, clipping). It runs on a random-init
                  model of the Qwen/Qwen2.5-1.5B-Instruct shape: 6 x N x tokens/s / peak FLOP/s,
                  where peak is --peak-tflops (default 989, H100/H200 SXM dense bf16).
                  bench/mfu.py gives the same figure for DeepSpeed.
  deepspeed_step  (DeepSpeed importable) LearnerWorker with the ZeRO-2 engine (bf16 on GPU),
                  two steps on the learner_step batch. Its losses are set beside the torch
                  engine's.
  deepspeed_mfu   (DeepSpeed importable) bench/mfu.py's measurement: a ZeRO-2 bf16 engine
                  built from rrr's DeepSpeed config, on the MFU shape.

--reduced (the default on a machine without CUDA) uses tiny shapes and skips DeepSpeed
unless --deepspeed on. It finishes in seconds on a CPU, which is how tests/test_learner_check.py
runs it. The whole check keeps to --budget-s (default 300 s): a check that would start after
the budget is spent is skipped, and one still running past the budget + a grace period is
stopped. One summary file (--summary, default runs/learner-check/summary.md; a .json path
writes JSON) holds every check's result, numbers, the device and the versions. The exit status
is 1 if any check failed, 2 if transformers is missing.

  python bench/learner_check.py                      # on a CUDA machine: ~1-2 min
  python bench/learner_check.py --reduced            # anywhere: seconds
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (after the source tree is on sys.path, as bench/mfu.py)

MIB, GIB = 2**20, 2**30
MFU_SHAPE = "Qwen/Qwen2.5-1.5B-Instruct"
CHECK_SHAPE = "smollm2-135m"  # learner_step, shared_prefix, adamw on GPU
# The reduced mode's model: a Llama of bench/mfu.py's tiny shape.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512,
        "tie_word_embeddings": True, "attention_bias": False}  # fmt: skip
# Seconds a check needs at least to be started (full mode; reduced: a tenth).
MIN_S = {"learner_step": 30, "shared_prefix": 30, "adamw": 15, "mfu": 45,
         "deepspeed_step": 45, "deepspeed_mfu": 60}  # fmt: skip
GRACE_S = 120  # past the budget, a check still running is stopped (SIGALRM)


@dataclass(frozen=True)
class Batch:
    """A step batch of whole groups, shaped like rrr.core.episodes' output."""

    groups: int
    group_size: int
    context: int
    reflection: int  # the limit; lengths spread from half of it to it
    micro_batch_size: int


FULL_BATCH = Batch(groups=4, group_size=8, context=1000, reflection=128, micro_batch_size=8)
REDUCED_BATCH = Batch(groups=2, group_size=3, context=24, reflection=8, micro_batch_size=3)


@dataclass
class Result:
    name: str
    status: str = "PASS"  # PASS | FAIL | SKIP
    seconds: float = 0.0
    line: str = ""  # the one-line summary of the table
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.status = "FAIL"
        self.notes.append(f"FAIL: {why}")


class BudgetExceeded(Exception):
    pass


@dataclass
class Ctx:
    args: argparse.Namespace
    device: torch.device
    reduced: bool
    t0: float
    batch_shape: Batch
    check_values: dict[str, Any]
    mfu_values: dict[str, Any]
    work: Path
    shared: dict[str, Any] = field(default_factory=dict)  # what later checks reuse

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize()


# ---------------------------------------------------------------------------------- helpers


def model_type(values: dict[str, Any]) -> str:
    # Qwen2 carries q/k/v biases; the Llama-shaped ones (SmolLM2, tiny) do not.
    return "qwen2" if values.get("attention_bias") else "llama"


def build_model(values: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A random-init causal LM of this shape, built on `device` (no CPU init of 1.5B floats),
    SDPA attention as the learner loads it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type(values), **values)
    torch.manual_seed(seed)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device)


def param_count(name: str, values: dict[str, Any]) -> int:
    from rrr.core.model_shapes import from_config

    return from_config(name, values).params


def make_batch(shape: Batch, vocab: int, seed: int = 0):
    """The shape's episodes (bench/episodes.py) as a train batch, with log-probs near log(1/V),
    where a random-init model's are: PPO ratios start near 1 and few tokens are clipped."""
    from bench.episodes import synthetic_episodes
    from rrr.core.train_batch import build_train_batch

    episodes = synthetic_episodes(
        shape.groups, shape.group_size, shape.context, shape.reflection, vocab,
        seed=seed, logprobs="near_uniform",
    )  # fmt: skip
    return build_train_batch(*episodes, shape.group_size)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def peak_memory(ctx: Ctx, out: dict[str, Any], key: str) -> Iterator[None]:
    """out[key] = peak MiB allocated above the start (CUDA); n/a on CPU."""
    if not ctx.gpu:
        yield
        out[key] = "n/a (CPU)"
        return
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    yield
    torch.cuda.synchronize()
    out[key] = round((torch.cuda.max_memory_allocated() - base) / MIB, 1)


def efficient_kernel(ctx: Ctx):
    """SDPA held to its memory-efficient kernel on CUDA; the CPU's own choice elsewhere."""
    if not ctx.gpu:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)


def efficient_kernel_takes_gqa(ctx: Ctx) -> bool:
    """Whether this torch's memory-efficient kernel takes grouped KV heads (enable_gqa). When
    there is no mask, transformers hands it grouped heads on CUDA; not every torch takes them."""
    q = torch.randn(1, 4, 16, 64, device=ctx.device, dtype=torch.bfloat16)
    kv = torch.randn(1, 2, 16, 64, device=ctx.device, dtype=torch.bfloat16)
    try:
        with efficient_kernel(ctx):
            torch.nn.functional.scaled_dot_product_attention(
                q, kv, kv, is_causal=True, enable_gqa=True
            )
    except RuntimeError:
        return False
    return True


def finite(*xs: float) -> bool:
    return all(math.isfinite(float(x)) for x in xs)


def ray_vllm_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "vllm"))


def third_party_modules() -> list[str]:
    tops = {m.split(".")[0] for m in sys.modules if not m.startswith("_")}
    return sorted(m for m in tops if m not in sys.stdlib_module_names and m != "__main__")


# ---------------------------------------------------------------------------------- checks


def step_batch(ctx: Ctx):
    """The step batch of learner_step, shared_prefix and deepspeed_step (made once)."""
    if "batch" not in ctx.shared:
        ctx.shared["batch"] = make_batch(ctx.batch_shape, ctx.check_values["vocab_size"])
    return ctx.shared["batch"]


def learner_config(ctx: Ctx, **over: Any):
    from rrr.core.config import LearnerConfig

    base = dict(
        lr=1e-5,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=10,
        micro_batch_size=ctx.batch_shape.micro_batch_size,
        kl_coef=0.001,
        shared_prefix=True,
        seed=0,
    )
    return LearnerConfig(**(base | over))


def model_dir(ctx: Ctx) -> str:
    """The check model, random-init, saved once (LearnerWorker loads a directory)."""
    if "model_dir" not in ctx.shared:
        model = build_model(ctx.check_values, torch.device("cpu"), torch.float32)
        path = ctx.work / "check-model"
        model.save_pretrained(path)
        del model
        ctx.shared["model_dir"] = str(path)
    return ctx.shared["model_dir"]


def run_worker_steps(ctx: Ctx, res: Result, backend: str, steps: int = 2) -> list[dict]:
    from rrr.learner.packing import default_budget, shard_groups
    from rrr.learner.worker import LearnerWorker

    batch = step_batch(ctx)
    mbs = ctx.batch_shape.micro_batch_size
    micro = shard_groups(batch, 1, default_budget(batch, mbs))[0]
    over = {"backend": backend}
    if backend == "deepspeed":
        over["zero_stage"] = 2
    worker = LearnerWorker(model_dir(ctx), learner_config(ctx, **over), device=str(ctx.device))
    try:
        before = [p.detach().float().clone() for p in worker.hf_model.parameters()]
        out = []
        if ctx.gpu:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            out.append(worker.step(micro))
        moved = max(
            float((p.detach().float() - b).abs().max())
            for p, b in zip(worker.hf_model.parameters(), before)
        )
        n = res.numbers
        n["backend"] = worker.backend
        n["micro_batches"] = len(micro)
        n["episodes"] = batch.size
        n["seq_tokens"] = int(out[0]["seq_tokens"])
        n["forward_tokens"] = int(out[0]["forward_tokens"])
        n["loss"] = [round(m["loss"], 6) for m in out]
        n["grad_norm"] = [round(m["grad_norm"], 6) for m in out]
        n["step_s"] = [round(m["step_s"], 3) for m in out]
        n["tokens_per_s (last step)"] = round(out[-1]["tokens_per_s"], 1)
        n["max weight change"] = f"{moved:.3g}"
        n["global_step"] = int(out[-1]["global_step"])
        n["peak_mem_gib"] = (
            round(torch.cuda.max_memory_allocated() / GIB, 2) if ctx.gpu else "n/a (CPU)"
        )
        if not all(finite(m["loss"], m["grad_norm"]) for m in out):
            res.fail("a loss or gradient norm is not finite")
        if not all(m["grad_norm"] > 0 for m in out):
            res.fail("zero gradient norm")
        if not moved > 0:
            res.fail("the optimizer step left every weight unchanged")
        if n["global_step"] != steps:
            res.fail(f"global_step {n['global_step']} after {steps} steps")
        if not worker.shared_prefix:
            res.fail("the worker fell back to one row per episode")
        return out
    finally:
        del worker
        free_memory()


def check_learner_step(ctx: Ctx, res: Result) -> None:
    out = run_worker_steps(ctx, res, "torch")
    ctx.shared["torch_losses"] = [m["loss"] for m in out]
    n = res.numbers
    res.line = (
        f"torch engine, {n['episodes']} episodes in {n['micro_batches']} micro-batches: "
        f"loss {n['loss'][-1]:.4g}, grad norm {n['grad_norm'][-1]:.3g}, "
        f"{n['step_s'][-1]:.2f} s/step"
    )


def check_shared_prefix(ctx: Ctx, res: Result) -> None:
    from rrr.core.grpo import policy_loss
    from rrr.learner.layout import shared_layout, unshared_layout
    from rrr.learner.logprobs import layout_logprobs, shared_prefix_unsupported

    values = dict(ctx.check_values)
    n = res.numbers
    if ctx.gpu:
        n["sdpa kernel"] = "EFFICIENT_ATTENTION (forced)"
        if not efficient_kernel_takes_gqa(ctx):
            # Without a mask (the unshared layout) transformers would hand the kernel grouped
            # KV heads, which this torch's efficient kernel refuses: ungroup the check model.
            values["num_key_value_heads"] = values["num_attention_heads"]
            res.notes.append(
                "this torch's efficient SDPA kernel takes no grouped KV heads "
                "(enable_gqa): the check model has one KV head per query head"
            )
    else:
        n["sdpa kernel"] = "the CPU's default (no efficient kernel on CPU)"
    model = build_model(values, ctx.device, torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    why = shared_prefix_unsupported(model)
    if why:
        res.fail(f"shared prefix unsupported on the check model: {why}")
        return
    batch = step_batch(ctx)
    autocast = torch.bfloat16 if ctx.gpu else None
    n["precision"] = "fp32 weights, bf16 autocast" if ctx.gpu else "fp32"
    kw = {"device": ctx.device, "autocast": autocast}
    mask = batch.mask.to(ctx.device)
    old, adv = batch.old_logprobs.to(ctx.device), batch.advantages.to(ctx.device)
    layouts = {"unshared": unshared_layout(batch), "shared": shared_layout(batch)}
    lps, grads, times, losses = {}, {}, {}, {}
    reps = 1 if ctx.reduced else 3  # after one warm-up
    with efficient_kernel(ctx):
        with torch.no_grad():
            for side, lay in layouts.items():
                lps[side] = layout_logprobs(model, lay, **kw)[mask].float()
        for side, lay in layouts.items():
            seconds = []
            for rep in range(reps + 1):
                model.zero_grad(set_to_none=True)
                ctx.sync()
                timed = rep == reps
                with peak_memory(ctx, n, f"peak_mib {side}") if timed else contextlib.nullcontext():
                    t = time.perf_counter()
                    lp = layout_logprobs(model, lay, **kw)
                    loss, _ = policy_loss(lp, old, None, adv, mask, kl_coef=0.0)
                    loss.backward()
                    ctx.sync()
                    if rep:
                        seconds.append(time.perf_counter() - t)
            times[side] = statistics.median(seconds)
            losses[side] = float(loss.detach())
            grads[side] = torch.cat(
                [p.grad.flatten().float() for p in model.parameters() if p.grad is not None]
            )
    del model
    lp_diff = float((lps["shared"] - lps["unshared"]).abs().max())
    g_u, g_s = grads["unshared"], grads["shared"]
    g_diff = (g_s - g_u).abs()
    scale = float(g_u.abs().max())
    cos = float(torch.nn.functional.cosine_similarity(g_s.double(), g_u.double(), dim=0))
    n["episodes"] = batch.size
    n["trained tokens"] = int(mask.sum())
    for side, lay in layouts.items():
        n[f"forward_tokens {side}"] = lay.forward_tokens
        n[f"fwd+bwd s {side}"] = round(times[side], 4)
    n["speed-up (unshared / shared)"] = round(times["unshared"] / times["shared"], 2)
    if ctx.gpu:
        n["memory ratio (shared / unshared)"] = round(
            n["peak_mib shared"] / max(n["peak_mib unshared"], 1e-9), 2
        )
    n["log-prob max abs diff"] = f"{lp_diff:.3g}"
    n["loss abs diff"] = f"{abs(losses['shared'] - losses['unshared']):.3g}"
    n["grad max abs diff"] = f"{float(g_diff.max()):.3g}"
    n["grad max abs"] = f"{scale:.3g}"
    n["grad cosine"] = f"{cos:.6f}"
    if ctx.gpu:  # bf16 activations: a few 1e-2 of log-prob noise between batch shapes
        lp_ok = torch.allclose(lps["shared"], lps["unshared"], rtol=2e-2, atol=1e-1)
        g_ok = cos >= 0.999
        n["tolerance"] = "log-probs rtol 2e-2 atol 1e-1; gradients cosine >= 0.999 (bf16)"
    else:
        lp_ok = torch.allclose(lps["shared"], lps["unshared"], rtol=1e-5, atol=1e-4)
        g_ok = bool((g_diff <= 1e-3 * g_u.abs() + 1e-5 * scale).all())
        n["tolerance"] = "log-probs rtol 1e-5 atol 1e-4; gradients rtol 1e-3 atol 1e-5 x max (fp32)"
    if not (finite(lp_diff, scale, cos) and scale > 0):
        res.fail("non-finite or zero gradients")
    if not lp_ok:
        res.fail(f"log-probs differ: max abs {lp_diff:.3g}")
    if not g_ok:
        res.fail(f"gradients differ: max abs {float(g_diff.max()):.3g}, cosine {cos:.6f}")
    res.line = (
        f"log-probs max diff {lp_diff:.2g}, grad cosine {cos:.6f}, "
        f"{n['speed-up (unshared / shared)']}x faster, forwarded "
        f"{n['forward_tokens shared']} vs {n['forward_tokens unshared']} tokens"
    )
    if ctx.gpu:
        res.line += f", peak {n['peak_mib shared']} vs {n['peak_mib unshared']} MiB"


def check_adamw(ctx: Ctx, res: Result) -> None:
    from rrr.core.model_shapes import from_config

    shapes = [s for _, s in from_config("check", ctx.check_values).tensors()]
    g = torch.Generator(device=ctx.device).manual_seed(0)

    def tensors(scale: float) -> list[torch.Tensor]:
        return [torch.randn(s, generator=g, device=ctx.device) * scale for s in shapes]

    init, grads = tensors(0.02), tensors(1e-3)
    lr, steps = 1e-3, 2 if ctx.reduced else 4
    n = res.numbers
    n["parameters"] = sum(t.numel() for t in init)
    n["tensors"] = len(init)
    n["lr"] = lr
    sides: dict[str, list[torch.Tensor]] = {}
    seconds: dict[str, float] = {}
    for impl in ("fused", "foreach"):
        params = [t.clone().requires_grad_(True) for t in init]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        try:
            opt = torch.optim.AdamW(params, lr=lr, **{impl: True})
            times = []
            for _ in range(steps):
                ctx.sync()
                t = time.perf_counter()
                opt.step()
                ctx.sync()
                times.append(time.perf_counter() - t)
        except (RuntimeError, TypeError) as exc:
            res.fail(f"AdamW({impl}=True) on {ctx.device.type}: {exc}")
            return
        sides[impl] = [p.detach() for p in params]
        seconds[impl] = statistics.median(times[1:])  # the first step allocates the state
    diff = max(float((a - b).abs().max()) for a, b in zip(sides["fused"], sides["foreach"]))
    moved = max(float((a - b).abs().max()) for a, b in zip(sides["fused"], init))
    n["device"] = ctx.device.type
    n["implementation"] = (
        f"fused=True on {ctx.device.type} (the learner's), checked against foreach"
    )
    n["steps"] = steps
    n["fused step s"] = round(seconds["fused"], 5)
    n["foreach step s"] = round(seconds["foreach"], 5)
    n["fused speed-up"] = round(seconds["foreach"] / seconds["fused"], 2)
    n["max abs diff fused vs foreach"] = f"{diff:.3g}"
    n["max weight change"] = f"{moved:.3g}"
    n["tolerance"] = f"{1e-3 * lr:g} (a thousandth of a step)"
    if not diff <= 1e-3 * lr:
        res.fail(f"fused and foreach AdamW differ by {diff:.3g}")
    if not moved > 0.5 * lr:
        res.fail(f"fused AdamW moved the weights by {moved:.3g} only (lr {lr})")
    res.line = (
        f"fused vs foreach max diff {diff:.2g}, {n['fused step s'] * 1e3:.1f} vs "
        f"{n['foreach step s'] * 1e3:.1f} ms/step over {n['parameters']:,} parameters"
    )


def mfu_numbers(ctx: Ctx, res: Result, step: Callable[[], float], params: int) -> None:
    """Warm-up step, then timed steps up to --mfu-steps (fewer if the budget runs short)."""
    a = res.numbers
    tokens = ctx.args.micro_batch * ctx.args.seq_len
    if ctx.gpu:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    loss = step()
    ctx.sync()
    a["warm-up step s"] = round(time.perf_counter() - t, 3)
    times, losses = [], [loss]
    reserve = 0.25 * MIN_S["mfu"] if not ctx.reduced else 1.0
    while len(times) < ctx.args.mfu_steps and (not times or ctx.left() > reserve):
        t = time.perf_counter()
        losses.append(step())
        ctx.sync()
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    tps = tokens / step_s
    a["parameters (N)"] = params
    a["micro_batch x seq_len"] = f"{ctx.args.micro_batch} x {ctx.args.seq_len}"
    a["timed steps"] = len(times)
    a["step s (median)"] = round(step_s, 4)
    a["tokens/s"] = round(tps, 1)
    a["model TFLOP/s (6N)"] = float(f"{6 * params * tps / 1e12:.4g}")
    a["peak TFLOP/s"] = ctx.args.peak_tflops
    a["MFU"] = float(f"{6 * params * tps / (ctx.args.peak_tflops * 1e12):.4g}")
    a["loss"] = [round(x, 4) for x in losses]
    a["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2) if ctx.gpu else "n/a"
    if not finite(*losses):
        res.fail("a loss is not finite")
    if ctx.reduced:
        res.notes.append("reduced shape: the MFU figure only shows that the path runs")
    res.line = (
        f"{a['shape']}: MFU {a['MFU']:.1%} ({a['model TFLOP/s (6N)']} of "
        f"{ctx.args.peak_tflops:g} TFLOP/s), {a['tokens/s']:.0f} tokens/s, "
        f"peak {a['peak_mem_gib']} GiB"
    )


def check_mfu(ctx: Ctx, res: Result) -> None:
    name = "tiny" if ctx.reduced else ctx.args.mfu_shape
    params = param_count(name, ctx.mfu_values)
    model = build_model(ctx.mfu_values, ctx.device, torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    vocab = ctx.mfu_values["vocab_size"]
    ids = torch.randint(0, vocab, (ctx.args.micro_batch, ctx.args.seq_len), device=ctx.device)
    dtype = torch.bfloat16 if ctx.gpu else torch.float32

    def step() -> float:
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=ctx.gpu):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    res.numbers["shape"] = name
    built = sum(p.numel() for p in model.parameters())
    if built != params:
        res.notes.append(f"the built model has {built:,} parameters, model_shapes says {params:,}")
    res.numbers["recipe"] = (
        "torch engine: fp32 master weights, bf16 autocast, gradient "
        "checkpointing, fused AdamW, clipping"
        if ctx.gpu
        else "torch engine on CPU: fp32, gradient checkpointing, fused AdamW"
    )
    mfu_numbers(ctx, res, step, params)  # the model goes with this frame (run_check frees)


def deepspeed_missing() -> str | None:
    try:
        import deepspeed
    except Exception as exc:  # any failure to import: not usable here
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None if hasattr(deepspeed, "initialize") else "deepspeed has no initialize()"


def deepspeed_plan(mode: str, reduced: bool) -> tuple[str, str | None]:
    """(what the summary says of DeepSpeed, why its checks are skipped or None)."""
    if mode == "off":
        return "off (--deepspeed off)", "--deepspeed off"
    if mode == "auto" and reduced:  # not run: the reduced mode stays seconds long
        found = importlib.util.find_spec("deepspeed") is not None
        state = "installed, not run" if found else "not installed"
        return f"{state} (reduced mode; --deepspeed on runs it)", "reduced mode"
    missing = deepspeed_missing()
    if missing:
        why = f"DeepSpeed not importable ({missing})"
        return f"{why}: its checks are skipped", why
    import deepspeed

    return deepspeed.__version__, None


def check_deepspeed_step(ctx: Ctx, res: Result) -> None:
    out = run_worker_steps(ctx, res, "deepspeed")
    n = res.numbers
    torch_losses = ctx.shared.get("torch_losses")
    if torch_losses:
        n["torch engine loss (step 1)"] = round(torch_losses[0], 6)
        n["loss abs diff vs torch engine (step 1)"] = f"{abs(out[0]['loss'] - torch_losses[0]):.3g}"
        if ctx.gpu:
            res.notes.append(
                "the loss difference is reported, not judged: bf16 weights (DeepSpeed) "
                "against fp32 weights + bf16 autocast (torch)"
            )
    res.line = (
        f"ZeRO-2, {n['episodes']} episodes: loss {n['loss'][-1]:.4g}, grad norm "
        f"{n['grad_norm'][-1]:.3g}, {n['step_s'][-1]:.2f} s/step"
    )


def check_deepspeed_mfu(ctx: Ctx, res: Result) -> None:
    import deepspeed

    from rrr.learner.distributed import free_address, init_distributed
    from rrr.learner.engines import deepspeed_config

    name = "tiny" if ctx.reduced else ctx.args.mfu_shape
    params = param_count(name, ctx.mfu_values)
    init_distributed(0, 1, "127.0.0.1", free_address()[1], ctx.device)
    cfg = learner_config(
        ctx,
        backend="deepspeed",
        zero_stage=2,
        bf16=True,
        gradient_checkpointing=True,
        micro_batch_size=ctx.args.micro_batch,
    )
    dtype = torch.bfloat16 if ctx.gpu else torch.float32
    model = build_model(ctx.mfu_values, ctx.device, dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, ctx.gpu)
    )
    vocab = ctx.mfu_values["vocab_size"]
    ids = torch.randint(0, vocab, (ctx.args.micro_batch, ctx.args.seq_len), device=ctx.device)

    def step() -> float:
        loss = engine(input_ids=ids, labels=ids, use_cache=False).loss
        engine.backward(loss)
        engine.step()
        return float(loss.detach())

    res.numbers["shape"] = name
    res.numbers["recipe"] = f"DeepSpeed {deepspeed.__version__} ZeRO-2, {dtype}, rrr's config"
    mfu_numbers(ctx, res, step, params)


# ---------------------------------------------------------------------------------- run


CHECKS: list[tuple[str, Callable[[Ctx, Result], None]]] = [
    ("learner_step", check_learner_step),
    ("shared_prefix", check_shared_prefix),
    ("adamw", check_adamw),
    ("mfu", check_mfu),
    ("deepspeed_step", check_deepspeed_step),
    ("deepspeed_mfu", check_deepspeed_mfu),
]


def _on_alarm(signum: int, frame: object) -> None:
    raise BudgetExceeded("the check ran past the budget + grace and was stopped")


def run_check(ctx: Ctx, name: str, fn: Callable[[Ctx, Result], None], skip: str | None) -> Result:
    res = Result(name)
    need = MIN_S[name] * (0.1 if ctx.reduced else 1.0)
    if skip is None and ctx.left() < need:
        skip = f"budget: {ctx.left():.0f} s left, the check needs ~{need:.0f} s"
    if skip:
        res.status, res.line = "SKIP", skip
        print(f"[learner-check] {name}: SKIP ({skip})", flush=True)
        return res
    print(f"[learner-check] {name} ...", flush=True)
    t = time.perf_counter()
    try:
        fn(ctx, res)
    except Exception as exc:  # every error is this check's result
        res.fail(f"{type(exc).__name__}: {exc}".splitlines()[0])
        res.notes.append("```\n" + traceback.format_exc(limit=8).rstrip() + "\n```")
        res.line = res.line or f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        free_memory()
    res.seconds = time.perf_counter() - t
    if res.status == "FAIL" and not res.line:
        res.line = res.notes[0]
    print(f"[learner-check] {name}: {res.status} ({res.seconds:.1f} s) {res.line}", flush=True)
    return res


def environment(ctx: Ctx, deepspeed_state: str) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "mode": "reduced" if ctx.reduced else "full",
        "device": ctx.device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads",
        "rrr": f"source tree {ROOT}",
        "budget_s": ctx.args.budget_s,
    }
    if ctx.gpu:
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = (
            f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / GIB:.1f} GiB, "
            f"{torch.cuda.device_count()} visible"
        )
        env["cuda (torch build)"] = torch.version.cuda
    env["deepspeed"] = deepspeed_state
    return env


def write_summary(path: Path, env: dict[str, Any], results: list[Result], wall: float) -> str:
    failed = [r.name for r in results if r.status == "FAIL"]
    verdict = "FAIL" if failed else "PASS"
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    imports = {
        "ray/vllm modules imported": ray_vllm_modules(),
        # what this environment has: transformers imports optional packages when present
        "third-party top-level modules imported": third_party_modules(),
    }
    if path.suffix == ".json":
        data = {
            "result": verdict,
            "wall_s": round(wall, 1),
            **env,
            **imports,
            "checks": [r.__dict__ | {"seconds": round(r.seconds, 2)} for r in results],
        }
        text = json.dumps(data, indent=2, default=str) + "\n"
    else:
        out = ["# Learner check (bench/learner_check.py, issue 32 item 5)", ""]
        out += [f"- {k}: {v}" for k, v in env.items()]
        out += [
            f"- wall: {wall:.1f} s",
            f"- result: {verdict} ({counts['PASS']} passed, {counts['FAIL']} failed, "
            f"{counts['SKIP']} skipped)",
            "",
            "| check | result | seconds | summary |",
            "|---|---|---|---|",
        ]
        out += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.line} |" for r in results]
        for r in results:
            if r.status == "SKIP":
                continue
            out += ["", f"## {r.name}: {r.status}", ""]
            out += [f"- {k}: {v}" for k, v in r.numbers.items()]
            out += [f"- {note}" if not note.startswith("```") else note for note in r.notes]
        out += ["", "## imports", ""]
        out += [f"- {k}: {', '.join(v) if v else 'none'}" for k, v in imports.items()]
        text = "\n".join(out) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return verdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument(
        "--reduced", action="store_true", help="tiny shapes, seconds (the default without CUDA)"
    )
    p.add_argument("--budget-s", type=float, default=300.0, help="the whole check's time")
    p.add_argument(
        "--summary",
        default="runs/learner-check/summary.md",
        help="the summary file (.md, or .json for JSON)",
    )
    p.add_argument(
        "--deepspeed",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: on if importable, off in reduced mode",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="the device's dense bf16 peak (989: H100/H200 SXM)",
    )
    p.add_argument("--mfu-shape", default=MFU_SHAPE, help="a model of KNOWN_CONFIGS")
    p.add_argument("--mfu-steps", type=int, default=None, help="timed steps (after a warm-up)")
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    summary = Path(args.summary)
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        msg = (
            f"transformers is not importable ({exc}): the learner loads Hugging Face models; "
            "pip install transformers (rrr's pyproject pins its version)"
        )
        print(f"[learner-check] {msg}", file=sys.stderr)
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(f"# Learner check\n\n- result: FAIL\n- {msg}\n")
        return 2
    from rrr.core.model_shapes import KNOWN_CONFIGS

    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        p.error("--device cuda: torch sees no CUDA device")
    device = torch.device("cuda" if (cuda and args.device != "cpu") else "cpu")
    reduced = args.reduced or device.type == "cpu"
    args.mfu_steps = args.mfu_steps or (2 if reduced else 5)
    args.micro_batch = args.micro_batch or (2 if reduced else 4)
    args.seq_len = args.seq_len or (64 if reduced else 2048)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    work = tempfile.TemporaryDirectory(prefix="learner-check-")
    ctx = Ctx(
        args=args,
        device=device,
        reduced=reduced,
        t0=t0,
        batch_shape=REDUCED_BATCH if reduced else FULL_BATCH,
        check_values=TINY if reduced else KNOWN_CONFIGS[CHECK_SHAPE],
        mfu_values=TINY if reduced else KNOWN_CONFIGS[args.mfu_shape],
        work=Path(work.name),
    )
    ds_state, ds_skip = deepspeed_plan(args.deepspeed, reduced)
    env = environment(ctx, ds_state)
    print("[learner-check] " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(max(args.budget_s, 1) + GRACE_S))
    results = []
    try:
        for name, fn in CHECKS:
            skip = ds_skip if name.startswith("deepspeed") else None
            if ctx.left() < -GRACE_S / 2:
                skip = "the budget is spent"
            results.append(run_check(ctx, name, fn, skip))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        work.cleanup()
    wall = time.perf_counter() - t0
    verdict = write_summary(summary, env, results, wall)
    print(f"[learner-check] {verdict} in {wall:.1f} s; summary: {summary}", flush=True)
    return 1 if verdict == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
