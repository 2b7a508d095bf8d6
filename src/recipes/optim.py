"""AdamW with linear warmup then cosine decay, shared by every backend."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from omegaconf import DictConfig


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, trainer: DictConfig):
    """The per-step warmup-then-cosine LambdaLR every backend steps once per global batch."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step,
            warmup_steps=trainer.warmup_steps,
            max_steps=trainer.max_steps,
            min_lr_ratio=trainer.min_lr_ratio,
        ),
    )


ADAMW_IMPLS = ("fused", "foreach", "for_loop")


def build_optimizer(params: Iterable[torch.nn.Parameter], trainer: DictConfig, impl: str):
    """AdamW (betas 0.9/0.95, as Llama 3 pretraining) and its schedule; ``impl`` picks torch's
    kernel (one of :data:`ADAMW_IMPLS`): the same update, computed in one fused kernel, in
    per-op kernels over lists of tensors, or parameter by parameter."""
    optimizer = torch.optim.AdamW(
        params,
        lr=trainer.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        weight_decay=trainer.weight_decay,
        fused=impl == "fused",
        foreach=impl == "foreach",
    )
    return optimizer, build_schedule(optimizer, trainer)
