"""The networks of I-JEPA: a ViT encoder that encodes only the tokens it is given, and a
narrow predictor that fills in embeddings at target positions.

    images [B, 3, H, W] --patch_embed--> tokens [B, N, D] (+ fixed 2-D sin-cos positions)
    context encoder f_theta: tokens at context_indices [B, K_ctx] -> z_c [B, K_ctx, D]
    target encoder  g_phi:   all N tokens                         -> z_t [B, N, D]
    predictor       h_psi:   z_c + mask tokens at target_indices  -> z_hat_t [B, K_tgt, D]

The encoder contract (any module can be plugged into the training engine if it keeps it):
    encoder(images: [B, C, H, W], token_indices: [B, K] int64 | None) -> [B, K or N, D]
    encoder.embed_dim: int          D
    encoder.grid_size: (int, int)   rows, cols of the token grid; N = rows * cols
Token n is the cell (n // cols, n % cols) of the grid, row-major. An encoder that cannot skip
tokens (e.g. a CNN) may compute all N and gather; it must still return only the asked ones, and
keep the pixels of the other tokens from reaching them (cnn.py zeroes them before its first conv).
Optionally `encoder.layer_outputs(images) -> list of [B, N, D]` exposes intermediate blocks
for probes that read several layers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.errors import BadValue

# ---------------------------------------------------------------------------------------------
# configuration

def check_patch_grid(image_size: int, patch_size: int) -> None:
    """ValueError unless patch_size > 0 tiles image_size exactly (names the valid patch sizes)."""
    if image_size <= 0 or patch_size <= 0:
        raise BadValue(f"image_size ({image_size}) and patch_size ({patch_size}) must be > 0")
    if image_size % patch_size != 0:
        raise BadValue(
            f"image_size {image_size} is not divisible by patch_size {patch_size}; "
            f"valid patch sizes for {image_size} px: "
            f"{[p for p in range(1, image_size + 1) if image_size % p == 0]}")


@dataclass
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path: float = 0.0          # stochastic depth, linearly increasing over blocks
    qkv_bias: bool = True
    # Compatibility with released weights (jepa_lite.interop.meta); the defaults are the course's own.
    norm_eps: float = 1e-5          # LayerNorm eps (the released I-JEPA encoders use 1e-6)
    pos_embed_order: str = "row_col"  # sin-cos channel halves; "col_row" is the reference code's layout
    # The reference's network (REFERENCE_NETWORK, `--recipe paper`); the defaults are the course's own.
    patch_init: str = "fan_in"      # patch projection: trunc-normal std 1/sqrt(fan_in), or "reference": std 0.02
    # "course": the encoder takes the images as data.datasets.normalize makes them; "imagenet": it first maps
    # them to the reference's ImageNet normalisation, so its weights see the reference's inputs
    input_norm: str = "course"

    def __post_init__(self) -> None:
        if self.pos_embed_order not in POS_EMBED_ORDERS:
            raise BadValue(f"pos_embed_order must be one of {POS_EMBED_ORDERS}, got {self.pos_embed_order!r}")
        if self.patch_init not in PATCH_INITS:
            raise BadValue(f"patch_init must be one of {PATCH_INITS}, got {self.patch_init!r}")
        if self.input_norm not in INPUT_NORMS:
            raise BadValue(f"input_norm must be one of {tuple(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.input_norm != "course" and self.in_channels != 3:
            raise BadValue(f"input_norm {self.input_norm!r} normalises 3 channels, "
                             f"got in_channels={self.in_channels}")
        check_patch_grid(self.image_size, self.patch_size)
        if self.embed_dim % self.num_heads != 0:
            raise BadValue(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.depth < 1:
            raise BadValue(f"depth must be >= 1, got {self.depth}")
        if not 0.0 <= self.drop_path < 1.0:
            raise BadValue(f"drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return (side, side)

    def __repr__(self) -> str:
        # the compatibility fields are shown only when they differ from the course's defaults
        shown = [f"{k}={v!r}" for k, v in asdict(self).items()
                 if not (k in _COMPAT_DEFAULTS and v == _COMPAT_DEFAULTS[k])]
        return f"ViTConfig({', '.join(shown)})"


POS_EMBED_ORDERS = ("row_col", "col_row")
PATCH_INITS = ("fan_in", "reference")
# (mean, std) per channel of x / 255: the course's fixed constants (data.datasets.NORM_MEAN / NORM_STD, what
# every image the course feeds an encoder is normalised with) and the reference's ImageNet statistics
INPUT_NORMS = {"course": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
               "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
_COMPAT_DEFAULTS = {"norm_eps": 1e-5, "pos_embed_order": "row_col", "patch_init": "fan_in", "input_norm": "course"}
# The reference code's network details (src/models/vision_transformer.py, src/transforms.py), for
# ViTConfig; PredictorConfig takes the first two (`--recipe paper`, engine.build.configs_for).
REFERENCE_NETWORK = {"norm_eps": 1e-6, "pos_embed_order": "col_row", "patch_init": "reference",
                     "input_norm": "imagenet"}


@dataclass
class PredictorConfig:
    embed_dim: int = 96             # narrow bottleneck width (paper: 384 for a 1280-wide ViT-H)
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    # False: the paper's one pass per target block (context repeated T times). True: one pass
    # for all blocks; context tokens attend only to context, each block's mask tokens to the
    # context and their own block, so the context is processed once instead of T times. Not the
    # same function as False for depth >= 2 (there context tokens also attend to their pass's mask tokens).
    shared_context: bool = False
    # Compatibility with released weights (jepa_lite.interop.meta), as in ViTConfig; the defaults are the course's own.
    norm_eps: float = 1e-5
    pos_embed_order: str = "row_col"

    def __post_init__(self) -> None:
        if self.pos_embed_order not in POS_EMBED_ORDERS:
            raise BadValue(f"predictor pos_embed_order must be one of {POS_EMBED_ORDERS}, "
                             f"got {self.pos_embed_order!r}")
        if self.embed_dim % self.num_heads != 0:
            raise BadValue(f"predictor embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if self.depth < 1:
            raise BadValue(f"predictor depth must be >= 1, got {self.depth}")

    def __repr__(self) -> str:
        # as ViTConfig: the compatibility fields are shown only when they differ from the course's defaults
        shown = [f"{k}={v!r}" for k, v in asdict(self).items()
                 if not (k in _COMPAT_DEFAULTS and v == _COMPAT_DEFAULTS[k])]
        return f"PredictorConfig({', '.join(shown)})"


# ---------------------------------------------------------------------------------------------
# positions and patches

def sincos_pos_embed_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """positions: [M] float -> [M, dim]; half sines, half cosines at geometric frequencies."""
    if dim % 2 != 0:
        raise BadValue(f"sin-cos embedding dim must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_pos_embed_2d(dim: int, grid_size: tuple[int, int], order: str = "row_col") -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding, [rows * cols, dim], row-major.
    The first half of the channels encodes the row, the second half the column; order="col_row"
    swaps the halves, which is the layout of the reference code and its released weights."""
    if dim % 4 != 0:
        raise BadValue(f"2-D sin-cos embedding dim must be divisible by 4, got {dim}")
    if order not in POS_EMBED_ORDERS:
        raise BadValue(f"order must be one of {POS_EMBED_ORDERS}, got {order!r}")
    rows, cols = grid_size
    row_ids = torch.arange(rows).repeat_interleave(cols)      # [N]: 0,0,..,1,1,..
    col_ids = torch.arange(cols).repeat(rows)                 # [N]: 0,1,..,0,1,..
    halves = [sincos_pos_embed_1d(dim // 2, row_ids), sincos_pos_embed_1d(dim // 2, col_ids)]
    return torch.cat(halves if order == "row_col" else halves[::-1], dim=1)


class PatchEmbed(nn.Module):
    """Cut the image into non-overlapping patches and project each to D channels.
    images: [B, C, H, W] -> tokens: [B, N, D] with N = (H/p) * (W/p), row-major."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int):
        super().__init__()
        # a strided convolution is exactly a linear map applied to each flattened patch
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tokens: [B, N, D], indices: [B, K] int64 -> [B, K, D] (row b keeps tokens[b, indices[b]])."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


# ---------------------------------------------------------------------------------------------
# transformer block

class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)   # one fused matmul for q, k and v
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, M, D] -> [B, M, D]; self-attention, full unless attn_mask [M, M] (True = may
        attend) restricts it."""
        B, M, D = x.shape
        q, k, v = self.qkv(x).view(B, M, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)   # [B, heads, M, D/heads]
        return self.proj(out.transpose(1, 2).reshape(B, M, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 qkv_bias: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path
        self.generator: torch.Generator | None = None     # a CPU generator for the drop masks (set_drop_path_generator)

    def _drop(self, residual: torch.Tensor) -> torch.Tensor:
        # stochastic depth: drop the whole residual branch for some samples while training
        if not self.training or self.drop_path == 0.0:
            return residual
        keep = 1.0 - self.drop_path
        # drawn on the CPU from the block's own generator (when it has one), so that training leaves the
        # global random state alone and a resumed run draws the same masks
        mask = (torch.rand(residual.shape[0], 1, 1, generator=self.generator) < keep).to(residual.device)
        return residual * mask.to(residual.dtype) / keep

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self._drop(self.attn(self.norm1(x), attn_mask))
        return x + self._drop(self.mlp(self.norm2(x)))


def set_drop_path_generator(module: nn.Module, generator: torch.Generator | None) -> None:
    """Every transformer block inside `module` draws its stochastic-depth masks from `generator`."""
    for block in module.modules():
        if isinstance(block, Block):
            block.generator = generator


def init_weights(module: nn.Module, blocks: nn.ModuleList) -> None:
    """Truncated-normal(0.02) linear/conv weights, zero biases, unit LayerNorms; the residual
    output projections of block l are scaled by 1/sqrt(2 l) so deep stacks start stable."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for layer_id, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))


# ---------------------------------------------------------------------------------------------
# encoder

class TokenEncoder(nn.Module):
    """What every encoder built from `embed` (positioned tokens), `blocks` and a final `norm` shares:
    the forward pass and the per-block outputs (VisionTransformer here, core/video.py's VideoTransformer)."""

    def forward(self, images: torch.Tensor, token_indices: torch.Tensor | None = None) -> torch.Tensor:
        """images: [B, C, H, W] (clips: [B, T, C, H, W]), token_indices: [B, K] or None -> [B, K or N, D]."""
        x = self.embed(images, token_indices)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def layer_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output on the full input, the last one final-normed: depth x [B, N, D]."""
        x = self.embed(images)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs[-1] = self.norm(x)
        return outputs


class VisionTransformer(TokenEncoder):
    """ViT without a [CLS] token. Masking happens before the transformer: with
    `token_indices` only those tokens are encoded (that is where I-JEPA saves compute)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.grid_size = config.grid_size
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_embed = PatchEmbed(config.patch_size, config.in_channels, config.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(config.embed_dim, self.grid_size,
                                                              config.pos_embed_order), persistent=False)
        # device="cpu": the rates stay readable when the encoder is built under torch.device("meta")
        rates = torch.linspace(0, config.drop_path, config.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(config.embed_dim, config.num_heads, config.mlp_ratio, rate,
                                          config.qkv_bias, config.norm_eps) for rate in rates)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        # input_norm "imagenet": images normalised with the course's constants -> the reference's, per channel
        (mean, std), (course_mean, course_std) = INPUT_NORMS[config.input_norm], INPUT_NORMS["course"]
        scale = torch.tensor([c / s for c, s in zip(course_std, std)]).view(1, -1, 1, 1)
        shift = torch.tensor([(cm - m) / s for cm, m, s in zip(course_mean, mean, std)]).view(1, -1, 1, 1)
        self.input_affine = config.input_norm != "course"
        if self.input_affine:               # buffers only then: the course's encoders keep their exact buffers
            self.register_buffer("input_scale", scale, persistent=False)
            self.register_buffer("input_shift", shift, persistent=False)
        init_weights(self, self.blocks)      # patch_init "reference": this trunc-normal(0.02) is the reference's
        if config.patch_init == "fan_in":
            # With small patches (4x4x3 = 48 inputs) a std-0.02 patch projection gives token
            # contents ~0.1 against sin-cos positions ~0.7: every token is mostly "where", the
            # targets become predictable from position alone and the loss falls without learning
            # anything about the image. A 1/sqrt(fan_in) init makes content and position comparable.
            fan_in = config.in_channels * config.patch_size ** 2
            nn.init.trunc_normal_(self.patch_embed.proj.weight, std=1.0 / math.sqrt(fan_in))

    def embed(self, images: torch.Tensor, token_indices: torch.Tensor | None = None) -> torch.Tensor:
        """images: [B, C, H, W] -> positioned tokens [B, K or N, D]."""
        if images.shape[-2:] != (self.config.image_size, self.config.image_size):
            raise BadValue(f"expected {self.config.image_size}x{self.config.image_size} images, "
                             f"got {tuple(images.shape[-2:])}")
        if self.input_affine:
            images = images * self.input_scale.to(images.dtype) + self.input_shift.to(images.dtype)
        tokens = self.patch_embed(images) + self.pos_embed
        return tokens if token_indices is None else gather_tokens(tokens, token_indices)



# ---------------------------------------------------------------------------------------------
# predictor

class Predictor(nn.Module):
    """Narrow transformer h_psi: from context embeddings, predict target embeddings.

    The context embeddings are projected to the predictor width; each target position gets
    the same learned mask token plus its own positional embedding (so the predictor knows
    *where* to predict); all tokens attend to each other; outputs at the mask tokens are
    projected back to the encoder width."""

    def __init__(self, config: PredictorConfig, encoder_dim: int, grid_size: tuple[int, int]):
        super().__init__()
        self.config = config
        self.grid_size = grid_size
        self.embed = nn.Linear(encoder_dim, config.embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(config.embed_dim, grid_size, config.pos_embed_order),
                             persistent=False)
        # device="cpu": the rates stay readable when the predictor is built under torch.device("meta")
        rates = torch.linspace(0, config.drop_path, config.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(config.embed_dim, config.num_heads, config.mlp_ratio, rate,
                                          norm_eps=config.norm_eps) for rate in rates)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.proj = nn.Linear(config.embed_dim, encoder_dim)
        init_weights(self, self.blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_indices: torch.Tensor,
                target_indices: torch.Tensor) -> torch.Tensor:
        """context: [B, K_ctx, D] (context encoder output), context_indices: [B, K_ctx],
        target_indices: [B, T, K_tgt] (T target blocks) -> predictions [B, T, K_tgt, D].

        Blocks never see each other's mask tokens: as in the paper each block gets its own
        pass (the context repeated T times along the batch axis), or with shared_context one
        pass with an attention mask that keeps the blocks apart."""
        B, T, K_tgt = target_indices.shape
        pos = self.pos_embed.unsqueeze(0).expand(B, -1, -1)                  # [B, N, d]
        x = self.embed(context) + gather_tokens(pos, context_indices)        # [B, K_ctx, d]
        queries = self.mask_token + gather_tokens(pos, target_indices.reshape(B, T * K_tgt))  # [B, T*K_tgt, d]
        if self.config.shared_context:
            x = torch.cat([x, queries], dim=1)                               # [B, K_ctx + T*K_tgt, d]
            attn_mask = self._block_mask(context.shape[1], T, K_tgt, x.device)
        else:
            x = x.repeat_interleave(T, dim=0)                                # [B*T, K_ctx, d]
            x = torch.cat([x, queries.reshape(B * T, K_tgt, -1)], dim=1)     # [B*T, K_ctx+K_tgt, d]
            attn_mask = None
        for block in self.blocks:
            x = block(x, attn_mask)
        out = self.proj(self.norm(x[:, -T * K_tgt:] if self.config.shared_context else x[:, -K_tgt:]))
        return out.reshape(B, T, K_tgt, -1)

    @staticmethod
    def _block_mask(K_ctx: int, T: int, K_tgt: int, device) -> torch.Tensor:
        """[M, M] bool, M = K_ctx + T*K_tgt: everyone attends to the context; a mask token also
        attends to the mask tokens of its own block; context tokens see only the context."""
        group = torch.cat([torch.full((K_ctx,), -1), torch.arange(T).repeat_interleave(K_tgt)]).to(device)
        is_context = (group < 0)[None, :]
        same_block = (group[:, None] == group[None, :]) & (group[:, None] >= 0)
        return is_context | same_block

