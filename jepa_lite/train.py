"""The training engine: schedules, time budget, metrics, atomic checkpoints, exact resume.

One `TrainConfig` holds every default of the recipe (the CLI flags map onto its fields).
Randomness is a pure function of (seed, step), so a run resumed from a checkpoint draws the
same batches, crops and masks as the uninterrupted run and, on CPU, gives the same losses.

The same engine trains every variant (notebook 08):
    objective  "jepa" (predict embeddings), "pixels" (reconstruct the target patches' pixels,
               a masked autoencoder on the same masks) or "both" (objective.py);
    encoder    "vit" (models.VisionTransformer) or "cnn" (cnn.ConvEncoder, a strided CNN whose
               feature map is the token grid); both keep the encoder contract of models.py and
               take their width D from the named `model` size, whose predictor they share.
"""
from __future__ import annotations

import copy
import json
import math
import os
import pickle
import signal
import threading
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn as nn

from .config import DATA_DEFAULTS, LR_SCHEDULES, RECIPES, TrainConfig, data_defaults
from .data import BatchAugment, ImageDataset, load_dataset, scramble_colours
from .progress import progress_bar
from .device import PRECISIONS, autocast_context, choose_precision, describe_device, grad_scaler, pick_device
from .masks import MaskConfig, Masks, MaskSampler, default_mask_config
from .cnn import CNNConfig, ConvEncoder, cnn_config_from_size
from .models import Predictor, PredictorConfig, ViTConfig, VisionTransformer, model_configs, set_drop_path_generator
from .objective import (JEPA, LOSSES, OBJECTIVES, TARGET_MODES, TARGET_NORMS, across_image_share, ema_momentum,
                        embedding_std, rankme)
from . import distributed
from .errors import CheckpointError, HelperFailed, JepaLiteError, TrainingStopped

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_LIVE_NAME = "metrics.jsonl"      # appended as the run logs; metrics.json is written with each checkpoint
CHECKPOINT_FORMAT = "jepa_lite/1"

# Encoder architectures the engine can build: name -> (config class, module class). Any module
# keeping the encoder contract (models.py docstring) can be added here.
ENCODERS: dict[str, tuple[type, type]] = {
    "vit": (ViTConfig, VisionTransformer),
    "cnn": (CNNConfig, ConvEncoder),
}

# ---------------------------------------------------------------------------------------------
# building blocks

def encoder_kind(encoder_config) -> str:
    """The ENCODERS name of an encoder config ("vit" for a ViTConfig, "cnn" for a CNNConfig)."""
    for name, (config_class, _) in ENCODERS.items():
        if isinstance(encoder_config, config_class):
            return name
    raise ValueError(f"no encoder for a {type(encoder_config).__name__}; valid configs: "
                     f"{[c.__name__ for c, _ in ENCODERS.values()]}")


def build_encoder(encoder_config) -> nn.Module:
    """A ViTConfig -> VisionTransformer, a CNNConfig -> ConvEncoder (see ENCODERS)."""
    return ENCODERS[encoder_kind(encoder_config)][1](encoder_config)


def build_jepa(encoder_config: ViTConfig | CNNConfig, predictor_config: PredictorConfig, target_mode: str = "ema",
               loss: str = "smooth_l1", objective: str = "jepa", pixel_weight: float = 1.0,
               target_norm: str = "instance") -> JEPA:
    encoder = build_encoder(encoder_config)
    predictor = Predictor(predictor_config, encoder.embed_dim, encoder.grid_size)
    patch_dim = encoder_config.in_channels * encoder_config.patch_size ** 2
    return JEPA(encoder, predictor, target_mode=target_mode, loss=loss, objective=objective,
                patch_dim=patch_dim, pixel_weight=pixel_weight, target_norm=target_norm)


