"""The pieces of V-JEPA (Bardes et al. 2024), each the image piece of models.py / masks.py with time added
(notebook 11):

    clips [B, T, C, H, W] --tubelet embed--> tokens [B, N, D], N = T' * H' * W'  (T' = T / tubelet)
                                             + fixed 3-D sin-cos positions (time, row, column)
    VideoTransformer   the ViT encoder on those tokens, same encoder contract as models.py
    VideoPredictor     the image Predictor with the 3-D positions
    VideoMaskSampler   the image multi-block masks, each spatial block repeated through all T' time steps

Token n is the cell (t, row, col) = (n // (H' W'), (n // W') % H', n % W') of the grid, row-major: the T'
frame-grids one after another. So the token indices of a clip are the row-major indices of a 2-D grid of
T' * H' rows and W' columns (the frame-grids stacked vertically), and the masks are the image code's
`Masks` with grid_size (T' * H', W'): core/objective.py's JEPA trains a VideoTransformer unchanged.

Clips are held as the data sets hold them, frames first: [B, T, C, H, W] (data/moving_shapes.py); the
tubelet convolution moves the channels in front of time itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from jepa_lite.core.masks import MaskConfig, Masks, MaskSampler
from jepa_lite.core.models import (
    Block,
    Predictor,
    PredictorConfig,
    TokenEncoder,
    check_patch_grid,
    gather_tokens,
    init_weights,
    sincos_pos_embed_1d,
    sincos_pos_embed_2d,
)
from jepa_lite.errors import BadValue

# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class VideoConfig:
    """A ViT on clips: tubelets of `tubelet` frames x patch_size x patch_size pixels."""
    frames: int = 8
    tubelet: int = 2
    image_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    qkv_bias: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_patch_grid(self.image_size, self.patch_size)
        if self.tubelet < 1 or self.frames < 1 or self.frames % self.tubelet != 0:
            raise BadValue(f"frames ({self.frames}) must be a positive multiple of tubelet ({self.tubelet}); "
                           f"valid tubelets for {self.frames} frames: "
                           f"{[t for t in range(1, self.frames + 1) if self.frames % t == 0]}")
        if self.embed_dim % self.num_heads != 0:
            raise BadValue(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.embed_dim % 2 != 0 or self.embed_dim < 6:
            raise BadValue(f"3-D sin-cos positions need an even embed_dim >= 6, got {self.embed_dim}")
        if self.depth < 1:
            raise BadValue(f"depth must be >= 1, got {self.depth}")
        if not 0.0 <= self.drop_path < 1.0:
            raise BadValue(f"drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(T', H', W'): time steps, rows, columns of the token grid."""
        side = self.image_size // self.patch_size
        return (self.frames // self.tubelet, side, side)


# ---------------------------------------------------------------------------------------------
# positions and tubelets

def sincos_split(dim: int) -> tuple[int, int]:
    """(time channels, channels per spatial axis) of a 3-D sin-cos table of width dim: each spatial axis
    gets the even number 2 * (dim // 6), time the rest (dim 192: 64 / 64 / 64; 128: 44 / 42 / 42)."""
    if dim % 2 != 0 or dim < 6:
        raise BadValue(f"3-D sin-cos embedding dim must be even and >= 6, got {dim}")
    space = 2 * (dim // 6)
    return dim - 2 * space, space


def sincos_pos_embed_3d(dim: int, grid_size: tuple[int, int, int]) -> torch.Tensor:
    """Fixed 3-D sin-cos positional embedding, [T' * H' * W', dim], row-major over (time, row, column).

    The channels are [time | row | column] (sincos_split gives the widths), each block the 1-D table of
    models.sincos_pos_embed_1d. The row and column blocks together are exactly the image's 2-D table:
        table.view(T', H' * W', dim)[t, :, time:] == sincos_pos_embed_2d(dim - time, (H', W'))
    for every t, and the time block is the same for every cell of a time step; at t = 0 it is
    sin(0) = 0 in its first half and cos(0) = 1 in its second."""
    T, H, W = grid_size
    time, _ = sincos_split(dim)
    t_ids = torch.arange(T).repeat_interleave(H * W)                              # [N]: 0,..,0,1,..
    space = sincos_pos_embed_2d(dim - time, (H, W))                               # [H * W, 2 * space]
    return torch.cat([sincos_pos_embed_1d(time, t_ids), space.repeat(T, 1)], dim=1)


class TubeletEmbed(nn.Module):
    """Cut the clip into non-overlapping tubelets (tubelet frames x p x p pixels) and project each to D
    channels. clips [B, T, C, H, W] -> tokens [B, N, D], N = (T/t) * (H/p) * (W/p), row-major over
    (time, row, column). A strided Conv3d is a linear map of each flattened tubelet, as PatchEmbed's
    Conv2d is of each patch; with tubelet 1 it is PatchEmbed applied to every frame."""

    def __init__(self, tubelet: int, patch_size: int, in_channels: int, embed_dim: int):
        super().__init__()
        size = (tubelet, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=size, stride=size)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        # [B, T, C, H, W] -> [B, C, T, H, W] (Conv3d's layout) -> [B, D, T', H', W'] -> [B, N, D]
        return self.proj(clips.transpose(1, 2)).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# encoder and predictor

class VideoTransformer(TokenEncoder):
    """The ViT of models.py on clips: tubelet tokens + 3-D positions, the same blocks. Keeps the encoder
    contract (models.py) with clips for images:
        encoder(clips [B, T, C, H, W], token_indices [B, K] | None) -> [B, K or N, D]
        encoder.embed_dim, encoder.grid_size = (T', H', W'), encoder.num_patches = T' * H' * W'
    and layer_outputs(clips) for probes that read several blocks."""

    def __init__(self, config: VideoConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.grid_size = config.grid_size
        self.num_patches = math.prod(self.grid_size)
        self.patch_embed = TubeletEmbed(config.tubelet, config.patch_size, config.in_channels, config.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed_3d(config.embed_dim, self.grid_size), persistent=False)
        rates = torch.linspace(0, config.drop_path, config.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(config.embed_dim, config.num_heads, config.mlp_ratio, rate,
                                          config.qkv_bias, config.norm_eps) for rate in rates)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        init_weights(self, self.blocks)
        # as VisionTransformer's patch_init "fan_in": content and position of comparable size
        fan_in = config.in_channels * config.tubelet * config.patch_size ** 2
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=1.0 / math.sqrt(fan_in))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def embed(self, clips: torch.Tensor, token_indices: torch.Tensor | None = None) -> torch.Tensor:
        """clips [B, T, C, H, W] -> positioned tokens [B, K or N, D]."""
        c = self.config
        expected = (c.frames, c.in_channels, c.image_size, c.image_size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            raise BadValue(f"expected clips [B, {', '.join(map(str, expected))}] (B, frames, channels, H, W), "
                           f"got {tuple(clips.shape)}")
        tokens = self.patch_embed(clips) + self.pos_embed
        return tokens if token_indices is None else gather_tokens(tokens, token_indices)



class VideoPredictor(Predictor):
    """models.Predictor with 3-D positions: the same mask token, blocks and passes; only the table its
    context and target positions are read from is the 3-D one (config.pos_embed_order is not used).
    grid_size: (T', H', W'), the encoder's."""

    def __init__(self, config: PredictorConfig, encoder_dim: int, grid_size: tuple[int, int, int]):
        T, H, W = grid_size
        super().__init__(config, encoder_dim, (T * H, W))
        self.grid_size = tuple(grid_size)
        self.pos_embed = sincos_pos_embed_3d(config.embed_dim, self.grid_size)     # replaces the 2-D buffer


# ---------------------------------------------------------------------------------------------
# spatio-temporal multi-block masks

def tube_indices(spatial: torch.Tensor, time_steps: int, cells: int) -> torch.Tensor:
    """Spatial token indices [..., K] (into one H' x W' frame-grid of `cells` cells) -> the same cells
    at every time step, [..., T' * K] (time-major, so sorted rows stay sorted): t * cells + k."""
    offsets = torch.arange(time_steps, device=spatial.device) * cells                # [T']
    return (offsets.view(-1, 1) + spatial.unsqueeze(-2)).flatten(-2)


class VideoMaskSampler:
    """V-JEPA's spatio-temporal multi-block mask: the image sampler's masks on the H' x W' frame-grid
    (MaskSampler(config), config.grid_size = (H', W')), each block extended through all T' time steps,
    context included. A hidden region is hidden in every frame, so a target is never visible one frame
    earlier or later. Returns the image code's Masks with grid_size (T' * H', W') (module docstring):
        context_indices [B, T' * K_ctx], target_indices [B, M, T' * K_tgt]."""

    def __init__(self, config: MaskConfig, time_steps: int):
        if not (isinstance(time_steps, int) and time_steps >= 1):
            raise BadValue(f"time_steps must be an int >= 1, got {time_steps}")
        self.spatial = MaskSampler(config)
        self.config, self.time_steps = config, time_steps
        H, W = config.grid_size
        self.grid_size = (time_steps, H, W)
        self.num_patches = time_steps * H * W

    def __call__(self, batch_size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Masks:
        """Masks for a batch of clips; the same generator draws what the image sampler draws."""
        masks = self.spatial(batch_size, generator=generator, device=device)
        T, H, W = self.grid_size
        return Masks(tube_indices(masks.context_indices, T, H * W), tube_indices(masks.target_indices, T, H * W),
                     (T * H, W))

    def as_grid(self, mask: torch.Tensor) -> torch.Tensor:
        """A [B, N] token mask (Masks.context_mask(), .target_mask()) -> [B, T', H', W'] for pictures."""
        return mask.view(mask.shape[0], *self.grid_size)
