"""What a pretraining run does: TrainConfig, and the named recipes that fill in what it leaves open.

A TrainConfig is a frozen value. A field left as None means "what the recipe (or the data set,
or the model size) says"; `resolve()` returns a new TrainConfig with every such field filled in,
once, and the Trainer only ever sees resolved configs. Nothing is rewritten after construction,
so `dataclasses.replace(config, data="cifar10")` takes CIFAR-10's batch size and
`replace(TrainConfig(), steps=500)` is a 500-step run.

Two recipes (`--recipe`):
- "paper": the settings of the I-JEPA reference code (facebookresearch/ijepa, its ImageNet
  configs) except those in PAPER_DEVIATIONS: per-block predictor passes, layer-normed targets,
  EMA 0.996 -> 1.0, lr warm-up from 2e-4 to 1e-3 over 40 of 300 epochs then cosine to 1e-6,
  weight decay 0.04 -> 0.4 (cosine), AdamW's default betas, no gradient clipping, crops of 30-100%
  of the image, no flip; its masks on every grid (4 targets of 15-20%, aspect 0.75-1.5, context
  85-100%, blocks of more than 10 cells, sizes floored to whole tokens: masks.reference_mask_config),
  and its network details (LayerNorm eps 1e-6, trunc-normal 0.02 patch embedding, ImageNet input
  normalisation: models.REFERENCE_NETWORK). PAPER_DEVIATIONS names each difference (the mask
  sampler's fixes of the reference's faults, image folders' crops) and its reason. Its batch
  of 2048 is left to the data set's default (set --batch-size to match it).
- "fast": the course's short-run recipe. Each setting where it leaves the paper is in
  FAST_DEVIATIONS with the reason, measured where a measurement exists (docs/results.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from jepa_lite.core.objective import check_settings
from jepa_lite.data.augment import COLOUR_VIEWS
from jepa_lite.data.datasets import CLIP_PALETTES, SHAPES_SPECS
from jepa_lite.engine.device import PRECISIONS
from jepa_lite.errors import BadValue

LR_SCHEDULES = ("cosine", "constant")
ENCODER_NAMES = ("vit", "cnn")

# Settings that depend on the data set: the shapes' objects fill much of a 32 px image, so strong
# crops cut them away, and smaller batches give a 5-minute CPU run more updates (docs/results.md).
# Real photos (CIFAR-10 and image folders) use the usual I-JEPA crops.
DATA_DEFAULTS = {
    "shapes": {"batch_size": 128, "crop_scale": (0.7, 1.0)},
    "other": {"batch_size": 256, "crop_scale": (0.3, 1.0)},
    # clips are used whole: no crop, and no flip (it would turn "right" into "left"); wins over the recipe's
    "clips": {"batch_size": 64, "crop_scale": (1.0, 1.0), "hflip": False},
}
CLIP_SPECS = tuple(CLIP_PALETTES)      # data sets of clips: trained with a video size (VIDEO_SIZES)

PAPER = {
    "lr": 1e-3, "start_lr": 2e-4, "min_lr": 1e-6, "lr_schedule": "cosine", "warmup_fraction": 40 / 300,
    "warmup_steps": 0, "weight_decay": 0.04, "final_weight_decay": 0.4, "betas": (0.9, 0.999),
    "grad_clip": 0.0, "ema_start": 0.996, "ema_end": 1.0, "target_norm": "layer", "shared_context": False,
    "hflip": False, "crop_scale": (0.3, 1.0), "floor_mask_tokens": True, "reference_masks": True,
    "reference_network": True,
}

FAST = {
    "lr": 3e-3, "start_lr": 0.0, "min_lr": 1e-5, "lr_schedule": "constant", "warmup_fraction": 0.0,
    "warmup_steps": 100, "weight_decay": 0.1, "final_weight_decay": 0.1, "betas": (0.9, 0.95),
    "grad_clip": 1.0, "ema_start": 0.98, "ema_end": 0.98, "target_norm": "instance", "shared_context": True,
    "hflip": True, "crop_scale": None, "floor_mask_tokens": False,      # crop_scale None: per data set
    "reference_masks": False, "reference_network": False,
}

RECIPES = {"paper": PAPER, "fast": FAST}

# Where "paper" leaves the reference code on purpose, and why (tests/test_paper_recipe.py measures the
# masks against a reference-style sampler and fails on a difference not named here;
# benchmarks/paper_masks.py prints the figures, docs/results.md keeps them).
PAPER_DEVIATIONS = {
    "mask_placement": "blocks may touch the last row and column, and the context block may cover the whole "
                      "grid: the reference draws a block's top from 0..H-h-1 and clips sizes to H-1 (an "
                      "off-by-one, ijepa PR #40), so no mask ever reaches the last row or column: the "
                      "course's contexts hold more tokens and reach the last row; "
                      "`--mask placement=reference` restores the reference's",
    "mask_truncation": "each image's context is cut to the batch's shortest by a uniformly random subset, "
                       "not its first indices in row-major order (ijepa issue #60: the bottom-right is cut "
                       "more often); the lengths are the same",
    "mask_retries": "sampling always ends: a block size below min_keep is never drawn (the reference loops "
                    "forever on targets of <= 10 cells, e.g. 3x3 on 8x8 grids, where only the 4x3 size "
                    "remains) and a context left with too few cells is re-placed at most 20 times, then takes "
                    "every non-target cell (the reference instead lets it overlap targets); rare on 14x14",
    "imagefolder_crops": "image folders held in memory (one uint8 tensor, the default below 2 GiB decoded) "
                         "are centre-cropped to a square and resized once, and the random crops are cut from "
                         "that square: the sides of a photo are never seen. Streamed folders (--stream, and "
                         "by default above 2 GiB) crop the decoded original as the reference does",
}

# Why "fast" leaves the paper, setting by setting. The measurements behind them are in
# docs/results.md ("What moved the recipe", "The course's recipe, step by step"), not here.
FAST_DEVIATIONS = {
    "target_norm": "instance-normed targets (each image's tokens centred and scaled): the largest single gain "
                   "on shapes and CIFAR-10 in short runs",
    "ema_start": "EMA 0.98 flat (with instance targets): better than the paper's 0.996 -> 1 and than 0.96 in "
                 "runs of 700-1200 steps",
    "ema_end": "flat, see ema_start",
    "lr_schedule": "flat lr and weight decay after the warm-up: a cosine spends a short run's last part at a "
                   "small lr",
    "min_lr": "unused by a flat lr",
    "start_lr": "the warm-up starts at 0: not measured separately",
    "weight_decay": "flat at 0.1 (with the flat lr above)",
    "final_weight_decay": "flat, see weight_decay",
    "warmup_fraction": "see warmup_steps",
    "crop_scale": "shapes: crops of 70-100%, since strong crops cut the objects away",
    "shared_context": "one predictor pass for all target blocks: fewer FLOPs per step (notebook 03 measures them)",
    "warmup_steps": "100 steps (at most a tenth of the run) instead of 40 of 300 epochs: short runs",
    "lr": "3e-3 peak: the best of 1.5e-3, 3e-3 and 4.5e-3 on shapes-mono at 1000 steps",
    "betas": "AdamW betas (0.9, 0.95): not measured separately",
    "grad_clip": "gradient clipping at 1.0: not measured separately",
    "hflip": "horizontal flips: not measured separately",
    "floor_mask_tokens": "block sizes rounded from s * N instead of floored: not measured separately",
    "reference_masks": "masks chosen by grid (masks.default_mask_config): on 8x8, targets of 10-20% and "
                       "min_keep 4, where the reference's leave only one target size (4x3); the reference's "
                       "values on grids of 14x14 and more",
    "reference_network": "fan-in patch-embedding init (std 0.02 on 4x4 patches makes tokens mostly position, "
                         "models.py), PyTorch's LayerNorm eps 1e-5 and fixed input normalisation (0.5, 0.25): "
                         "not measured against the reference's",
}


def data_defaults(data: str) -> dict:
    """The per-data-set values of the fields the recipe leaves to the data set."""
    if data in CLIP_SPECS:
        return DATA_DEFAULTS["clips"]
    return DATA_DEFAULTS["shapes" if data in SHAPES_SPECS else "other"]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a pretraining run. Length: one of steps, epochs or budget_minutes (none: a
    5-minute budget). None elsewhere: the recipe's value (RECIPES), the data set's (DATA_DEFAULTS)
    or the model size's (patch_size). `resolve()` fills them in."""
    recipe: str = "fast"                   # "fast" | "paper" (RECIPES)
    data: str = "shapes-mono"             # the course's data set (course.profiles.PROFILES), offline
    data_root: str = "data"
    max_train_images: int | None = None
    model: str = "tiny"
    encoder: str = "vit"                   # "vit" | "cnn": the architecture of f_theta / g_phi
    image_size: int | None = None          # default: the data set's own size
    patch_size: int | None = None          # default: the model size's own (4 for the course's sizes)
    drop_path: float = 0.0
    shared_context: bool | None = None     # predictor: one pass for all target blocks (models.py)
    # length
    steps: int | None = None
    epochs: float | None = None
    budget_minutes: float | None = None
    batch_size: int | None = None          # default: per data set
    # optimisation (None: the recipe's)
    lr: float | None = None
    start_lr: float | None = None          # the warm-up starts here
    min_lr: float | None = None            # the end of the cosine schedule
    lr_schedule: str | None = None         # after the warm-up: "constant" | "cosine" (decay to min_lr)
    warmup_steps: int | None = None        # at most a tenth of the run; one of these two is 0 (the
    warmup_fraction: float | None = None   # one given alone wins over the recipe's other)
    weight_decay: float | None = None
    final_weight_decay: float | None = None    # weight decay moves on a cosine from weight_decay to this
    betas: tuple[float, float] | None = None   # AdamW
    grad_clip: float | None = None         # max gradient norm; 0 = no clipping
    ema_start: float | None = None         # EMA momentum moves linearly from ema_start to ema_end
    ema_end: float | None = None
    loss: str = "smooth_l1"
    target_norm: str | None = None         # "instance" | "layer" (the paper's) | "none"
    target_mode: str = "ema"               # "ema" (the paper) | "joint" (collapses) | "sigreg" (LeJEPA)
    sigreg_weight: float = 0.02            # "sigreg": loss = (1 - w) * prediction + w * SIGReg
    sigreg_on: str = "pooled"              # "sigreg": each image's mean token, or one random token per image
    objective: str = "jepa"                # "jepa" (embeddings) | "pixels" (masked autoencoder) | "both"
    pixel_weight: float = 1.0              # "both": loss = embedding loss + pixel_weight * pixel loss
    # masks and augmentation
    # overrides of the mask config's fields: give a dict (mask={"num_targets": 2}); kept as sorted
    # (name, value) pairs, so that a TrainConfig is hashable (dict(config.mask) gives the dict back)
    mask: tuple[tuple[str, object], ...] = ()
    floor_mask_tokens: bool | None = None  # block sizes floored to whole tokens (the reference's sampler)
    reference_masks: bool | None = None    # the reference's mask setting on every grid, else the course's by grid
    reference_network: bool | None = None  # the reference's LayerNorm eps, patch init and input normalisation
    crop_scale: tuple[float, float] | None = None    # random-resized-crop area range
    hflip: bool | None = None
    # "same": both encoders see the same colours (the paper); "target": the target encoder sees the
    # picture with its colours scrambled (augment.scramble_colours), so a colour is no longer a target
    # the predictor can guess from the context; "both": each encoder sees its own scrambled colours
    colour_views: str = "same"
    # data loading: stream image folders from disk (DataLoader workers) instead of decoding them into
    # memory; None: stream when the decoded folder would exceed stream.STREAM_ABOVE_BYTES
    stream: bool | None = None
    loader_workers: int | None = None      # streaming: decoding processes (default: half the usable CPUs, 1..8)
    # machinery
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"                      # "auto" (by capability, device.py), "bf16", "fp16", "fp32"
    compile: bool = False
    log_every: int = 25
    checkpoint_every_minutes: float = 2.0

    def __post_init__(self) -> None:
        """Checks: a bad value is a BadValue (a ValueError) naming it and the valid range. The only
        change made: `mask` given as a dict (or JSON's list of pairs) becomes sorted pairs."""
        def frozen(value):
            return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value
        pairs = self.mask.items() if isinstance(self.mask, dict) else self.mask
        object.__setattr__(self, "mask", tuple(sorted((str(name), frozen(value)) for name, value in pairs)))
        def choose(name, value, valid):
            if value is not None and value not in valid:
                raise BadValue(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        choose("recipe", self.recipe, tuple(RECIPES))
        choose("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        choose("encoder", self.encoder, ENCODER_NAMES)
        choose("colour_views", self.colour_views, COLOUR_VIEWS)
        choose("amp", self.amp, PRECISIONS + ("none",))     # "none": the name older configs used for fp32
        lengths = [x for x in (self.steps, self.epochs, self.budget_minutes) if x is not None]
        if len(lengths) > 1:
            raise BadValue(f"give only one of steps ({self.steps}), epochs ({self.epochs}) "
                             f"and budget_minutes ({self.budget_minutes})")
        positive = {"steps": self.steps, "epochs": self.epochs, "budget_minutes": self.budget_minutes,
                    "batch_size": self.batch_size, "lr": self.lr,
                    "patch_size": self.patch_size, "log_every": self.log_every}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise BadValue(f"{name} must be > 0, got {value}")
        at_least_zero = {"min_lr": self.min_lr, "start_lr": self.start_lr, "warmup_steps": self.warmup_steps,
                         "weight_decay": self.weight_decay, "final_weight_decay": self.final_weight_decay,
                         "grad_clip": self.grad_clip, "loader_workers": self.loader_workers}
        for name, value in at_least_zero.items():
            if value is not None and value < 0:
                raise BadValue(f"{name} must be >= 0, got {value}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise BadValue(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.warmup_fraction and self.warmup_steps:
            raise BadValue(f"give only one warm-up: warmup_steps ({self.warmup_steps}) or warmup_fraction "
                             f"({self.warmup_fraction}); set the other to 0")
        for name in ("ema_start", "ema_end"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise BadValue(f"{name} must be in [0, 1], got {value}")
        if self.betas is not None and not (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise BadValue(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.crop_scale is not None and not (len(self.crop_scale) == 2
                                                and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise BadValue(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        # the JEPA's own rules (target mode, objective, loss, ...): checked where the JEPA checks them
        check_settings(target_mode=self.target_mode, loss=self.loss, target_norm=self.target_norm,
                       objective=self.objective, pixel_weight=self.pixel_weight, sigreg_weight=self.sigreg_weight,
                       sigreg_on=self.sigreg_on)
        if not 0 <= self.drop_path < 1:
            raise BadValue(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.stream and not self.data.startswith("imagefolder:"):
            raise BadValue(f"stream=True reads image folders (--data imagefolder:PATH); {self.data!r} is held in "
                             f"memory")
        self._check_clips()
        if self.encoder == "cnn" and self.drop_path:
            raise BadValue(f"drop_path ({self.drop_path}) applies to the vit encoder only; use 0 with encoder='cnn'")

    def _check_clips(self) -> None:
        """Clips (CLIP_SPECS) go with a video size and vice versa, as a ViT trained on embeddings,
        whole and unflipped."""
        from jepa_lite.core.model_sizes import VIDEO_SIZES

        clips, video = self.data in CLIP_SPECS, self.model in VIDEO_SIZES
        if clips and not video:
            raise BadValue(f"data {self.data!r} is clips: it needs a video model size, got model {self.model!r}; "
                           f"valid: {', '.join(VIDEO_SIZES)}")
        if video and not clips:
            raise BadValue(f"model {self.model!r} is a video size: it trains on clips, got data {self.data!r}; "
                           f"valid: {', '.join(CLIP_SPECS)}")
        if not clips:
            return
        if self.objective != "jepa":
            raise BadValue(f"objective {self.objective!r} reconstructs 2-D patches: clips train with objective "
                           f"'jepa' only")
        if self.encoder != "vit":
            raise BadValue(f"encoder {self.encoder!r} reads images: clips train with encoder 'vit' only")
        if self.hflip:
            raise BadValue(f"hflip={self.hflip!r}: a flip turns a clip's 'right' into 'left'; clips train with "
                           f"hflip False")
        if self.crop_scale is not None and tuple(self.crop_scale) != (1.0, 1.0):
            raise BadValue(f"crop_scale {tuple(self.crop_scale)}: clips are used whole; valid: (1.0, 1.0)")
        if self.colour_views != "same":
            raise BadValue(f"colour_views {self.colour_views!r}: clips train with colour_views 'same' only")

    def resolve(self) -> "TrainConfig":
        """A new TrainConfig with every None filled in from the recipe, the data set and the model
        size (resolving a resolved config changes nothing)."""
        from jepa_lite.core.model_sizes import all_sizes, unknown_size
        from jepa_lite.core.models import ViTConfig

        recipe = RECIPES[self.recipe]
        values = {name: value for name, value in recipe.items() if getattr(self, name) is None}
        if self.warmup_steps and self.warmup_fraction is None:     # warm-up steps asked for: not the recipe's fraction
            values["warmup_fraction"] = 0.0
        if self.warmup_fraction and self.warmup_steps is None:     # and the other way round
            values["warmup_steps"] = 0
        for name, value in data_defaults(self.data).items():     # clips: their hflip wins over the recipe's
            if getattr(self, name) is None and (values.get(name) is None or self.data in CLIP_SPECS):
                values[name] = value
        if self.patch_size is None:
            sizes = all_sizes()
            if self.model not in sizes:
                raise unknown_size(self.model)
            values["patch_size"] = sizes[self.model][0].get("patch_size", ViTConfig.patch_size)
        if self.steps is None and self.epochs is None and self.budget_minutes is None:
            values["budget_minutes"] = 5.0
        if self.amp == "none":
            values["amp"] = "fp32"
        for name in ("crop_scale", "betas"):                 # lists from JSON -> tuples
            value = values.get(name, getattr(self, name))
            if value is not None and not isinstance(value, tuple):
                values[name] = tuple(value)
        return replace(self, **values) if values else self     # resolved already: the same value

    def changed(self, **given) -> "TrainConfig":
        """This config with `given` on top, for rerunning a run with changes (`jepa-lite train --config
        RUN --data ...`). A value a saved run took from its recipe, data set, model size or length is
        dropped when `given` changes that source, so the new one's value applies: a new recipe
        brings its own settings, a new data set its batch size and crops, a new model size its patch
        size, a new length replaces the old one, and warm-up steps replace a warm-up fraction.
        Everything else, and everything in `given`, is kept."""
        dropped = []
        if "recipe" in given and given["recipe"] != self.recipe:
            dropped += list(RECIPES[self.recipe])
        if "data" in given and given["data"] != self.data:
            dropped += list(data_defaults(self.data))
        if "model" in given and given["model"] != self.model:
            dropped.append("patch_size")
        lengths = ("steps", "epochs", "budget_minutes")
        if any(given.get(name) is not None for name in lengths):
            dropped += lengths
        if given.get("warmup_steps"):
            dropped.append("warmup_fraction")
        if given.get("warmup_fraction"):
            dropped.append("warmup_steps")
        values = {name: None for name in dropped if name not in given}
        return replace(self, **values, **given)

    @property
    def resolved(self) -> bool:
        return all(getattr(self, f.name) is not None for f in fields(self) if f.name in RECIPE_FIELDS)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """From a saved config (config.json's "train", a checkpoint's "train_config"); keys this
        version does not know are dropped, and a config saved before recipes existed is "fast"."""
        known = {f.name for f in fields(cls)}       # e.g. "workers" of runs saved when a run could start processes
        values = {k: (tuple(v) if isinstance(v, list) and k in ("crop_scale", "betas") else v)
                  for k, v in values.items() if k in known}
        if "lr" in values and values.get("recipe") == "paper":   # a resolved "paper" run saved before the
            for name in ("reference_masks", "reference_network"):  # reference's masks and network existed
                values.setdefault(name, False)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """The config of an earlier run: its config.json (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise BadValue(f"cannot read a run config from {path}: {error}") from None
        return cls.from_dict(saved.get("train", saved) if isinstance(saved, dict) else {})


RECIPE_FIELDS = tuple(PAPER) + ("batch_size", "patch_size")
