"""Learner throughput vs TRL's GRPOTrainer loss path, same model, same batch, same run.

One optimizer step = reference log-probs (no grad) + policy forward/backward over the
micro-batches + clipping + AdamW, on both sides:

  rrr   learner.worker.LearnerWorker.step (torch engine, float32, CPU)
  TRL   GRPOTrainer._get_per_token_logps_and_entropies(ref_model) + GRPOTrainer.compute_loss
        (loss_type "grpo", beta 0.001, the sampler's log-probs as old log-probs) + backward per
        micro-batch (loss / GAS, as the HF Trainer does), clip_grad_norm_, AdamW

Episodes are a context (the "prompt": task + failed attempt + reflection prompt) followed by
the reflection (the "completion"). Steps alternate rrr / TRL so that load from other processes
hits both alike. Prints tokens/s of each and the ratio.

  .venv/bin/python bench/learner.py [--model smollm2-135m] [--seqs 8] [--ctx 160] [--refl 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.batch import build_train_batch, shard_batch
from learner.worker import LearnerWorker
from rrr.config import LearnerConfig
from rrr.models import resolve_model


def make_episodes(n: int, ctx: int, refl: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens, spans, logprobs, rewards = [], [], [], []
    for i in range(n):
        c = ctx - (i % 4) * ctx // 8  # varied lengths, as real episodes are
        r = refl - (i % 3) * refl // 4
        tokens.append(torch.randint(0, vocab, (c + r,), generator=g).tolist())
        spans.append((c, c + r))
        logprobs.append((-torch.rand(r, generator=g) * 4 - 8).tolist())
        rewards.append(float(i % 3 == 0))
    return tokens, spans, logprobs, rewards


def trl_inputs(tokens, spans, logprobs, advantages, pad_id: int) -> dict[str, torch.Tensor]:
    """TRL's layout: left-padded prompts, right-padded completions."""
    ctx = [t[: s[0]] for t, s in zip(tokens, spans)]
    comp = [t[s[0] : s[1]] for t, s in zip(tokens, spans)]
    pl, cl = max(map(len, ctx)), max(map(len, comp))
    n = len(tokens)
    prompt_ids = torch.full((n, pl), pad_id)
    prompt_mask = torch.zeros((n, pl), dtype=torch.long)
    completion_ids = torch.full((n, cl), pad_id)
    completion_mask = torch.zeros((n, cl), dtype=torch.long)
    old = torch.zeros((n, cl))
    for i, (c, p, lp) in enumerate(zip(ctx, comp, logprobs)):
        prompt_ids[i, pl - len(c) :] = torch.tensor(c)
        prompt_mask[i, pl - len(c) :] = 1
        completion_ids[i, : len(p)] = torch.tensor(p)
        completion_mask[i, : len(p)] = 1
        old[i, : len(p)] = torch.tensor(lp)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
    }


def build_trl(model_path: str, mbs: int, group: int, lr: float, out: str):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=mbs,
        num_generations=group,
        beta=0.001,
        learning_rate=lr,
        loss_type="grpo",
        gradient_checkpointing=False,
        use_cpu=True,
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
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return trainer, model, opt


def trl_step(trainer, model, opt, inputs: dict[str, torch.Tensor], mbs: int) -> float:
    t0 = time.perf_counter()
    n = inputs["prompt_ids"].shape[0]
    micro = [{k: v[i : i + mbs] for k, v in inputs.items()} for i in range(0, n, mbs)]
    # The HF Trainer sets this each step; TRL's "grpo" loss divides by it (accumulation).
    trainer.current_gradient_accumulation_steps = len(micro)
    for mb in micro:
        ids = torch.cat([mb["prompt_ids"], mb["completion_ids"]], dim=1)
        attn = torch.cat([mb["prompt_mask"], mb["completion_mask"]], dim=1)
        with torch.no_grad():  # TRL computes these in _generate_and_score_completions
            mb["ref_per_token_logps"], _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.ref_model, ids, attn, mb["completion_ids"].size(1)
            )
        loss = trainer.compute_loss(model, mb)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seqs", type=int, default=8)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--ctx", type=int, default=160)
    p.add_argument("--refl", type=int, default=64)
    p.add_argument("--mbs", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps per side (after 1 warm-up)")
    args = p.parse_args()

    path = resolve_model(args.model)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(path).vocab_size
    tokens, spans, logprobs, rewards = make_episodes(args.seqs, args.ctx, args.refl, vocab)
    batch = build_train_batch(tokens, spans, logprobs, rewards, args.group)
    n_tokens = sum(len(t) for t in tokens)
    cfg = LearnerConfig(
        lr=1e-6,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=100,
        gradient_checkpointing=False,
        micro_batch_size=args.mbs,
        kl_coef=0.001,
    )
    ours = LearnerWorker(path, cfg)
    with tempfile.TemporaryDirectory() as out:
        trainer, model, opt = build_trl(path, args.mbs, args.group, 1e-6, out)
        inputs = trl_inputs(tokens, spans, logprobs, batch.advantages, pad_id=0)
        times: dict[str, list[float]] = {"rrr": [], "trl": []}
        for i in range(args.steps + 1):
            t_ours = ours.step(shard_batch(batch, 1, args.mbs)[0])["step_s"]
            t_trl = trl_step(trainer, model, opt, inputs, args.mbs)
            if i:  # the first step of each warms up allocators and kernels
                times["rrr"].append(t_ours)
                times["trl"].append(t_trl)
            print(f"step {i}: rrr {t_ours:.2f}s  trl {t_trl:.2f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\nmodel {Path(path).name}: {args.seqs} episodes, {n_tokens} tokens/step "
        f"({batch.global_num_tokens} reflection tokens), micro-batch {args.mbs}, "
        f"{torch.get_num_threads()} threads"
    )
    for k in ("rrr", "trl"):
        print(f"  {k}: median {med[k]:.2f}s/step = {n_tokens / med[k]:.1f} tokens/s")
    print(f"  speed-up rrr vs TRL: {med['trl'] / med['rrr']:.2f}x (goal >= 1.0)")


if __name__ == "__main__":
    main()