def configs_for(config: TrainConfig, image_size: int) -> tuple[ViTConfig | CNNConfig, PredictorConfig, MaskConfig]:
    """The encoder, predictor and mask configs of a run. encoder="cnn" takes the token width D of
    the named model size (and its predictor) and builds cnn.CNNConfig with the same patch grid."""
    config = config.resolve()
    encoder_config, predictor_config = model_configs(config.model, image_size=image_size,
                                                     patch_size=config.patch_size,
                                                     drop_path=config.drop_path)
    if config.encoder == "cnn":
        encoder_config = cnn_config_from_size(encoder_config.embed_dim, image_size, config.patch_size)
    predictor_config = replace(predictor_config, shared_context=config.shared_context)
    mask_config = default_mask_config(encoder_config.grid_size, floor_tokens=config.floor_mask_tokens)
    unknown = set(config.mask) - {f.name for f in fields(MaskConfig)}
    if unknown:
        raise ValueError(f"unknown mask options {sorted(unknown)}; valid: {[f.name for f in fields(MaskConfig)]}")
    mask_config = MaskConfig(**{**asdict(mask_config), **config.mask})
    return encoder_config, predictor_config, mask_config


def param_groups(model: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on matrices only, none on biases and 1-D (norm) parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


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


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, stream): this is what makes resume exact."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 16 + stream)


def batch_indices(num_images: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The image indices of a step: epochs are fresh permutations, batches consecutive slices."""
    per_epoch = max(num_images // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_images, generator=step_generator(seed, epoch, 15))
    return order[position * batch_size:(position + 1) * batch_size]


# ---------------------------------------------------------------------------------------------
# checkpoints

def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash mid-write never
    leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(text: str, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(obj, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=1), path)


# what every checkpoint written by Trainer.state() holds (newer keys are optional: see Trainer._restore)
CHECKPOINT_KEYS = ("train_config", "encoder_config", "predictor_config", "mask_config", "data",
                   "context_encoder", "target_encoder", "predictor", "step")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by `train`: plain tensors and dicts only (weights_only=True, so a
    file holding any other object is refused, never executed). Any unreadable, empty, truncated
    or foreign file raises CheckpointError with one line that says which file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():      # torch refused a class: not ours, and not loaded
            raise CheckpointError(f"{path} holds Python objects other than tensors and plain values: it is not a "
                                  f"jepa_lite checkpoint, and it was not loaded (such a file can run code)") from None
        raise CheckpointError(f"{path} is not a torch file (is it a checkpoint?)") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError):   # torch's zip and tensor readers
        raise CheckpointError(f"{path} cannot be read: truncated or damaged, or not a torch file") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a jepa_lite checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is an incomplete jepa_lite checkpoint: no {', '.join(missing)}")
    return checkpoint


def load_state_dict_checked(module: nn.Module, state_dict: dict, what: str) -> None:
    """load_state_dict that fails with one clear message listing every mismatched key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state_dict)) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"checkpoint {what} does not match this architecture: missing keys {missing}; "
                              f"unexpected keys {unexpected}; shape mismatches {shapes}")
    module.load_state_dict(state_dict)


def load_networks(model: JEPA, checkpoint: dict) -> None:
    """Copy the three networks' weights (and the pixel head, when the model has one) from a
    checkpoint dict into `model`."""
    for part in ("context_encoder", "target_encoder", "predictor"):
        load_state_dict_checked(getattr(model, part), checkpoint[part], part)
    if model.pixel_head is not None:
        if "pixel_head" not in checkpoint:
            raise ValueError(f"the model reconstructs pixels (objective {model.objective!r}) but the checkpoint "
                             f"has no pixel_head")
        load_state_dict_checked(model.pixel_head, checkpoint["pixel_head"], "pixel_head")


def encoder_config_from_checkpoint(checkpoint: dict) -> ViTConfig | CNNConfig:
    """The encoder config of a checkpoint: a CNNConfig if it was trained with encoder="cnn",
    else a ViTConfig (checkpoints written before the encoder option are ViTs)."""
    kind = checkpoint["train_config"].get("encoder", "vit")
    if kind not in ENCODERS:
        raise ValueError(f"checkpoint has unknown encoder {kind!r}; valid: {tuple(ENCODERS)}")
    return ENCODERS[kind][0](**checkpoint["encoder_config"])


def jepa_from_checkpoint(checkpoint: dict) -> JEPA:
    """Rebuild the JEPA (all three networks, and the pixel head of the pixel objectives) from a
    checkpoint dict. Checkpoints written before the objective option load as "jepa"."""
    saved = checkpoint["train_config"]
    model = build_jepa(encoder_config_from_checkpoint(checkpoint), PredictorConfig(**checkpoint["predictor_config"]),
                       target_mode=saved["target_mode"], loss=saved["loss"],
                       objective=saved.get("objective", "jepa"), pixel_weight=saved.get("pixel_weight", 1.0),
                       target_norm=saved.get("target_norm", "layer"))
    load_networks(model, checkpoint)
    return model


