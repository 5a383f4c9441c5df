"""Optimizer and learning-rate schedule: AdamW, and warmup followed by linear or cosine decay.

The schedule is a pure function of the step, so resuming a run needs only the step
number to put the learning rate back where it was:

    factor(step) = step / warmup                                  while step < warmup
                 = 1 - progress            (linear)               afterwards, where
                 = (1 + cos(pi * progress)) / 2   (cosine)        progress = (step - warmup) / (total - warmup)
                 = 1                       (constant)

Adam is AdamW with weight decay 0. Weight decay, when set, skips biases and LayerNorm
weights (every parameter with fewer than two dimensions), as transformers' Trainer does.
"""

from __future__ import annotations

import inspect
import math

import torch

SCHEDULES = ("linear", "cosine", "constant")


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "linear") -> float:
    """Multiplier on the peak learning rate for optimizer step `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999),
                    eps: float = 1e-8, device: torch.device | None = None) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel does the whole update in one launch on CUDA (and on CPU in recent torch)
    fused = device is not None and device.type in ("cuda", "cpu") and "fused" in inspect.signature(
        torch.optim.AdamW).parameters
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)
    except RuntimeError:  # a device or dtype the fused kernel does not take
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
