"""Meta's released I-JEPA encoders as jepa_lite VisionTransformers, to probe and visualise them
with the course's tools (jepa_lite.evaluation.probes); the checkpoints' predictors, for the released
context -> predictor -> target pipeline, are in jepa_lite.interop.meta_predictor.

Two sources of the same weights:
    reference checkpoints (facebookresearch/ijepa, e.g. IN1K-vit.h.14-300e.pth.tar): a dict with
        keys encoder, target_encoder, predictor, opt, ...; parameter names may carry `module.`
    Hugging Face transformers IJepaModel (facebook/ijepa_vith14_1k, ...): separate q/k/v
        projections, names of transformers 5 (layers.N...) or 4 (encoder.layer.N...). transformers'
        conversion script took the checkpoints' "encoder" (the context encoder), not the
        target_encoder the paper evaluates: load_reference_checkpoint(which="encoder") matches them.

    load_reference_checkpoint(path)           -> VisionTransformer   (target encoder by default)
    convert_reference_state_dict(state_dict)  -> (ViTConfig, state dict for VisionTransformer)
    jepa_lite.interop.meta_predictor: load_reference_predictor, load_reference_models, ...   (the predictors)
    jepa_lite.interop.huggingface: convert_hf_ijepa, from_pretrained_hf   (the Hugging Face weights)

Architecture: the reference ViT is the course's ViT (pre-norm blocks, fused qkv with bias,
exact GELU, MLP 4x except ViT-g's 48/11, final LayerNorm, no [CLS]) with two differences that
the converted config records: LayerNorm eps 1e-6 (norm_eps; the course uses PyTorch's 1e-5)
and the 2-D sin-cos table with its halves swapped (pos_embed_order="col_row": the reference
builds its grid with np.meshgrid(w, h), so the first half of the channels encodes the column).
The checkpoint's own table is copied into the encoder's pos_embed buffer, so the outputs match
the source exactly; the buffer is not in the state dict, and a rebuild from the config
recomputes the same sin-cos table (a warning says when the checkpoint's table is something else).

Inputs: the released encoders were trained on ImageNet-normalised pixels (mean 0.485/0.456/0.406,
std 0.229/0.224/0.225; the reference's transforms); jepa_lite.data.datasets.normalize gives (x - 0.5) / 0.25.
input_normalization="jepa_lite" folds the difference into the patch embedding, so that
extract_features (which calls normalize) can feed the encoder directly.
"""
from __future__ import annotations

import contextlib
import math
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from jepa_lite.core.models import POS_EMBED_ORDERS, VisionTransformer, ViTConfig, sincos_pos_embed_2d
from jepa_lite.data.datasets import NORM_MEAN, NORM_STD
from jepa_lite.errors import BadValue

# heads of the reference code's ViT sizes (tiny ... giant), keyed by width: shapes cannot tell the head count
REFERENCE_NUM_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
REFERENCE_NORM_EPS = 1e-6
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMALIZATIONS = ("imagenet", "jepa_lite")
_CHECKPOINT_PARTS = ("encoder", "target_encoder", "predictor")
# Networks at least this large are built on the meta device (no random init: ViT-H would spend ~30 s
# on the CPU initialising weights that are then overwritten); smaller ones are built as usual.
_META_MIN_PARAMS = 20_000_000
# a checkpoint's positional table further than this from both sin-cos layouts is something else
_SINCOS_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# shared helpers

def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a leading `prefix` (repeatedly: DDP inside DDP) from every key that has it."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(prefix):
            key = key[len(prefix):]
        out[key] = value
    return out


def _mlp_ratio(hidden: int, dim: int) -> float:
    """A float r with int(dim * r) == hidden (what Block computes), e.g. 6144 / 1408 for ViT-g."""
    ratio = hidden / dim
    for _ in range(4):
        if int(dim * ratio) == hidden:
            return ratio
        ratio = math.nextafter(ratio, math.inf)
    raise BadValue(f"no mlp_ratio gives an MLP hidden size of {hidden} for width {dim}")


def _heads_for(width: int, num_heads: int | None, what: str = "width") -> int:
    if num_heads is not None:
        return num_heads
    if width not in REFERENCE_NUM_HEADS:
        raise BadValue(f"cannot infer the number of heads for {what} {width}: the shapes do not determine it; "
                         f"known widths of the reference sizes: {sorted(REFERENCE_NUM_HEADS)} "
                         f"({REFERENCE_NUM_HEADS}); pass num_heads=...")
    return REFERENCE_NUM_HEADS[width]


def _check_keys(state_dict: Mapping[str, torch.Tensor], expected: list[str], what: str) -> None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise BadValue(f"not a {what} state dict: missing keys {missing}"
                         + (f"; unexpected keys {unexpected}" if unexpected else ""))


