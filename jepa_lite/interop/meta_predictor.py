"""The predictors of Meta's released I-JEPA checkpoints (facebookresearch/ijepa's
VisionTransformerPredictor) as jepa_lite Predictors, and a checkpoint's three networks together, to
run the released context -> predictor -> target pipeline. The encoders and the helpers shared by
both are in jepa_lite.interop.meta.

    load_reference_predictor(path)            -> Predictor
    reference_predictor_config(state_dict)    -> (PredictorConfig, encoder_dim, grid_size)
    convert_reference_predictor_state_dict(state_dict) -> (PredictorConfig, state dict for Predictor)
    load_reference_models(path)               -> (context encoder, target encoder, predictor)

The reference predictor is jepa_lite's Predictor in its per-block mode (shared_context=False) with
the encoders' two differences (jepa_lite.interop.meta: LayerNorm eps 1e-6, the sin-cos halves swapped)
and its parameters renamed (predictor_embed -> embed, predictor_blocks -> blocks, predictor_norm ->
norm, predictor_proj -> proj; predictor_pos_embed is the pos_embed buffer). The released predictors
use their encoder's head count, which is how it is inferred.
Batch layout: the reference's predictor(z, [context_mask], target_masks) returns the T target
blocks block-major, [T * B, K_tgt, D]; jepa_lite's predictor(z, context_indices, target_indices
[B, T, K_tgt]) returns [B, T, K_tgt, D], i.e. out.transpose(0, 1).reshape(T * B, K_tgt, D).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from jepa_lite.core.models import Predictor, PredictorConfig, VisionTransformer
from jepa_lite.errors import BadValue
from jepa_lite.interop.meta import (
    REFERENCE_NORM_EPS,
    _block_keys,
    _check_keys,
    _heads_for,
    _instantiate,
    _mlp_ratio,
    _read_checkpoint,
    _select,
    _sincos_order,
    load_reference_checkpoint,
)

# reference name prefix -> jepa_lite Predictor's (mask_token keeps its name; predictor_pos_embed is the buffer)
_PREDICTOR_RENAMES = (("predictor_embed.", "embed."), ("predictor_blocks.", "blocks."),
                      ("predictor_norm.", "norm."), ("predictor_proj.", "proj."))


def reference_predictor_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None
                               ) -> tuple[PredictorConfig, int, tuple[int, int]]:
    """The PredictorConfig of a reference-format predictor state dict (no `module.` prefixes) and the
    encoder width and token grid it is built for (Predictor(config, encoder_dim, grid_size)), read
    from the tensor shapes. The head count is the encoder's (REFERENCE_NUM_HEADS of the encoder
    width, as the reference builds its predictors) unless given."""
    needed = ["predictor_embed.weight", "predictor_pos_embed", "predictor_blocks.0.mlp.fc1.weight"]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise BadValue(f"not a reference-format predictor state dict: missing keys {missing} "
                         f"(its first keys: {list(state_dict)[:8]})")
    width, encoder_dim = state_dict["predictor_embed.weight"].shape
    num_patches = state_dict["predictor_pos_embed"].shape[-2]
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise BadValue(f"predictor_pos_embed has {num_patches} positions, not a square grid")
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"predictor_blocks\.(\d+)\.", k)))
    config = PredictorConfig(embed_dim=width, depth=depth,
                             num_heads=_heads_for(encoder_dim, num_heads, "encoder width"),
                             mlp_ratio=_mlp_ratio(state_dict["predictor_blocks.0.mlp.fc1.weight"].shape[0], width),
                             shared_context=False, norm_eps=REFERENCE_NORM_EPS, pos_embed_order="col_row")
    return config, encoder_dim, (side, side)


def _convert_reference_predictor(checkpoint: Mapping, encoder_dim: int | None, grid_size: tuple[int, int] | None,
                                 num_heads: int | None):
    """-> (PredictorConfig, encoder_dim, grid_size, Predictor state dict, positional table [N, d]): the
    arguments of _build_predictor."""
    state_dict = _select(checkpoint, "predictor")
    config, found_dim, found_grid = reference_predictor_config(state_dict, num_heads)
    if encoder_dim is not None and encoder_dim != found_dim:
        raise BadValue(f"encoder_dim {encoder_dim} does not match the checkpoint's predictor, "
                         f"whose predictor_embed takes {found_dim}-wide encoder outputs")
    if grid_size is not None and tuple(grid_size) != found_grid:
        raise BadValue(f"grid_size {grid_size} does not match the checkpoint's predictor_pos_embed, "
                         f"a {found_grid[0]}x{found_grid[1]} grid")
    expected = (["predictor_embed.weight", "predictor_embed.bias", "mask_token", "predictor_pos_embed"]
                + _block_keys("predictor_blocks.", config.depth, qkv_bias=True)
                + ["predictor_norm.weight", "predictor_norm.bias", "predictor_proj.weight", "predictor_proj.bias"])
    _check_keys(state_dict, expected, "reference-format predictor")
    params = {}
    for key, value in state_dict.items():
        for old, new in _PREDICTOR_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        params[key] = value
    pos_embed = params.pop("predictor_pos_embed").reshape(-1, config.embed_dim)
    return config, found_dim, found_grid, params, pos_embed


def convert_reference_predictor_state_dict(state_dict: Mapping, encoder_dim: int | None = None,
                                           grid_size: tuple[int, int] | None = None, num_heads: int | None = None
                                           ) -> tuple[PredictorConfig, dict[str, torch.Tensor]]:
    """A reference checkpoint dict (with encoder/target_encoder/predictor) or its predictor's state
    dict, `module.` prefixes or not -> (PredictorConfig, state dict that Predictor(config, encoder_dim,
    grid_size) loads strictly). encoder_dim and grid_size, when given, are checked against the shapes
    (reference_predictor_config reads them); the fixed predictor_pos_embed is not a parameter of
    jepa_lite's Predictor: the config's pos_embed_order rebuilds the checkpoint's table
    (load_reference_predictor copies the table itself)."""
    config, found_dim, found_grid, params, pos_embed = _convert_reference_predictor(state_dict, encoder_dim,
                                                                                    grid_size, num_heads)
    config.pos_embed_order = _sincos_order(pos_embed, config.embed_dim, found_grid,
                                           "the checkpoint's predictor_pos_embed",
                                           "Predictor(config, ...) will use the sin-cos table instead")
    return config, params


def _build_predictor(config: PredictorConfig, encoder_dim: int, grid_size: tuple[int, int],
                     state_dict: dict[str, torch.Tensor], pos_embed: torch.Tensor) -> Predictor:
    """A Predictor holding these tensors and this positional table, in eval mode."""
    config.pos_embed_order = _sincos_order(
        pos_embed, config.embed_dim, grid_size, "the checkpoint's predictor_pos_embed",
        "it is copied into the predictor's pos_embed buffer, which its state_dict does not save: "
        "a Predictor rebuilt from the config alone will differ")
    predictor = _instantiate(lambda: Predictor(config, encoder_dim, grid_size), state_dict)
    predictor.pos_embed = pos_embed.detach().float().clone()
    return predictor.eval()


def load_reference_predictor(path_or_checkpoint: str | Path | Mapping, num_heads: int | None = None,
                             weights_only: bool = True) -> Predictor:
    """A released I-JEPA checkpoint file (see load_reference_checkpoint), the dict it holds, or its
    predictor's state dict -> the predictor as a jepa_lite Predictor (per-block mode) in eval mode on
    the CPU, with the checkpoint's positional table."""
    checkpoint = _read_checkpoint(path_or_checkpoint, weights_only)
    return _build_predictor(*_convert_reference_predictor(checkpoint, None, None, num_heads))


