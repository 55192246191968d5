"""Building a run's networks from its config: the encoder registry, the JEPA module, the mask config
and AdamW's parameter groups."""
from __future__ import annotations

from dataclasses import asdict, fields, replace

import torch.nn as nn

from jepa_lite.core.cnn import CNNConfig, ConvEncoder, cnn_config_from_size
from jepa_lite.core.masks import MaskConfig, default_mask_config, reference_mask_config
from jepa_lite.core.model_sizes import model_configs
from jepa_lite.core.models import REFERENCE_NETWORK, Predictor, PredictorConfig, VisionTransformer, ViTConfig
from jepa_lite.core.objective import JEPA
from jepa_lite.core.video import VideoConfig, VideoPredictor, VideoTransformer
from jepa_lite.engine.config import TrainConfig
from jepa_lite.errors import BadValue

# Encoder architectures the engine can build: name -> (config class, module class). Any module
# keeping the encoder contract (models.py docstring) can be added here. "video" is the ViT on clips
# (TrainConfig's encoder "vit" with a video model size).
ENCODERS: dict[str, tuple[type, type]] = {
    "vit": (ViTConfig, VisionTransformer),
    "cnn": (CNNConfig, ConvEncoder),
    "video": (VideoConfig, VideoTransformer),
}


def encoder_kind(encoder_config) -> str:
    """The ENCODERS name of an encoder config ("vit" for a ViTConfig, "cnn" for a CNNConfig)."""
    for name, (config_class, _) in ENCODERS.items():
        if isinstance(encoder_config, config_class):
            return name
    raise BadValue(f"no encoder for a {type(encoder_config).__name__}; valid configs: "
                     f"{[c.__name__ for c, _ in ENCODERS.values()]}")

# The course's masks on frame-grids below 6x6 (video sizes: 32 px with patch 8 is 4x4), where
# default_mask_config's 4 targets of 10-20% find no valid block: 2 targets of 15-30% (2-5 cells each), so
# a clip's context keeps about half of each frame-grid.
SMALL_GRID_MASKS = dict(num_targets=2, target_scale=(0.15, 0.3), min_keep=2)


def build_encoder(encoder_config) -> nn.Module:
    """A ViTConfig -> VisionTransformer, a CNNConfig -> ConvEncoder, a VideoConfig -> VideoTransformer
    (see ENCODERS)."""
    return ENCODERS[encoder_kind(encoder_config)][1](encoder_config)


def build_jepa(encoder_config: ViTConfig | CNNConfig | VideoConfig, predictor_config: PredictorConfig,
               target_mode: str = "ema", loss: str = "smooth_l1", objective: str = "jepa", pixel_weight: float = 1.0,
               target_norm: str = "instance", sigreg_weight: float = 0.02, sigreg_on: str = "pooled") -> JEPA:
    encoder = build_encoder(encoder_config)
    predictor_class = VideoPredictor if isinstance(encoder_config, VideoConfig) else Predictor
    predictor = predictor_class(predictor_config, encoder.embed_dim, encoder.grid_size)
    patch_dim = encoder_config.in_channels * encoder_config.patch_size ** 2
    return JEPA(encoder, predictor, target_mode=target_mode, loss=loss, objective=objective,
                patch_dim=patch_dim, pixel_weight=pixel_weight, target_norm=target_norm,
                sigreg_weight=sigreg_weight, sigreg_on=sigreg_on)


def configs_for(config: TrainConfig, image_size: int
                ) -> tuple[ViTConfig | CNNConfig | VideoConfig, PredictorConfig, MaskConfig]:
    """The encoder, predictor and mask configs of a run. encoder="cnn" takes the token width D of
    the named model size (and its predictor) and builds cnn.CNNConfig with the same patch grid.
    A video size gives a VideoConfig, and the mask config is on its frame-grid (H', W') (for video.VideoMaskSampler).
    reference_network: the reference's LayerNorm eps and sin-cos layout for the encoder and the predictor,
    and for a ViT its patch init and input normalisation (models.REFERENCE_NETWORK); reference_masks: the
    reference's mask setting (masks.reference_mask_config), else the course's by grid (default_mask_config)."""
    config = config.resolve()
    encoder_config, predictor_config = model_configs(config.model, image_size=image_size,
                                                     patch_size=config.patch_size,
                                                     drop_path=config.drop_path)
    if config.encoder == "cnn":
        encoder_config = cnn_config_from_size(encoder_config.embed_dim, image_size, config.patch_size)
    predictor_config = replace(predictor_config, shared_context=config.shared_context)
    if config.reference_network:
        predictor_config = replace(predictor_config, norm_eps=REFERENCE_NETWORK["norm_eps"],
                                   pos_embed_order=REFERENCE_NETWORK["pos_embed_order"])
        if config.encoder == "vit":      # a VideoConfig takes the settings it has (its LayerNorm eps)
            own = {f.name for f in fields(encoder_config)}
            encoder_config = replace(encoder_config, **{k: v for k, v in REFERENCE_NETWORK.items() if k in own})
    masks_for = reference_mask_config if config.reference_masks else default_mask_config
    grid = tuple(encoder_config.grid_size[-2:])              # a clip's masks: its frame-grid (H', W')
    small = SMALL_GRID_MASKS if min(grid) < 6 and not config.reference_masks else {}
    mask_config = masks_for(grid, floor_tokens=config.floor_mask_tokens, **small)
    overrides = dict(config.mask)
    unknown = set(overrides) - {f.name for f in fields(MaskConfig)}
    if unknown:
        raise BadValue(f"unknown mask options {sorted(unknown)}; valid: {[f.name for f in fields(MaskConfig)]}")
    mask_config = MaskConfig(**{**asdict(mask_config), **overrides})
    return encoder_config, predictor_config, mask_config


def param_groups(model: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on matrices only, none on biases and 1-D (norm) parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]