def _block_keys(prefix: str, depth: int, qkv_bias: bool) -> list[str]:
    """The parameter names of `depth` transformer blocks named prefix0., prefix1., ... (the
    reference's Block and jepa_lite's have the same inner names)."""
    keys = []
    for i in range(depth):
        b = f"{prefix}{i}."
        keys += [b + "norm1.weight", b + "norm1.bias", b + "attn.qkv.weight"]
        keys += [b + "attn.qkv.bias"] if qkv_bias else []
        keys += [b + "attn.proj.weight", b + "attn.proj.bias", b + "norm2.weight", b + "norm2.bias",
                 b + "mlp.fc1.weight", b + "mlp.fc1.bias", b + "mlp.fc2.weight", b + "mlp.fc2.bias"]
    return keys


def _vit_keys(depth: int, qkv_bias: bool) -> list[str]:
    """The parameter names of jepa_lite's VisionTransformer (identical to the reference's)."""
    return (["patch_embed.proj.weight", "patch_embed.proj.bias"] + _block_keys("blocks.", depth, qkv_bias)
            + ["norm.weight", "norm.bias"])


def _sincos_order(table: torch.Tensor, embed_dim: int, grid_size: tuple[int, int], what: str,
                  consequence: str) -> str:
    """The sin-cos layout (POS_EMBED_ORDERS) that `table` [N, D] is. For a table that is neither
    (interpolated, learned): the reference layout, and a warning that names the table (`what`) and
    the `consequence`."""
    table = table.detach().float().cpu().reshape(-1, embed_dim)
    errors = {order: (table - sincos_pos_embed_2d(embed_dim, grid_size, order)).abs().max().item()
              for order in POS_EMBED_ORDERS}
    order = min(errors, key=errors.get)
    if errors[order] <= _SINCOS_TOLERANCE:
        return order
    _warn_caller(f"{what} is not a fixed 2-D sin-cos table (max deviation {errors['col_row']:.3g}); {consequence}")
    return "col_row"


def _warn_caller(message: str) -> None:
    """A UserWarning attributed to the first caller outside the converters: this module, convert_hf and
    convert_predictor, every module whose name starts with this one's (the public functions call each
    other, so no fixed stacklevel fits them all)."""
    frame, stacklevel = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(__name__):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, stacklevel=stacklevel)


def _instantiate(build, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """build() holding these tensors as its parameters (assigned, not copied; large networks skip the
    random init by being built on the meta device)."""
    large = sum(v.numel() for v in state_dict.values()) >= _META_MIN_PARAMS
    with torch.device("meta") if large else contextlib.nullcontext():
        module = build()
    module.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True, assign=True)
    return module


def _build(config: ViTConfig, state_dict: dict[str, torch.Tensor], pos_embed: torch.Tensor,
           input_normalization: str, source: str) -> VisionTransformer:
    """A VisionTransformer holding these tensors and this positional table, in eval mode."""
    if input_normalization not in INPUT_NORMALIZATIONS:
        raise BadValue(f"input_normalization must be one of {INPUT_NORMALIZATIONS}, got {input_normalization!r}")
    config.pos_embed_order = _sincos_order(
        pos_embed, config.embed_dim, config.grid_size, f"the {source} positional table",
        "it is copied into the encoder's pos_embed buffer, which its state_dict does not save: "
        "a VisionTransformer rebuilt from the config alone will differ")
    encoder = _instantiate(lambda: VisionTransformer(config), state_dict)
    encoder.pos_embed = pos_embed.detach().float().reshape(-1, config.embed_dim).clone()
    if input_normalization == "jepa_lite":
        fold_input_normalization(encoder, IMAGENET_MEAN, IMAGENET_STD, NORM_MEAN, NORM_STD)
    return encoder.eval()