# ---------------------------------------------------------------------------------------------
# the loop

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
                 resume: bool = True, progress: bool = True, log=print):
        config = config.resolve()              # every default filled in, once
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.progress = progress
        self.log = log
        self.device = pick_device(config.device)
        self.rank, self.world = 0, 1       # set here under torchrun, in run() for workers > 1
        launch = distributed.launched_by_torchrun()
        if launch is not None:
            self.rank, self.world, local_rank = launch
            if self.device.type == "cuda":              # one GPU per process
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            distributed.check_world(config.batch_size, self.world)
            distributed.join_torchrun_group(self.device)
            if self.rank != 0:                          # rank 0 alone logs and shows progress
                self.log, self.progress = (lambda *args, **kwargs: None), False
        self.precision = choose_precision(self.device, config.amp)
        if self.device.type != "cpu":
            self.log(describe_device(self.device, config.amp))
        torch.manual_seed(config.seed)

        if dataset is None:
            dataset = load_dataset(config.data, "train", root=config.data_root, image_size=config.image_size,
                                   max_images=config.max_train_images)
        if len(dataset) < 1:
            raise ValueError(f"data set {config.data!r} is empty")
        self.image_size = dataset.images.shape[-1]
        self.dataset = dataset.to(self.device)
        self.encoder_config, self.predictor_config, self.mask_config = configs_for(config, self.image_size)
        self.model = build_jepa(self.encoder_config, self.predictor_config, config.target_mode, config.loss,
                                objective=config.objective, pixel_weight=config.pixel_weight,
                                target_norm=config.target_norm).to(self.device)
        self.drop_path_generator = torch.Generator()          # seeded per step in train_step
        set_drop_path_generator(self.model, self.drop_path_generator)
        self.optimizer = torch.optim.AdamW(param_groups(self.model), lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scaler = grad_scaler(self.device, self.precision)        # active for fp16 only
        self.mask_sampler = MaskSampler(self.mask_config)
        self.augment = BatchAugment(crop_scale=config.crop_scale, hflip=config.hflip)
        self.forward = torch.compile(self.model, dynamic=True) if config.compile else self.model

        self.steps_per_epoch = max(len(dataset) // config.batch_size, 1)
        if config.steps is not None:
            self.total_steps = config.steps
        elif config.epochs is not None:
            self.total_steps = max(1, math.ceil(config.epochs * self.steps_per_epoch))
        else:
            self.total_steps = None        # set from measured speed after a few steps
        self.workers = config.workers or distributed.auto_workers(self.device, config.batch_size, self.total_steps,
                                                               config.budget_minutes)
        distributed.check_workers(self.workers, config.batch_size, self.device)
        self.step = 0
        self.elapsed = 0.0                 # training seconds spent so far (over all resumes)
        self.history: list[dict] = []
        if launch is None:
            if resume and self.checkpoint_path.exists():
                self._restore(load_checkpoint(self.checkpoint_path, map_location=self.device))
        else:
            self._restore_on_every_rank(resume)
            self._join(self.rank, self.world)

    def _restore_on_every_rank(self, resume: bool) -> None:
        """torchrun: rank 0 reads the checkpoint (if any) and sends it to the others; a bad file is
        the same one-line error on every rank, not a wait."""
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

    def _join(self, rank: int, world: int) -> None:
        """Train as `rank` of a group of `world` processes: DDP around the model."""
        self.rank, self.world = rank, world
        self.forward = distributed.wrap(self.model, self.device)
        if self.config.compile:
            self.forward = torch.compile(self.forward, dynamic=True)

    def _leave(self) -> None:
        self.rank, self.world = 0, 1
        self.forward = torch.compile(self.model, dynamic=True) if self.config.compile else self.model

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
                raise ValueError(f"cannot resume {self.checkpoint_path}: it was trained with {key}={was!r}, "
                                 f"this run asks for {key}={getattr(self.config, key)!r} (use another --out)")
        load_networks(self.model, checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler.is_enabled() and "grad_scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        self.step = checkpoint["step"]
        if self.total_steps is None:           # budget runs keep the schedule they measured
            self.total_steps = checkpoint["total_steps"]
        self.elapsed = checkpoint.get("elapsed_seconds", 0.0)
        self.history = list(checkpoint["history"])
        self.log(f"resumed from {self.checkpoint_path.name} at step {self.step}")

    def save(self) -> None:
        save_atomic(self.state(), self.checkpoint_path)
        write_json_atomic(self.history, self.out_dir / "metrics.json")
        write_json_atomic({"train": asdict(self.config), "encoder": asdict(self.encoder_config),
                           "predictor": asdict(self.predictor_config), "mask": asdict(self.mask_config)},
                          self.out_dir / "config.json")

    # -- one step --------------------------------------------------------------------------
    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, step: int, total_steps: int) -> dict:
        config = self.config
        lr, wd = lr_at(step, total_steps, config), weight_decay_at(step, total_steps, config)
        momentum = ema_momentum(step, total_steps, config.ema_start, config.ema_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["apply_wd"] else 0.0

        indices = batch_indices(len(self.dataset), config.batch_size, config.seed, step).to(self.device)
        images = self.augment(self.dataset.images[indices], generator=step_generator(config.seed, step, 1))
        masks = self.mask_sampler(images.shape[0], generator=step_generator(config.seed, step, 2), device=self.device)
        target_images = None
        if config.colour_views != "same":
            colours = step_generator(config.seed, step, 3)
            target_images = scramble_colours(images, colours)
            if config.colour_views == "both":
                images = scramble_colours(images, colours)
        batch = images.shape[0]
        if self.world > 1:      # every rank drew the whole batch (same crops, same masks); keep our rows
            rows = distributed.rows_of_rank(batch, self.rank, self.world)
            images = images[rows]
            target_images = None if target_images is None else target_images[rows]
            masks = Masks(masks.context_indices[rows], masks.target_indices[rows], masks.grid_size)
        self.drop_path_generator.manual_seed(config.seed * 7919 + step + 104729 * self.rank)  # per step and rank

        self.model.train()
        with autocast_context(self.device, self.precision):
            out = self.forward(images, masks.context_indices, masks.target_indices, target_images)
        loss = out["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()         # fp16: scaled so that small gradients survive
        if self.world > 1:      # DDP averaged the gradients; the whole batch's loss decides a NaN stop on every rank
            loss = distributed.mean_over_ranks(loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {step}; stopping. The last good checkpoint "
                f"(step {self._last_saved_step}) is kept at {self.checkpoint_path}; try a lower --lr than {config.lr}")
        self.scaler.unscale_(self.optimizer)        # true gradients before clipping (no-op unless fp16)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)            # skips the step if fp16 gradients overflowed
        self.scaler.update()
        self.model.update_target(momentum)
        result = {"loss": loss.detach(), "lr": lr, "wd": wd, "momentum": momentum,
                  "target_tokens": out["target_tokens"].detach(), "batch": batch}
        for part in ("embedding_loss", "pixel_loss"):          # the parts of objective "both" / "pixels"
            if part in out:
                result[part] = out[part].detach()
        return result

    # -- the loop ----------------------------------------------------------------------------
    def run(self, until_step: int | None = None) -> TrainResult:
        """Train to the end of the schedule or the budget, or pause after `until_step` steps (the
        schedule is unchanged: a later run() resumes exactly). With workers > 1 this process is
        rank 0 of a data-parallel group (distributed.py) whose helpers it starts and stops."""
        if self.workers > 1:
            return self._run_data_parallel(until_step)
        return self._loop(until_step)

    def _run_data_parallel(self, until_step: int | None) -> TrainResult:
        threads = torch.get_num_threads()
        per_worker = distributed.threads_per_worker(self.workers)
        self.log(f"data parallel: {self.workers} processes x {per_worker} thread(s), "
                 f"{self.config.batch_size // self.workers} images each per step")
        torch.set_num_threads(per_worker)
        try:
            with distributed.HelperProcesses(self.workers, _helper_main,
                                             (self.config, str(self.out_dir), distributed.shareable(self.dataset),
                                              # a copy: tensors sent to a helper move to shared memory, and
                                              # optimizer.load_state_dict keeps (not copies) the moments it gets
                                              copy.deepcopy(self.state()), per_worker)) as helpers:
                self._join(0, self.workers)
                try:
                    return self._loop(until_step)
                except RuntimeError as e:          # a collective failed: say which helper stopped
                    why = helpers.failure()
                    if why:
                        raise HelperFailed(f"{why}; the last good checkpoint (step {self._last_saved_step}) "
                                           f"is kept at {self.checkpoint_path}") from e
                    raise
        finally:
            self._leave()
            torch.set_num_threads(threads)

    def _warn_if_collapsed(self, record: dict) -> bool:
        """Log a warning when a metrics record shows either kind of collapse (notebook 04); True if it did.
        Thresholds: std below 10% of a spread-out embedding's 1/sqrt(D) (the encoder maps every token
        to nearly one vector), or under 5% of the target variance across images (the tokens depend on
        their position only: the std can look healthy then). A healthy run stays far from both."""
        std_floor = 0.1 / math.sqrt(self.model.target_encoder.embed_dim)
        reasons = []
        if record["target_std"] < std_floor:
            reasons.append(f"target std {record['target_std']:.4f} < {std_floor:.4f}: "
                           "nearly one vector for every token")
        if record["target_image_share"] < 0.05:
            reasons.append(f"only {record['target_image_share']:.1%} of the target variance is across images: "
                           "the targets depend on the token position, hardly on the image")
        if reasons:
            self.log(f"warning: the target encoder looks collapsed at step {record['step']} ("
                     + "; ".join(reasons) + "). Training goes on; notebook 04 shows both kinds of collapse.")
        return bool(reasons)

    def _loop(self, until_step: int | None) -> TrainResult:
        with StopSignals() as signals:
            return self._loop_until_signal(until_step, signals)

    def _loop_until_signal(self, until_step: int | None, signals: "StopSignals") -> TrainResult:
        self._last_saved_step = self.step
        live_metrics = None
        if self.rank == 0:        # metrics.jsonl: one line per record as it is logged (watch it live: tail -f)
            live_path = self.out_dir / METRICS_LIVE_NAME
            write_text_atomic("".join(json.dumps(r) + "\n" for r in self.history), live_path)   # = the checkpoint's
            live_metrics = open(live_path, "a")
        try:
            return self._steps(until_step, signals, live_metrics)
        finally:
            if live_metrics is not None:
                live_metrics.close()

    def _steps(self, until_step: int | None, signals: "StopSignals", live_metrics) -> TrainResult:
        config = self.config
        budget = config.budget_minutes * 60 if config.budget_minutes is not None else None
        provisional_total = 10 ** 6                  # before the speed is measured (budget runs)
        bar = None
        if self.progress:
            bar = progress_bar(self.total_steps, initial=self.step, desc="train")

        interval_loss, interval_steps, interval_images, interval_start = 0.0, 0, 0, time.perf_counter()
        interval_parts: dict[str, float] = {}          # embedding_loss / pixel_loss of the other objectives
        last_save = time.perf_counter()
        calibration_start, calibration_step = None, 0
        run_start = time.perf_counter() - self.elapsed
        warned_collapse = False
        while True:
            total = self.total_steps or provisional_total
            stop = (self.step >= total or (until_step is not None and self.step >= until_step)
                    or (self.rank == 0 and budget is not None and time.perf_counter() - run_start >= budget))
            stop_signal = signals.received or 0
            if self.world > 1:       # stop together: rank 0's clock and schedule length, any rank's signal
                stop, total, stop_signal = distributed.agree(stop, total, stop_signal, self.rank, self.device)
            if stop or stop_signal:
                break
            result = self.train_step(self.step, total)
            self.step += 1
            interval_loss += result["loss"].item()
            interval_steps += 1
            interval_images += result["batch"]
            for part in ("embedding_loss", "pixel_loss"):
                if part in result:
                    interval_parts[part] = interval_parts.get(part, 0.0) + result[part].item()
            if bar is not None:
                bar.update(1)

            # budget runs: set the schedule length from the measured speed, and keep correcting
            # it (the first steps are often slower) until 80% of the budget is spent
            if budget is not None and self.step >= 3:
                now = time.perf_counter()
                if calibration_start is None:
                    calibration_start, calibration_step = now, self.step
                elif self.step - calibration_step >= 10 and (self.total_steps is None or (
                        self.step % 10 == 0 and now - run_start < 0.8 * budget)):
                    per_step = (now - calibration_start) / (self.step - calibration_step)
                    self.total_steps = self.step + max(int((budget - (now - run_start)) / per_step), 1)
                    if bar is not None:
                        bar.total = self.total_steps
                        bar.refresh()

            if self.step % config.log_every == 0 or self.step == (self.total_steps or -1):
                now = time.perf_counter()
                pooled = result["target_tokens"].float().mean(dim=1)           # [B, D]
                record = {"step": self.step, "loss": interval_loss / interval_steps,
                          "lr": result["lr"], "weight_decay": result["wd"], "momentum": result["momentum"],
                          "target_std": embedding_std(result["target_tokens"]),
                          "target_rankme": rankme(pooled),
                          # needs 2+ images: a batch (or a rank's share of it) of 1 logs NaN
                          "target_image_share": (across_image_share(result["target_tokens"])
                                                 if result["target_tokens"].shape[0] >= 2 else float("nan")),
                          "images_per_second": interval_images / max(now - interval_start, 1e-9),
                          "elapsed_seconds": now - run_start}
                record.update({part: total_part / interval_steps for part, total_part in interval_parts.items()})
                self.history.append(record)
                if live_metrics is not None:
                    live_metrics.write(json.dumps(record) + "\n")
                    live_metrics.flush()
                if not warned_collapse:
                    warned_collapse = self._warn_if_collapsed(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", std=f"{record['target_std']:.3f}")
                interval_loss, interval_steps, interval_images, interval_start = 0.0, 0, 0, now
                interval_parts = {}
            if self.rank == 0 and time.perf_counter() - last_save > config.checkpoint_every_minutes * 60:
                self.elapsed = time.perf_counter() - run_start
                self.save()
                self._last_saved_step = self.step
                last_save = time.perf_counter()

        self.elapsed = time.perf_counter() - run_start
        if bar is not None:
            bar.close()
        if stop_signal:                           # save what was done, then stop: the same command resumes
            if self.rank == 0:
                self.save()
            if self.world > 1:
                distributed.dist.barrier()
            message = (f"stopped by {signal.Signals(stop_signal).name} at step {self.step}: checkpoint written "
                       f"to {self.checkpoint_path}; the same command resumes from it")
            self.log(message)
            raise TrainingStopped(message, stop_signal)
        paused = until_step is not None and self.step >= until_step
        if not paused and (self.total_steps is None or (budget is not None and self.step < self.total_steps)):
            self.total_steps = self.step             # budget ran out: record what was done
        if self.rank == 0:
            self.save()
        if self.world > 1:        # leave together, after rank 0's last checkpoint (a rank that tears the group
            distributed.dist.barrier()   # down while another still uses it can abort)
        return TrainResult(self.model, self.history, self.checkpoint_path, self.step, self.elapsed)


class StopSignals:
    """While training: Ctrl-C (SIGINT) or SIGTERM only asks the loop to stop; it then writes a
    checkpoint and raises TrainingStopped. A second signal acts at once as usual. Signal handlers
    can only be set from the main thread: elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:             # asked twice: give up waiting for the step to end
            self._restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


def _helper_main(rank: int, world: int, store: str, config: TrainConfig, out_dir: str, dataset, state: dict,
                 threads: int) -> None:
    """A data-parallel helper (rank >= 1) started by rank 0's Trainer.run(): rank 0's state, then the
    same training loop, silently (rank 0 logs, decides when to stop and writes the checkpoints)."""
    torch.set_num_threads(threads)
    distributed.init_file_group(store, rank, world)
    try:
        # resume=False: the state comes from rank 0, and helpers never write to out_dir
        trainer = Trainer(config, out_dir, dataset=distributed.unshare(dataset), resume=False, progress=False,
                          log=lambda *a: None)
        trainer._restore(state)
        trainer._join(rank, world)
        trainer._loop(None)
    except TrainingStopped:                   # rank 0 wrote the checkpoint
        pass
    finally:
        distributed.dist.destroy_process_group()


def train(config: TrainConfig, out_dir: str | Path, dataset: ImageDataset | None = None, resume: bool = True,
          progress: bool = True, log=print) -> TrainResult:
    """Pretrain a JEPA with `config`; `out_dir` receives checkpoint.pt, config.json and metrics.json.
    If out_dir already holds a checkpoint of the same run, training resumes from it."""
    return Trainer(config, out_dir, dataset=dataset, resume=resume, progress=progress, log=log).run()
