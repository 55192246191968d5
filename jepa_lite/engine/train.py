"""The training loop: one step, then the loop around it (time budget, logging, checkpoints, exact
resume, a clean stop on a signal). Read `Trainer.train_step` first: it is the whole algorithm.

A resolved `TrainConfig` (config.py) says everything a run does; build.py makes its networks,
train_data.py each step's batch and masks, schedules.py its lr and weight decay, checkpoint.py
reads and writes its files, and core/objective.py is the JEPA itself (forward, loss, EMA).
Randomness is a pure function of (seed, step), so a run resumed from a checkpoint draws the same
batches, crops and masks as the uninterrupted run and, on a CPU, gives the same losses.

One process trains unless torchrun starts several (distributed.py): then every rank runs this
same loop on its rows of each batch, and rank 0 alone logs and writes checkpoints.

The same engine trains every variant (notebook 08):
    objective  "jepa" (predict embeddings), "pixels" (reconstruct the target patches' pixels,
               a masked autoencoder on the same masks) or "both" (objective.py);
    encoder    "vit" (models.VisionTransformer) or "cnn" (cnn.ConvEncoder, a strided CNN whose
               feature map is the token grid); both keep the encoder contract of models.py and
               take their width D from the named `model` size, whose predictor they share.
"""
from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jepa_lite.core.models import set_drop_path_generator
from jepa_lite.core.objective import JEPA, ema_momentum
from jepa_lite.core.video import VideoConfig
from jepa_lite.data.datasets import step_generator
from jepa_lite.data.images import ImageDataset
from jepa_lite.engine import distributed
from jepa_lite.engine.build import build_jepa, configs_for, param_groups
from jepa_lite.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    METRICS_LIVE_NAME,
    load_checkpoint,
    load_networks,
    save_atomic,
    write_json_atomic,
)
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.device import autocast_context, choose_precision, describe_device, grad_scaler, pick_device
from jepa_lite.engine.metrics import LOSS_PARTS, IntervalMeter, LiveMetrics, collapse_warning
from jepa_lite.engine.progress import progress_bar
from jepa_lite.engine.schedules import BudgetLength, lr_at, weight_decay_at
from jepa_lite.engine.signals import StopSignals
from jepa_lite.engine.train_data import TrainBatches, training_images
from jepa_lite.errors import BadValue, CheckpointError, JepaLiteError, LossNotFinite, TrainingStopped

logger = logging.getLogger("jepa_lite")


@dataclass
class TrainResult:
    model: JEPA
    history: list[dict]
    checkpoint_path: Path
    steps: int
    seconds: float


