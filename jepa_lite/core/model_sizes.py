"""The named model sizes: the course's trainable sizes (MODEL_SIZES) and the architectures of Meta's
released I-JEPA checkpoints (IJEPA_SIZES), as keyword arguments of jepa_lite.core.models' ViTConfig and
PredictorConfig; model_configs(name) builds both configs.

    model_configs("tiny")                      -> (ViTConfig, PredictorConfig)
    model_configs("micro", image_size=64)      -> the overrides apply to the encoder
    model_configs("video-tiny")                -> (video.VideoConfig, PredictorConfig): VIDEO_SIZES
"""
from __future__ import annotations

from jepa_lite.core.models import PredictorConfig, ViTConfig
from jepa_lite.core.video import VideoConfig
from jepa_lite.errors import BadValue

# Named sizes. "micro" exists for fast tests; "tiny"/"small" suit 32 px images with patch 4 (an 8x8 grid);
# "vit_s_96" and "vit_b_224" follow the usual ViT-S/ViT-B shapes for STL-10 (96 px) and ImageNet-size images.
MODEL_SIZES: dict[str, tuple[dict, dict]] = {
    "micro":     (dict(embed_dim=32, depth=2, num_heads=2), dict(embed_dim=16, depth=1, num_heads=2)),  # tests
    "tiny":      (dict(embed_dim=64, depth=4, num_heads=4), dict(embed_dim=32, depth=2, num_heads=4)),  # CPU default
    "small":     (dict(embed_dim=128, depth=4, num_heads=4), dict(embed_dim=64, depth=3, num_heads=4)),
    "base":      (dict(embed_dim=192, depth=6, num_heads=6), dict(embed_dim=96, depth=4, num_heads=6)),
    "vit_s_96":  (dict(image_size=96, patch_size=8, embed_dim=384, depth=12, num_heads=6),
                  dict(embed_dim=192, depth=6, num_heads=6)),
    "vit_b_224": (dict(image_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12),
                  dict(embed_dim=384, depth=6, num_heads=12)),
}

# The architectures of Meta's released I-JEPA checkpoints (facebookresearch/ijepa; Hugging Face
# facebook/ijepa_vith14_1k, ..._vith14_22k, ..._vith16_1k (448 px), ..._vitg16_22k), for loading them with
# jepa_lite.interop.meta. Kept out of MODEL_SIZES (the course's trainable sizes, which the notebooks tabulate and
# build); model_configs accepts both. Predictors: 384 wide, encoder's head count, depth from the configs, and
# the encoders' LayerNorm eps and sin-cos layout.
_REFERENCE = dict(norm_eps=1e-6, pos_embed_order="col_row")
IJEPA_SIZES: dict[str, tuple[dict, dict]] = {
    "vit_h14_224": (dict(image_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16, **_REFERENCE),
                    dict(embed_dim=384, depth=12, num_heads=16, **_REFERENCE)),  # IN-1K 300 ep and IN-22K 66 ep
    "vit_h16_448": (dict(image_size=448, patch_size=16, embed_dim=1280, depth=32, num_heads=16, **_REFERENCE),
                    dict(embed_dim=384, depth=12, num_heads=16, **_REFERENCE)),  # IN-1K 300 ep at 448 px
    "vit_g16_224": (dict(image_size=224, patch_size=16, embed_dim=1408, depth=40, num_heads=16,
                         mlp_ratio=48 / 11, **_REFERENCE),              # MLP hidden 6144
                    dict(embed_dim=384, depth=16, num_heads=16, **_REFERENCE)),  # IN-22K 44 ep
}

# Sizes for clips (video.VideoConfig, trained on --data moving-shapes): the widths of "tiny" and "micro",
# tubelets of 2 frames x 8 x 8 pixels, so 8 frames of 32 px are 4 x 4 x 4 = 64 tokens. Kept out of
# MODEL_SIZES (the image sizes the notebooks tabulate); model_configs accepts them.
_CLIPS = dict(frames=8, tubelet=2, patch_size=8)
VIDEO_SIZES: dict[str, tuple[dict, dict]] = {
    "video-micro": (dict(embed_dim=32, depth=2, num_heads=2, **_CLIPS), dict(embed_dim=16, depth=1, num_heads=2)),
    "video-tiny":  (dict(embed_dim=64, depth=4, num_heads=4, **_CLIPS), dict(embed_dim=32, depth=2, num_heads=4)),
}


def all_sizes() -> dict[str, tuple[dict, dict]]:
    """Every named size model_configs accepts: image, released I-JEPA and video sizes."""
    return {**MODEL_SIZES, **IJEPA_SIZES, **VIDEO_SIZES}


def unknown_size(name: str) -> BadValue:
    return BadValue(f"unknown model size {name!r}; valid: {sorted(MODEL_SIZES)}, the video sizes "
                    f"{sorted(VIDEO_SIZES)} and the released I-JEPA sizes {sorted(IJEPA_SIZES)}")


def model_configs(name: str, **overrides) -> tuple[ViTConfig | VideoConfig, PredictorConfig]:
    """Encoder and predictor configs for a named size; `overrides` apply to the encoder
    (e.g. image_size=64). A video size's encoder config is a VideoConfig. Raises ValueError for an
    unknown name."""
    sizes = all_sizes()
    if name not in sizes:
        raise unknown_size(name)
    encoder_kwargs, predictor_kwargs = sizes[name]
    config_class = VideoConfig if name in VIDEO_SIZES else ViTConfig
    return config_class(**{**encoder_kwargs, **overrides}), PredictorConfig(**predictor_kwargs)
