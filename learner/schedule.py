"""Learning-rate schedule: linear warm-up then cosine to 0 (paper 4.4), or constant.

A callable object (not a lambda) so `torch.optim.lr_scheduler.LambdaLR.state_dict()` can save
it and a resumed run continues on the same curve. The curve is Hugging Face's
`get_cosine_schedule_with_warmup` / `get_constant_schedule_with_warmup`, which TRL (the paper's
trainer) uses: factor 0 at step 0 of a warm-up, 1 at its end, 0 at max_steps.
"""

from __future__ import annotations

import math

import torch


class WarmupSchedule:
    def __init__(self, kind: str, warmup_steps: int, total_steps: int) -> None:
        if kind not in ("cosine", "constant"):
            raise ValueError(f"unknown lr schedule {kind!r} (cosine | constant)")
        self.kind, self.warmup_steps, self.total_steps = kind, warmup_steps, max(total_steps, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def warmup_steps(warmup_ratio: float, max_steps: int) -> int:
    # HF TrainingArguments.get_warmup_steps rounds up: 3 % of 1,750 steps = 53 steps.
    return math.ceil(warmup_ratio * max_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, warmup_ratio: float, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupSchedule(kind, warmup_steps(warmup_ratio, max_steps), max_steps)
    )