@torch.no_grad()
def fold_input_normalization(encoder: VisionTransformer, expected_mean, expected_std, given_mean=NORM_MEAN,
                             given_std=NORM_STD) -> VisionTransformer:
    """Make an encoder trained on inputs normalised with (expected_mean, expected_std) take inputs
    normalised with (given_mean, given_std) instead, by folding the per-channel affine map between
    the two into the patch-embedding convolution (exact up to float rounding; no extra op).
    Defaults of given_*: jepa_lite.data.datasets.normalize."""
    proj = encoder.patch_embed.proj
    expected_mean, expected_std, given_mean, given_std = (
        torch.tensor(v, dtype=torch.float64, device=proj.weight.device)
        for v in (expected_mean, expected_std, given_mean, given_std))
    # x_expected = (x_given * given_std + given_mean - expected_mean) / expected_std = scale * x_given + shift
    scale = given_std / expected_std
    shift = (given_mean - expected_mean) / expected_std
    weight = proj.weight.double()                                         # [D, C, p, p]
    bias = proj.bias.double() + (weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    proj.weight = nn.Parameter((weight * scale.view(1, -1, 1, 1)).to(proj.weight.dtype))
    proj.bias = nn.Parameter(bias.to(proj.bias.dtype))
    return encoder


# ---------------------------------------------------------------------------------------------
# reference checkpoints (facebookresearch/ijepa)

def _select(checkpoint: Mapping, part: str) -> dict[str, torch.Tensor]:
    """The `part` (one of _CHECKPOINT_PARTS) of a whole checkpoint, or `checkpoint` itself when it is
    already one network's state dict; without `module.` prefixes."""
    if any(name in checkpoint for name in _CHECKPOINT_PARTS):
        if part not in checkpoint:
            raise BadValue(f"the checkpoint has no {part!r}; its keys: {sorted(checkpoint)}")
        checkpoint = checkpoint[part]
    return strip_prefix(checkpoint)


def _select_encoder(checkpoint: Mapping, which: str) -> dict[str, torch.Tensor]:
    if which not in ("encoder", "target_encoder"):
        raise BadValue(f"which must be 'encoder' or 'target_encoder', got {which!r}")
    return _select(checkpoint, which)


def reference_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None,
                     norm_eps: float = REFERENCE_NORM_EPS) -> ViTConfig:
    """The ViTConfig of a reference-format encoder state dict (no `module.` prefixes), read from
    the tensor shapes; the head count comes from REFERENCE_NUM_HEADS unless given."""
    needed = ["patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise BadValue(f"not a reference-format encoder state dict: missing keys {missing} "
                         f"(its first keys: {list(state_dict)[:8]})")
    width, channels, patch, patch_w = state_dict["patch_embed.proj.weight"].shape
    if patch != patch_w:
        raise BadValue(f"non-square patches {patch}x{patch_w} are not supported")
    num_patches = state_dict["pos_embed"].shape[-2]
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise BadValue(f"pos_embed has {num_patches} positions, not a square grid")
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    return ViTConfig(image_size=side * patch, patch_size=patch, in_channels=channels, embed_dim=width, depth=depth,
                     num_heads=_heads_for(width, num_heads),
                     mlp_ratio=_mlp_ratio(state_dict["blocks.0.mlp.fc1.weight"].shape[0], width),
                     qkv_bias="blocks.0.attn.qkv.bias" in state_dict, norm_eps=norm_eps,
                     pos_embed_order="col_row")


def _convert_reference(checkpoint: Mapping, which: str, num_heads: int | None, norm_eps: float):
    state_dict = _select_encoder(checkpoint, which)
    config = reference_config(state_dict, num_heads, norm_eps)
    _check_keys(state_dict, _vit_keys(config.depth, config.qkv_bias) + ["pos_embed"], "reference-format encoder")
    pos_embed = state_dict["pos_embed"].reshape(-1, config.embed_dim)
    return config, {k: v for k, v in state_dict.items() if k != "pos_embed"}, pos_embed


def convert_reference_state_dict(state_dict: Mapping, which: str = "target_encoder", num_heads: int | None = None,
                                 norm_eps: float = REFERENCE_NORM_EPS) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """A reference checkpoint dict (with encoder/target_encoder/predictor) or one encoder's state
    dict, `module.` prefixes or not -> (ViTConfig, state dict that VisionTransformer(config)
    loads strictly). The parameter names are the same in both codes; the fixed pos_embed is not a
    parameter of jepa_lite's encoder: the config's pos_embed_order rebuilds the checkpoint's table
    (load_reference_checkpoint copies the table itself)."""
    config, params, pos_embed = _convert_reference(state_dict, which, num_heads, norm_eps)
    config.pos_embed_order = _sincos_order(pos_embed, config.embed_dim, config.grid_size, "the checkpoint's pos_embed",
                                           "VisionTransformer(config) will use the sin-cos table instead")
    return config, params


def _torch_load(path: str | Path, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)   # an old (non-zip) file


def _read_checkpoint(path_or_checkpoint: str | Path | Mapping, weights_only: bool) -> Mapping:
    """A checkpoint dict as given, or read from its file (memory-mapped, on the CPU)."""
    if isinstance(path_or_checkpoint, Mapping):
        return path_or_checkpoint
    try:
        return _torch_load(path_or_checkpoint, weights_only)
    except pickle.UnpicklingError as error:
        raise BadValue(f"{path_or_checkpoint}: torch.load(weights_only=True) refused it ({error}); if you trust "
                         f"the file, pass weights_only=False") from error


def load_reference_checkpoint(path: str | Path | Mapping, which: str = "target_encoder", num_heads: int | None = None,
                              norm_eps: float = REFERENCE_NORM_EPS, input_normalization: str = "imagenet",
                              weights_only: bool = True) -> VisionTransformer:
    """A released I-JEPA checkpoint file (e.g. IN1K-vit.h.14-300e.pth.tar) or the dict it holds -> its
    target encoder (which="encoder": the context encoder) as a jepa_lite VisionTransformer in eval mode
    on the CPU. The file is memory-mapped and read with weights_only=True (no arbitrary unpickling);
    pass weights_only=False only for a file you trust that needs it."""
    config, params, pos_embed = _convert_reference(_read_checkpoint(path, weights_only), which, num_heads, norm_eps)
    return _build(config, params, pos_embed, input_normalization, "checkpoint's")
