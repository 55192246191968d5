"""What the training loop logs: every `log_every` steps one record of the loss and the three
collapse monitors of notebook 04, a warning when a record shows collapse, and metrics.jsonl
written as the run goes (watch it live: `tail -f RUN/metrics.jsonl`).

    meter = IntervalMeter(start=time.perf_counter())
    meter.add(step_result)                                # after every step
    names, sums = meter.sums()                            # at a log step: one tensor (all-reduced by DDP runs)
    record = meter.record(step, dict(zip(names, (sums / meter.steps).tolist())), step_result, now, run_start)
    warning = collapse_warning(record, embed_dim)         # None for a healthy run
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from jepa_lite.core.objective import across_image_share, embedding_std, rankme
from jepa_lite.engine.checkpoint import write_text_atomic

# the parts of the loss that objectives "both" and "pixels" and target mode "sigreg" report beside the total
LOSS_PARTS = ("embedding_loss", "pixel_loss", "sigreg_loss")


class IntervalMeter:
    """Sums what the steps since the last record did: the loss and its parts (kept as tensors, so
    that no step waits for the device), and the images seen."""

    def __init__(self, start: float):
        self._reset(start)

    def _reset(self, now: float) -> None:
        self.steps, self.images, self.start = 0, 0, now
        self.totals: dict[str, torch.Tensor] = {}

    def add(self, result: dict) -> None:
        """One step's result (Trainer.train_step): its loss tensors and its batch size."""
        for name in ("loss", *LOSS_PARTS):
            if name in result:
                value = result[name].float()
                self.totals[name] = self.totals[name] + value if name in self.totals else value
        self.steps += 1
        self.images += result["batch"]

    def sums(self) -> tuple[list[str], torch.Tensor]:
        """The interval's summed losses: (names, one tensor), ready for a single all-reduce."""
        names = list(self.totals)
        return names, torch.stack([self.totals[name] for name in names])

    def record(self, step: int, losses: dict[str, float], result: dict, now: float, run_start: float) -> dict:
        """The record for `step`: the interval's mean `losses` (from `sums`) and speed, this step's
        schedules, and the collapse monitors of this step's target tokens [B, K, D]; then a new
        interval starts."""
        tokens = result["target_tokens"]
        record = {"step": step, "loss": losses["loss"],
                  "lr": result["lr"], "weight_decay": result["wd"], "momentum": result["momentum"],
                  "target_std": embedding_std(tokens),
                  "target_rankme": rankme(tokens.float().mean(dim=1)),
                  # needs 2+ images: a batch (or a rank's share of it) of 1 logs NaN
                  "target_image_share": across_image_share(tokens) if tokens.shape[0] >= 2 else float("nan"),
                  "images_per_second": self.images / max(now - self.start, 1e-9),
                  "elapsed_seconds": now - run_start}
        record.update({name: value for name, value in losses.items() if name != "loss"})
        self._reset(now)
        return record


def collapse_warning(record: dict, embed_dim: int) -> str | None:
    """A one-line warning when a record shows either kind of collapse (notebook 04), else None.
    Thresholds: std below 10% of a spread-out embedding's 1/sqrt(D) (the encoder maps every token
    to nearly one vector), or under 5% of the target variance across images (the tokens depend on
    their position only: the std can look healthy then). A healthy run stays far from both."""
    std_floor = 0.1 / math.sqrt(embed_dim)
    reasons = []
    if record["target_std"] < std_floor:
        reasons.append(f"target std {record['target_std']:.4f} < {std_floor:.4f}: nearly one vector for every token")
    if record["target_image_share"] < 0.05:
        reasons.append(f"only {record['target_image_share']:.1%} of the target variance is across images: "
                       "the targets depend on the token position, hardly on the image")
    if not reasons:
        return None
    return (f"warning: the target encoder looks collapsed at step {record['step']} (" + "; ".join(reasons)
            + "). Training goes on; notebook 04 shows both kinds of collapse.")


class LiveMetrics:
    """metrics.jsonl: the records so far (those of the checkpoint, on a resume), then one line per
    record as it is logged. A no-op where `path` is None (the ranks other than 0)."""

    def __init__(self, path: Path | None, history: list[dict]):
        self.file = None
        if path is not None:
            write_text_atomic("".join(json.dumps(r) + "\n" for r in history), path)
            self.file = open(path, "a")

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