def load_reference_models(path_or_checkpoint: str | Path | Mapping, num_heads: int | None = None,
                          input_normalization: str = "imagenet", weights_only: bool = True
                          ) -> tuple[VisionTransformer, VisionTransformer, Predictor]:
    """A released I-JEPA checkpoint (file or dict) -> (context encoder, target encoder, predictor),
    all in eval mode on the CPU, for the pipeline the checkpoint was trained with:

        z = context_encoder(images, context_indices)                          # [B, K_ctx, D]
        predictions = predictor(z, context_indices, target_indices)           # [B, T, K_tgt, D]
        targets = gather_tokens(target_encoder(images), target_indices.flatten(1)).view(predictions.shape)

    (the reference's loss compares the predictions with the targets after F.layer_norm over D).
    num_heads (for a width not in REFERENCE_NUM_HEADS) applies to all three, as in the reference;
    input_normalization to both encoders (see load_reference_checkpoint)."""
    checkpoint = _read_checkpoint(path_or_checkpoint, weights_only)
    context_encoder, target_encoder = (
        load_reference_checkpoint(checkpoint, which, num_heads, input_normalization=input_normalization)
        for which in ("encoder", "target_encoder"))
    # checked against the context encoder: a predictor for other widths or grids is a clear error
    predictor = _build_predictor(*_convert_reference_predictor(checkpoint, context_encoder.embed_dim,
                                                               context_encoder.grid_size, num_heads))
    return context_encoder, target_encoder, predictor
