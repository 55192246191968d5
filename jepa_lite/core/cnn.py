"""A small convolutional encoder that keeps the encoder contract of models.py, so the same
training engine, objective and probes work with it (TrainConfig(encoder="cnn"), notebook 08).

    images [B, C, H, W] --stem + strided conv stages--> feature map [B, D, rows, cols]
        --flatten row-major--> tokens [B, N, D] (+ the ViT's fixed 2-D sin-cos positions) --LN-->

The total stride of the stages equals `patch_size`, so token n covers the same p x p patch as
the ViT's token n and the mask samplers, predictor and probes need no change.

Positions. Like the ViT's tokens, the output tokens get the fixed 2-D sin-cos table, so token n
carries where it is. A CNN with zero padding already knows roughly where it is and the predictor
adds its own positions, so the table is optional (pos_embed=False); with and without it the
probes differed by no more than their noise (docs/results.md, "What else was tried on shapes").

Masking. A ViT encodes only the tokens it is given; a CNN cannot skip regions cheaply (each
output needs its whole receptive field), so it computes all N tokens and gathers the asked
ones. Gathering alone is not enough: a context token's receptive field reaches into the
neighbouring target patches, and their pixels would leak into the context ("predict the
target from a context that has already seen it"). With `mask_input` (the default) the pixels of
every patch NOT in `token_indices` are set to 0 (the data set mean after normalisation) before
the first convolution, so the returned tokens depend on the given patches' pixels only. Only
the layout of the zeros is visible, i.e. where the hidden patches are, which the predictor is
told anyway. The full-image pass (token_indices=None: target encoder, probes) sees everything.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.core.models import check_patch_grid, gather_tokens, sincos_pos_embed_2d
from jepa_lite.errors import BadValue


@dataclass
class CNNConfig:
    image_size: int = 32
    patch_size: int = 4             # total stride: one token per patch_size x patch_size cell
    in_channels: int = 3
    embed_dim: int = 64             # D, the token width (as the ViT's embed_dim)
    width: int = 32                 # channels of the stem; each stride-2 stage doubles it (at most D)
    blocks_per_stage: int = 1       # residual 3x3 blocks after each downsampling conv
    mask_input: bool = True         # zero the pixels of patches outside token_indices (see the docstring)
    pos_embed: bool = True          # add the 2-D sin-cos table to the output tokens (see the docstring)

    def __post_init__(self) -> None:
        check_patch_grid(self.image_size, self.patch_size)
        if self.pos_embed and self.embed_dim % 4 != 0:
            raise BadValue(f"embed_dim must be divisible by 4 for 2-D sin-cos positions, got {self.embed_dim}")
        if self.width < 1 or self.blocks_per_stage < 0:
            raise BadValue(f"width must be >= 1 and blocks_per_stage >= 0, got {self.width}, {self.blocks_per_stage}")

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return (side, side)

    @property
    def strides(self) -> list[int]:
        """The stages' strides, their product = patch_size: 2s first, then the odd rest (4 -> [2, 2], 6 -> [2, 3])."""
        strides, rest = [], self.patch_size
        while rest % 2 == 0:
            strides.append(2)
            rest //= 2
        return strides + ([rest] if rest > 1 else [])


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of a [B, C, H, W] map. Per position, so
    (unlike BatchNorm or GroupNorm) no statistic mixes pixels of different patches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ResidualBlock(nn.Module):
    """x + conv3x3(gelu(norm(conv3x3(x)))), shape-preserving."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = LayerNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.norm(self.conv1(x))))


def input_mask(token_indices: torch.Tensor, grid_size: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """token_indices: [B, K] -> [B, 1, H, W] float, 1 on the pixels of the given patches, 0 elsewhere."""
    rows, cols = grid_size
    keep = torch.zeros(token_indices.shape[0], rows * cols, device=token_indices.device)
    keep.scatter_(1, token_indices, 1.0)
    keep = keep.view(-1, 1, rows, cols)
    return keep.repeat_interleave(image_hw[0] // rows, dim=2).repeat_interleave(image_hw[1] // cols, dim=3)


class ConvEncoder(nn.Module):
    """A small CNN with the encoder contract: forward(images, token_indices=None) -> [B, K or N, D],
    `embed_dim`, `grid_size`. All N tokens are computed; with token_indices the input pixels of
    the other patches are zeroed first (mask_input) and the asked tokens gathered."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.grid_size = config.grid_size
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.mask_input = config.mask_input
        width = config.width
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, width, 3, padding=1), LayerNorm2d(width), nn.GELU())
        stages = []
        for stride in config.strides:
            out = min(2 * width, config.embed_dim) if stride == 2 else width
            # kernel = stride (as ConvNeXt downsamples): output cell i reads exactly input cells
            # i*s .. i*s+s-1, so token n's receptive field stays centred on patch n
            stages.append(nn.Sequential(nn.Conv2d(width, out, stride, stride=stride),
                                        LayerNorm2d(out), nn.GELU(),
                                        *[ResidualBlock(out) for _ in range(config.blocks_per_stage)]))
            width = out
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Conv2d(width, config.embed_dim, 1)                     # 1x1: channels -> D
        if config.pos_embed:
            self.register_buffer("pos_embed", sincos_pos_embed_2d(config.embed_dim, self.grid_size),
                                 persistent=False)
        self.norm = nn.LayerNorm(config.embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, ResidualBlock):        # residual branches start small: blocks start near identity
                m.conv2.weight.data.mul_(0.1)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, C, H, W] -> [B, D, rows, cols] (no masking)."""
        if images.shape[-2:] != (self.config.image_size, self.config.image_size):
            raise BadValue(f"expected {self.config.image_size}x{self.config.image_size} images, "
                             f"got {tuple(images.shape[-2:])}")
        return self.proj(self.stages(self.stem(images)))

    def forward(self, images: torch.Tensor, token_indices: torch.Tensor | None = None) -> torch.Tensor:
        """images: [B, C, H, W], token_indices: [B, K] or None -> [B, K or N, D]."""
        if token_indices is not None and self.mask_input:
            # hide the other patches' pixels: their content cannot reach the returned tokens
            images = images * input_mask(token_indices, self.grid_size, images.shape[-2:]).to(images.dtype)
        tokens = self.feature_map(images).flatten(2).transpose(1, 2)                     # [B, N, D]
        if self.config.pos_embed:
            tokens = tokens + self.pos_embed
        tokens = self.norm(tokens)
        return tokens if token_indices is None else gather_tokens(tokens, token_indices)


def cnn_config_from_size(embed_dim: int, image_size: int, patch_size: int, **overrides) -> CNNConfig:
    """The CNN of a named model size: the ViT's token width D, stem width D / 4 (then D / 2, D, D, ...):
    about the compute of the ViT of that size on the same grid."""
    return CNNConfig(**{**dict(image_size=image_size, patch_size=patch_size, embed_dim=embed_dim,
                               width=max(embed_dim // 4, 8)), **overrides})