class Trainer:
    """Holds the model, optimizer and data of one run; `run()` trains to the end (or budget)."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, dataset: ImageDataset | None = None,
                 resume: bool = True, progress: bool = True, log: Callable[[str], None] | None = None):
        config = config.resolve()              # every default filled in, once
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        # what the run says (resumed, streaming, collapse warnings): to `log` if given (notebooks pass
        # print or their own), else to the "jepa_lite" logger, which the command line prints
        self.progress = progress
        self.log = log or logger.info
        self.warn = log or logger.warning
        self.device = pick_device(config.device)
        self.rank, self.world = 0, 1
        launch = distributed.launched_by_torchrun()
        if launch is not None:                          # one of several processes: join their group
            self.rank, self.world, local_rank = launch
            if self.device.type == "cuda":              # one GPU per process
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            distributed.join_group(self.device, config.batch_size, self.world)
            if self.rank != 0:                          # rank 0 alone logs and shows progress
                self.log = self.warn = lambda *args, **kwargs: None
                self.progress = False
        self.precision = choose_precision(self.device, config.amp)
        if self.device.type != "cpu":
            self.log(describe_device(self.device, config.amp))

        dataset, self.streaming = training_images(config, dataset, self.log)
        self.image_size = dataset.image_size if self.streaming else dataset.images.shape[-1]
        self.dataset = dataset if self.streaming else dataset.to(self.device)
        self.encoder_config, self.predictor_config, self.mask_config = configs_for(config, self.image_size)
        with torch.random.fork_rng(devices=[]):      # the seed sets the initial weights; the caller's RNG is kept
            torch.manual_seed(config.seed)
            self.model = build_jepa(self.encoder_config, self.predictor_config, config.target_mode, config.loss,
                                    objective=config.objective, pixel_weight=config.pixel_weight,
                                    target_norm=config.target_norm, sigreg_weight=config.sigreg_weight,
                                    sigreg_on=config.sigreg_on).to(self.device)
        self.model.data_parallel = (self.rank, self.world)    # SIGReg's statistic over the global batch
        self.drop_path_generator = torch.Generator()          # seeded per step in train_step
        set_drop_path_generator(self.model, self.drop_path_generator)
        self.optimizer = torch.optim.AdamW(param_groups(self.model), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scaler = grad_scaler(self.device, self.precision)        # active for fp16 only
        time_steps = self.encoder_config.grid_size[0] if isinstance(self.encoder_config, VideoConfig) else None
        self.batches = TrainBatches(self.dataset, self.streaming, config, self.mask_config, self.device,
                                    time_steps=time_steps)      # clips: VideoMaskSampler's tubes through T' steps

        self.steps_per_epoch = max(len(dataset) // config.batch_size, 1)
        if config.steps is not None:
            self.total_steps = config.steps
        elif config.epochs is not None:
            self.total_steps = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        else:
            self.total_steps = None        # set from measured speed after a few steps
        self.step = 0
        self.elapsed = 0.0                 # training seconds spent so far (over all resumes)
        self.history: list[dict] = []
        self._last_saved_step = 0
        if self.world == 1:
            if resume and self.checkpoint_path.exists():
                self._restore(load_checkpoint(self.checkpoint_path, map_location=self.device))
        else:
            self._restore_on_every_rank(resume)
        self.forward = self.model if self.world == 1 else distributed.wrap(self.model, self.device)
        if config.compile:
            self.forward = torch.compile(self.forward, dynamic=True)

    def _restore_on_every_rank(self, resume: bool) -> None:
        """Several processes: rank 0 reads the checkpoint (if any) and sends it to the others; a bad
        file is the same one-line error on every rank, not a wait."""
        state = None
        if self.rank == 0 and resume and self.checkpoint_path.exists():
            try:
                state = load_checkpoint(self.checkpoint_path)
            except (JepaLiteError, ValueError, OSError) as error:
                distributed.broadcast_state({"error": str(error)}, self.device)
                raise
        state = distributed.broadcast_state(state, self.device)
        if state is not None and "error" in state:
            raise CheckpointError(state["error"])
        if state is not None:
            self._restore(state)

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "format": CHECKPOINT_FORMAT,
            "train_config": asdict(self.config),
            "encoder_config": asdict(self.encoder_config),
            "predictor_config": asdict(self.predictor_config),
            "mask_config": asdict(self.mask_config),
            "data": {"spec": self.config.data, "image_size": self.image_size, "num_images": len(self.dataset)},
            "context_encoder": self.model.context_encoder.state_dict(),
            "target_encoder": self.model.target_encoder.state_dict(),
            "predictor": self.model.predictor.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "elapsed_seconds": self.elapsed,
            "history": self.history,
        }
        if self.model.pixel_head is not None:
            state["pixel_head"] = self.model.pixel_head.state_dict()
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def _restore(self, checkpoint: dict) -> None:
        saved = checkpoint["train_config"]
        # keys added after the first checkpoints: their value in an older checkpoint is the old behaviour
        added = {"encoder": "vit", "objective": "jepa", "target_norm": "layer"}
        for key in ("model", "encoder", "patch_size", "batch_size", "seed", "loss", "target_norm", "target_mode",
                    "objective", "data"):
            was = saved.get(key, added.get(key))
            if was != getattr(self.config, key):
                raise BadValue(f"cannot resume {self.checkpoint_path}: it was trained with {key}={was!r}, "
                                 f"this run asks for {key}={getattr(self.config, key)!r} (use another --out)")
        load_networks(self.model, checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler.is_enabled() and "grad_scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        self.step = self._last_saved_step = checkpoint["step"]
        if self.total_steps is None:           # budget runs keep the schedule they measured
            self.total_steps = checkpoint["total_steps"]
        self.elapsed = checkpoint.get("elapsed_seconds", 0.0)
        self.history = list(checkpoint["history"])
        self.log(f"resumed from {self.checkpoint_path.name} at step {self.step}")

    def save(self) -> None:
        """Rank 0 writes the checkpoint, metrics.json and config.json, each atomically."""
        if self.rank != 0:
            return
        save_atomic(self.state(), self.checkpoint_path)
        write_json_atomic(self.history, self.out_dir / "metrics.json")
        write_json_atomic({"train": asdict(self.config), "encoder": asdict(self.encoder_config),
                           "predictor": asdict(self.predictor_config), "mask": asdict(self.mask_config)},
                          self.out_dir / "config.json")
        self._last_saved_step = self.step

    # -- one step --------------------------------------------------------------------------
    def train_step(self, step: int, total_steps: int) -> dict:
        """One optimizer step. Nothing here waits for the device: the losses come back as tensors,
        read at log steps only (`_log`)."""
        config = self.config
        # 1. this step's schedules
        lr, wd = lr_at(step, total_steps, config), weight_decay_at(step, total_steps, config)
        momentum = ema_momentum(step, total_steps, config.ema_start, config.ema_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["apply_wd"] else 0.0

        # 2. the batch (this rank's rows) and its masks, and the step's other random draws
        images, target_images, masks, batch = self.batches(step, self.rank, self.world)
        self.drop_path_generator.manual_seed(config.seed * 7919 + step + 104729 * self.rank)  # per step and rank
        self.model.direction_generator = step_generator(config.seed, step, 4)    # SIGReg: the same on every rank

        # 3. forward: z_c = f(x_c), z_t = g(x), z_hat = h(z_c, target positions), and the loss
        self.model.train()
        with autocast_context(self.device, self.precision):
            out = self.forward(images, masks.context_indices, masks.target_indices, target_images)

        # 4. backward (DDP averages the gradients over the ranks), clip, AdamW
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()   # fp16: scaled so that small gradients survive
        self.scaler.unscale_(self.optimizer)        # true gradients before clipping (no-op unless fp16)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)            # skips the step if fp16 gradients overflowed
        self.scaler.update()

        # 5. the target encoder follows the context encoder (EMA; nothing in "joint" and "sigreg")
        self.model.update_target(momentum)
        result = {"loss": out["loss"].detach(), "lr": lr, "wd": wd, "momentum": momentum,
                  "target_tokens": out["target_tokens"].detach(), "batch": batch}
        for part in LOSS_PARTS:             # the parts of objectives "both" / "pixels" and of target mode "sigreg"
            if part in out:
                result[part] = out[part].detach()
        return result

    # -- the loop ----------------------------------------------------------------------------
    def run(self, until_step: int | None = None) -> TrainResult:
        """Train to the end of the schedule or the budget, or pause after `until_step` steps (the
        schedule is unchanged: a later run() resumes exactly)."""
        live_metrics = LiveMetrics(self.out_dir / METRICS_LIVE_NAME if self.rank == 0 else None, self.history)
        try:
            with StopSignals() as signals:
                return self._loop(until_step, signals, live_metrics)
        finally:
            self.batches.stop()                # streaming: stop the loader's workers (a later run() restarts them)
            live_metrics.close()

    def _loop(self, until_step: int | None, signals: StopSignals, live_metrics: LiveMetrics) -> TrainResult:
        config = self.config
        budget = config.budget_minutes * 60 if config.budget_minutes is not None else None
        length = BudgetLength(budget) if budget is not None else None
        bar = progress_bar(self.total_steps, initial=self.step, desc="train") if self.progress else None
        meter = IntervalMeter(start=time.perf_counter())
        last_save = time.perf_counter()
        run_start = time.perf_counter() - self.elapsed
        total = self.total_steps or 10 ** 6       # before a budget run has measured its speed
        warned_collapse, stop_signal = False, 0
        while True:
            # the clock and the signals: checked every step by one process, by all together at log steps
            if self.world == 1 or self.step % config.log_every == 0:
                total = self.total_steps or 10 ** 6      # several processes: rank 0's value wins in agree
                out_of_time = budget is not None and time.perf_counter() - run_start >= budget
                stop_signal = signals.received or 0
                if self.world > 1:
                    out_of_time, total, stop_signal = distributed.agree(out_of_time, total, stop_signal, self.rank,
                                                                        self.device)
                    if length is not None and total != 10 ** 6:
                        self.total_steps = total
                if out_of_time or stop_signal:
                    break
            if self.step >= total or (until_step is not None and self.step >= until_step):
                break
            result = self.train_step(self.step, total)
            self.step += 1
            meter.add(result)
            if bar is not None:
                bar.update(1)

            if length is not None and (self.world == 1 or self.step % config.log_every == 0):
                # a budget: the schedule's length from the measured speed (rank 0's, sent at the next agree)
                self.total_steps = length.update(self.step, time.perf_counter(), run_start, self.total_steps)
                if bar is not None and bar.total != self.total_steps:
                    bar.total = self.total_steps
                    bar.refresh()

            if self.step % config.log_every == 0 or self.step == total:
                record = self._log(meter, result, run_start)
                live_metrics.write(record)
                if not warned_collapse:
                    warned_collapse = self._warn_if_collapsed(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", std=f"{record['target_std']:.3f}")
                if time.perf_counter() - last_save > config.checkpoint_every_minutes * 60:
                    self.elapsed = time.perf_counter() - run_start
                    self.save()
                    last_save = time.perf_counter()

        self.elapsed = time.perf_counter() - run_start
        if bar is not None:
            bar.close()
        if meter.steps:                 # steps since the last log: their loss must be finite before saving
            self._check_finite(meter, self.step)
        if stop_signal:                 # save what was done, then stop: the same command resumes
            self.save()
            self._barrier()
            message = (f"stopped by {signal.Signals(stop_signal).name} at step {self.step}: checkpoint written "
                       f"to {self.checkpoint_path}; the same command resumes from it")
            self.log(message)
            raise TrainingStopped(message, stop_signal)
        paused = until_step is not None and self.step >= until_step
        if not paused and (self.total_steps is None or (budget is not None and self.step < self.total_steps)):
            self.total_steps = self.step             # budget ran out: record what was done
        self.save()
        self._barrier()      # leave together, after rank 0's last checkpoint
        return TrainResult(self.model, self.history, self.checkpoint_path, self.step, self.elapsed)

    def _log(self, meter: IntervalMeter, result: dict, run_start: float) -> dict:
        """A log step: the interval's mean losses (averaged over the ranks), a stop if they are not
        finite, and the record appended to the history."""
        losses = self._check_finite(meter, self.step)
        record = meter.record(self.step, losses, result, time.perf_counter(), run_start)
        self.history.append(record)
        return record

    def _check_finite(self, meter: IntervalMeter, step: int) -> dict[str, float]:
        """The interval's mean losses, over every rank; a FloatingPointError (on every rank) if one
        is not finite: the last checkpoint, written before it, is kept."""
        names, sums = meter.sums()
        if self.world > 1:
            sums = distributed.mean_over_ranks(sums)
        losses = dict(zip(names, (sums / meter.steps).tolist()))
        if not math.isfinite(losses["loss"]):
            raise LossNotFinite(
                f"loss became {losses['loss']} by step {step}; stopping. The last good checkpoint "
                f"(step {self._last_saved_step}) is kept at {self.checkpoint_path}; try a lower --lr than "
                f"{self.config.lr}")
        return losses

    def _warn_if_collapsed(self, record: dict) -> bool:
        """Log metrics.collapse_warning's line when the record shows collapse; True if it did."""
        warning = collapse_warning(record, self.model.target_encoder.embed_dim)
        if warning:
            self.warn(warning)
        return warning is not None

    def _barrier(self) -> None:
        if self.world > 1:      # a rank that tears the group down while another still uses it can abort
            distributed.dist.barrier()


def train(config: TrainConfig, out_dir: str | Path, dataset: ImageDataset | None = None, resume: bool = True,
          progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Pretrain a JEPA with `config`; `out_dir` receives checkpoint.pt, config.json and metrics.json.
    If out_dir already holds a checkpoint of the same run, training resumes from it. Messages go to
    `log` (e.g. print), else to the "jepa_lite" logger."""
    return Trainer(config, out_dir, dataset=dataset, resume=resume, progress=progress, log=log).run()
