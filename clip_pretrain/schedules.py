"""Learning-rate schedules, formula for formula open_clip_train's (``--lr-scheduler cosine|const|const-cooldown``)."""

from __future__ import annotations

import math
from collections.abc import Callable

from clip_pretrain.config import TrainConfig


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine to 0 at ``total`` (open_clip_train's)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * base_lr


def const_lr(step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then ``base_lr`` (open_clip_train's ``const``)."""
    return base_lr * (step + 1) / warmup if step < warmup else base_lr


def const_cooldown_lr(step: int, base_lr: float, warmup: int, total: int, cooldown: int, power: float = 1.0,
                      end_lr: float = 0.0) -> float:
    """Linear warm-up, ``base_lr``, then over the last ``cooldown`` steps a decay ``(1 - e/es) ** power`` from
    ``base_lr`` to ``end_lr`` (open_clip_train's ``const-cooldown``, formula for formula)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    start = total - cooldown
    if step < start:
        return base_lr
    return (1 - (step - start) / (total - start)) ** power * (base_lr - end_lr) + end_lr


def lr_schedule(cfg: TrainConfig, total_steps: int, spe: int) -> Callable[[int], float]:
    """``step -> lr`` for ``cfg.lr_scheduler``; the cooldown is counted in epochs of optimizer steps, as
    open_clip_train counts it (``steps per epoch // accum_freq * epochs_cooldown``)."""
    if cfg.lr_scheduler == "const":
        return lambda step: const_lr(step, cfg.lr, cfg.warmup)
    if cfg.lr_scheduler == "const-cooldown":
        cooldown = spe * cfg.epochs_cooldown  # longer than the run: the decay starts before step 0, as there
        return lambda step: const_cooldown_lr(step, cfg.lr, cfg.warmup, total_steps, cooldown, cfg.lr_cooldown_power,
                                              cfg.lr_cooldown_end)
    return lambda step: cosine_lr(step, cfg.lr, cfg.warmup, total_steps)
