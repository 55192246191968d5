"""Checkpoints: written atomically, read safely (plain tensors and values only), and turned back
into a JEPA. A bad file is a CheckpointError: one line naming it."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from jepa_lite.core.cnn import CNNConfig
from jepa_lite.core.model_sizes import VIDEO_SIZES
from jepa_lite.core.models import PredictorConfig, ViTConfig
from jepa_lite.core.objective import JEPA
from jepa_lite.core.video import VideoConfig
from jepa_lite.engine.build import ENCODERS, build_jepa
from jepa_lite.errors import BadValue, CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_LIVE_NAME = "metrics.jsonl"      # appended as the run logs; metrics.json is written with each checkpoint
CHECKPOINT_FORMAT = "jepa_lite/1"


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
            raise BadValue(f"the model reconstructs pixels (objective {model.objective!r}) but the checkpoint "
                             f"has no pixel_head")
        load_state_dict_checked(model.pixel_head, checkpoint["pixel_head"], "pixel_head")


def encoder_config_from_checkpoint(checkpoint: dict) -> ViTConfig | CNNConfig | VideoConfig:
    """The encoder config of a checkpoint: a CNNConfig if it was trained with encoder="cnn", a
    VideoConfig if with a video model size (VIDEO_SIZES), else a ViTConfig (checkpoints written before
    the encoder option are ViTs)."""
    kind = checkpoint["train_config"].get("encoder", "vit")
    if checkpoint["train_config"].get("model") in VIDEO_SIZES:
        kind = "video"
    if kind not in ENCODERS:
        raise BadValue(f"checkpoint has unknown encoder {kind!r}; valid: {tuple(ENCODERS)}")
    return ENCODERS[kind][0](**checkpoint["encoder_config"])


def jepa_from_checkpoint(checkpoint: dict) -> JEPA:
    """Rebuild the JEPA (all three networks, and the pixel head of the pixel objectives) from a
    checkpoint dict. Checkpoints written before the objective option load as "jepa"."""
    saved = checkpoint["train_config"]
    model = build_jepa(encoder_config_from_checkpoint(checkpoint), PredictorConfig(**checkpoint["predictor_config"]),
                       target_mode=saved["target_mode"], loss=saved["loss"],
                       objective=saved.get("objective", "jepa"), pixel_weight=saved.get("pixel_weight", 1.0),
                       target_norm=saved.get("target_norm", "layer"),
                       sigreg_weight=saved.get("sigreg_weight", 0.02), sigreg_on=saved.get("sigreg_on", "pooled"))
    load_networks(model, checkpoint)
    return model
