"""The schedules of a run, step by step: learning rate (warm-up, then flat or cosine) and weight
decay (cosine). The EMA momentum's schedule is `objective.ema_momentum` (notebook 04)."""
from __future__ import annotations

import math

from jepa_lite.engine.config import TrainConfig


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


class BudgetLength:
    """A time-budgeted run's length in steps, from its measured speed: the schedules above need a
    total, and a budget gives minutes. The first measurement starts after 3 steps (the first are
    often slower) and gives a total after 10 more; the total is corrected every 10 steps until 80%
    of the budget is spent, then kept, so the end of the schedule stays put."""

    def __init__(self, budget_seconds: float):
        self.budget = budget_seconds
        self.start, self.start_step = None, 0

    def update(self, step: int, now: float, run_start: float, total_steps: int | None) -> int | None:
        """After step `step` at time `now` (the run's time counted from `run_start`): the new total,
        or `total_steps` unchanged."""
        if step < 3:
            return total_steps
        if self.start is None:
            self.start, self.start_step = now, step
            return total_steps
        if step - self.start_step >= 10 and (total_steps is None or (
                step % 10 == 0 and now - run_start < 0.8 * self.budget)):
            per_step = (now - self.start) / (step - self.start_step)
            return step + max(int((self.budget - (now - run_start)) / per_step), 1)
        return total_steps
