"""The schedules of a run, step by step: learning rate (warm-up, then flat or cosine) and weight
decay (cosine). The EMA momentum's schedule is `objective.ema_momentum` (notebook 04)."""
from __future__ import annotations

import math

from .config import TrainConfig


def warmup_length(total_steps: int, config: TrainConfig) -> int:
    """Warm-up steps: warmup_fraction of the run when > 0, else warmup_steps capped at a tenth of
    the run; at least 1."""
    config = config.resolve()
    if config.warmup_fraction:
        return max(1, round(config.warmup_fraction * total_steps))
    return max(1, min(config.warmup_steps, total_steps // 10))


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up from start_lr to lr (warmup_length), then cosine to min_lr
    (lr_schedule="cosine") or flat at lr (lr_schedule="constant")."""
    config = config.resolve()
    warmup = warmup_length(total_steps, config)
    if step < warmup:
        return config.start_lr + (config.lr - config.start_lr) * (step + 1) / warmup
    if config.lr_schedule == "constant":
        return config.lr
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def weight_decay_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Cosine increase weight_decay -> final_weight_decay (the paper: 0.04 -> 0.4)."""
    config = config.resolve()
    progress = min(step / max(total_steps, 1), 1.0)
    return config.final_weight_decay + 0.5 * (config.weight_decay - config.final_weight_decay) * (
        1 + math.cos(math.pi * progress))
