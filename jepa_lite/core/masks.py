"""Mask samplers for I-JEPA: which patches the context encoder sees, which it must predict.

An image of H x W patches is flattened row-major into N = H * W token positions. For every
image a sampler returns
    context_indices: [B, K_ctx]     token positions the context encoder sees
    target_indices:  [B, T, K_tgt]  token positions of T target blocks to predict
and the trainer gathers tokens with `torch.gather` along the token axis. Every image in a
batch must give the same K_ctx and K_tgt, otherwise the indices would not stack.

The paper's multi-block strategy (Assran et al. 2023, Sec. 3):
  * draw ONE target block size (h, w) and ONE context block size per batch (so all rows
    have the same length), each from a single uniform draw that sets scale and aspect;
  * place T target blocks and one context block independently per image;
  * remove the target cells from the context (the prediction task is not trivial).

Compared with the reference collator this module fixes three known faults:
  1. off-by-one: a block's top-left row is uniform over 0..H-h INCLUSIVE (the reference
     never touches the last row/column);
  2. truncation bias: contexts of different sizes are cut to the batch minimum K_ctx by
     keeping a uniformly random subset of each row, not the first K_ctx in row-major order
     (which favours the top-left of the image);
  3. hangs: impossible configs raise ValueError when the sampler is built, and sampling
     always finishes in bounded work (bounded, vectorized retries plus a fallback).
Everything is vectorized over the batch (no per-image Python loops).

Placement "inside" (the paper's) keeps blocks fully inside the grid, so edge cells are
covered less often than central ones; `jepa_lite.core.mask_coverage.expected_block_coverage` gives
the exact probability, and `mask_coverage.sample_reference_style` the reference collator's
sampler, faults kept, to compare with. Placement "torus" lets blocks wrap around the edges, which makes coverage
exactly uniform. Placement "reference" keeps fault 1 on purpose, to compare with the reference: block sizes
clipped to (H-1) x (W-1) and tops drawn from 0..H-h-1, so nothing lands on the last row or column.

`reference_mask_config(grid)` is the reference's own ImageNet setting (configs/in1k_vith14_ep300.yaml) on
any grid, the masks of `--recipe paper`; `default_mask_config(grid)` is the course's, chosen by grid size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from jepa_lite.errors import BadValue

__all__ = ["MaskConfig", "Masks", "MaskSampler", "default_mask_config", "reference_mask_config",
           "block_size_table"]

STRATEGIES = ("multiblock", "random", "single_block", "raster")
PLACEMENTS = ("inside", "torus", "reference")

# The uniform draw that sets a block's scale and aspect ratio is discretised into this many
# equally likely levels. This turns the size distribution into a small exact table that we
# can validate at construction (largest/smallest block) and whose mean tests can compute;
# the difference from a continuous draw is at most 1/1024 in the draw.
SIZE_LEVELS = 1024

# How many times images whose context is too small get a new context block before falling
# back to "all non-target cells" (always large enough, checked at construction).
CONTEXT_RETRIES = 20


@dataclass
class MaskConfig:
    """What to mask. Scales are fractions of the N = H * W patch grid; aspect is h / w."""

    grid_size: tuple[int, int] = (8, 8)  # patches (rows, cols); an int n means (n, n)
    strategy: str = "multiblock"  # "multiblock" | "random" | "single_block" | "raster"
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 4  # minimum context tokens, and minimum tokens per target block
    # "inside" (the paper's) | "torus" (blocks wrap: uniform coverage) | "reference" (the reference code's
    # off-by-one kept: never the last row or column)
    placement: str = "inside"
    # the reference code floors s * N to whole tokens before taking the square roots (int(H * W * s));
    # False rounds the sizes from the exact s * N
    floor_tokens: bool = False

    def __post_init__(self) -> None:
        # Normalise convenient spellings; range checks happen in MaskSampler so that a
        # config can be edited field by field before it is used.
        if isinstance(self.grid_size, int):
            self.grid_size = (self.grid_size, self.grid_size)
        self.grid_size = tuple(self.grid_size)
        for name in ("target_scale", "target_aspect", "context_scale", "context_aspect"):
            setattr(self, name, tuple(getattr(self, name)))


def default_mask_config(grid_size: int | tuple[int, int] = (8, 8), **overrides) -> MaskConfig:
    """Sensible multi-block defaults for a patch grid; keyword overrides win.

    Grids of 14x14 or more use the paper's values: 4 targets of 15-20% of the grid,
    aspect 0.75-1.5, context block 85-100%, min_keep 10.
    Smaller grids (meant for 8x8 = CIFAR 32 px with patch 4) use 4 targets of 10-20%
    (6-12 tokens each on 8x8), the paper's context block and min_keep 4. On 8x8 an image's
    context then has ~33 tokens on average; after the batch-wide cut to the shortest row,
    K_ctx averages ~23 at B=256. Grids below 6x6 are too small for 4 targets.
    """
    H, W = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    if min(H, W) >= 14:
        config = MaskConfig(grid_size=(H, W), num_targets=4, target_scale=(0.15, 0.2),
                            target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0),
                            context_aspect=(1.0, 1.0), min_keep=10)
    else:
        config = MaskConfig(grid_size=(H, W), num_targets=4, target_scale=(0.1, 0.2),
                            target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0),
                            context_aspect=(1.0, 1.0), min_keep=4)
        # On some small grids (7x7, i.e. 28 px with patch 4) rounding h and w makes the
        # largest block 24% of the grid and 4 of them leave no context: shrink the top scale.
        while not _is_valid(config) and config.target_scale[1] > 0.11:
            config = replace(config, target_scale=(0.1, round(config.target_scale[1] - 0.01, 2)))
    return replace(config, **overrides)


def reference_mask_config(grid_size: int | tuple[int, int] = (14, 14), **overrides) -> MaskConfig:
    """The reference's mask setting (facebookresearch/ijepa, configs/in1k_vith14_ep300.yaml) on any grid:
    4 targets of 15-20% of the grid, aspect 0.75-1.5, one context block of 85-100% (aspect 1), block sizes
    floored to whole tokens. Its min_keep=10 keeps a block only with MORE than 10 cells; here min_keep is
    the smallest count allowed, hence 11. Keyword overrides win.

    On grids too small for it (e.g. 7x7: no target block reaches 11 cells) MaskSampler raises a ValueError
    naming the grid and the values; on 8x8 only the 12-cell target sizes qualify (the reference would loop
    forever on the others; see engine.config.PAPER_DEVIATIONS)."""
    H, W = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    config = MaskConfig(grid_size=(H, W), num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                        context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0), min_keep=REFERENCE_MIN_KEEP + 1,
                        floor_tokens=True)
    return replace(config, **overrides)


REFERENCE_MIN_KEEP = 10     # the reference config's min_keep (it keeps blocks with > min_keep cells)


def _is_valid(config: MaskConfig) -> bool:
    try:
        MaskSampler(config)
        return True
    except ValueError:
        return False


@dataclass
class Masks:
    """A batch of masks as token indices into the row-major flattened patch grid."""

    context_indices: Tensor  # [B, K_ctx] int64, sorted ascending, unique per row
    target_indices: Tensor  # [B, T, K_tgt] int64, sorted ascending, unique per block
    grid_size: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def context_mask(self) -> Tensor:
        """[B, N] bool, True where the context encoder sees the patch."""
        B = self.context_indices.shape[0]
        mask = torch.zeros(B, self.num_patches, dtype=torch.bool, device=self.context_indices.device)
        return mask.scatter_(1, self.context_indices, True)

    def target_mask(self) -> Tensor:
        """[B, N] bool, True where any target block covers the patch."""
        B = self.target_indices.shape[0]
        mask = torch.zeros(B, self.num_patches, dtype=torch.bool, device=self.target_indices.device)
        return mask.scatter_(1, self.target_indices.flatten(1), True)

    def to(self, device: torch.device | str) -> "Masks":
        return Masks(self.context_indices.to(device), self.target_indices.to(device), self.grid_size)


# -----------------------------------------------------------------------------
# block geometry helpers

def block_size_table(grid_size: tuple[int, int], scale: tuple[float, float],
                     aspect: tuple[float, float], levels: int = SIZE_LEVELS, floor_tokens: bool = False,
                     placement: str = "inside") -> Tensor:
    """All equally likely block sizes, one per level of the uniform draw u. Returns [L, 2] (h, w).

    As in the paper one draw u sets both the scale s and the aspect a (they are coupled):
    h = round(sqrt(s*N*a)), w = round(sqrt(s*N/a)), clipped to 1..H and 1..W (1..H-1 and 1..W-1 with
    placement "reference", as the reference code clips them); with floor_tokens, s*N is first floored
    to whole tokens, as the reference code does.
    """
    H, W = grid_size
    if placement == "reference":
        H, W = max(H - 1, 1), max(W - 1, 1)
    u = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels  # level midpoints
    s = scale[0] + u * (scale[1] - scale[0])
    a = aspect[0] + u * (aspect[1] - aspect[0])
    N = grid_size[0] * grid_size[1]
    tokens = torch.floor(s * N) if floor_tokens else s * N
    h = torch.round(torch.sqrt(tokens * a)).clamp(1, H)
    w = torch.round(torch.sqrt(tokens / a)).clamp(1, W)
    return torch.stack([h, w], dim=1).long()


# -----------------------------------------------------------------------------
# the sampler

class MaskSampler:
    """Vectorized, seeded mask sampler. Validates the config once, at construction.

    Random numbers are drawn with `generator` on the generator's device (CPU for the
    default generator), the masks are built there and moved to `device` at the end. On
    CPU this is the fast path for small grids (B=256 on 8x8 takes about 1 ms).
    """

    def __init__(self, config: MaskConfig):
        self.config = config
        self.num_patches, self.num_target_blocks = self._validate(config)

    # --- validation ----------------------------------------------------------

    def _validate(self, c: MaskConfig) -> tuple[int, int]:
        """Raise ValueError naming the offending value; build the block size tables."""
        if not (len(c.grid_size) == 2 and all(isinstance(n, int) and n >= 1 for n in c.grid_size)):
            raise BadValue(f"grid_size must be two ints >= 1 (rows, cols), got {c.grid_size}")
        if c.strategy not in STRATEGIES:
            raise BadValue(f"strategy must be one of {STRATEGIES}, got {c.strategy!r}")
        if c.placement not in PLACEMENTS:
            raise BadValue(f"placement must be one of {PLACEMENTS}, got {c.placement!r}")
        if not (isinstance(c.num_targets, int) and c.num_targets >= 1):
            raise BadValue(f"num_targets must be an int >= 1, got {c.num_targets}")
        if not (isinstance(c.min_keep, int) and c.min_keep >= 1):
            raise BadValue(f"min_keep must be an int >= 1, got {c.min_keep}")
        for name in ("target_scale", "context_scale"):
            lo, hi = _pair(c, name)
            if not (0 < lo <= hi <= 1):
                raise BadValue(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        for name in ("target_aspect", "context_aspect"):
            lo, hi = _pair(c, name)
            if not (0 < lo <= hi < math.inf):
                raise BadValue(f"{name} (h/w) must satisfy 0 < min <= max, got {(lo, hi)}")

        H, W = c.grid_size
        N, T, k = H * W, c.num_targets, c.min_keep
        if c.placement == "reference" and min(H, W) < 2:
            raise BadValue(f"placement 'reference' needs a grid of at least 2x2 (it never uses the last row "
                             f"and column), got grid_size={c.grid_size}")
        if c.strategy == "multiblock":
            self.target_sizes = self._valid_sizes(c, "target", c.target_scale, c.target_aspect)
            self.context_sizes = self._valid_sizes(c, "context", c.context_scale, c.context_aspect)
            self._check_room(c, T * int(self.target_sizes.prod(1).max()), f"{T} target blocks")
            return N, T
        if c.strategy == "single_block":
            # one block whose scale is the sum of the T blocks it replaces
            scale = (T * c.target_scale[0], T * c.target_scale[1])
            self.target_sizes = self._valid_sizes(c, "target", scale, c.target_aspect)
            self._check_room(c, int(self.target_sizes.prod(1).max()), "the single target block")
            return N, 1
        if c.strategy == "random":
            counts = torch.tensor([round(s * N) for s in _levels(c.target_scale)]).clamp(1, N)
            self.target_counts = counts[counts >= k]
            if len(self.target_counts) == 0:
                raise BadValue(f"target_scale={c.target_scale} gives at most {int(counts.max())} "
                                 f"cells per target on a {H}x{W} grid, fewer than min_keep={k}")
            self._check_room(c, T * int(self.target_counts.max()), f"{T} random targets")
            return N, T
        # raster: the bottom band of rows, about T * mean target scale of the grid
        if H < 2:
            raise BadValue(f"raster needs at least 2 grid rows, got grid_size={c.grid_size}")
        self.raster_rows = min(max(round(T * sum(c.target_scale) / 2 * H), 1), H - 1)
        if self.raster_rows * W < k:
            raise BadValue(f"raster target band of {self.raster_rows} rows x {W} cols is smaller "
                             f"than min_keep={k}; raise target_scale={c.target_scale} or num_targets")
        self._check_room(c, self.raster_rows * W, "the raster target band")
        return N, 1

    @staticmethod
    def _valid_sizes(c: MaskConfig, kind: str, scale: tuple[float, float],
                     aspect: tuple[float, float]) -> Tensor:
        """Block sizes with >= min_keep cells. Dropping the others and drawing uniformly from
        the rest equals redrawing the size until it is valid (the reference instead keeps the
        size and redraws the location forever). Returns [L_valid, 2] (h, w)."""
        sizes = block_size_table(c.grid_size, scale, aspect, floor_tokens=c.floor_tokens, placement=c.placement)
        areas = sizes.prod(1)
        if int(areas.max()) < c.min_keep:
            H, W = c.grid_size
            raise BadValue(f"{kind} block too small: {kind}_scale={scale} with aspect {aspect} "
                             f"gives at most {int(areas.max())} cells on a {H}x{W} grid, "
                             f"need >= min_keep={c.min_keep}")
        return sizes[areas >= c.min_keep]

    @staticmethod
    def _check_room(c: MaskConfig, max_target_cells: int, what: str) -> None:
        """Even if the targets are disjoint and as large as possible, min_keep cells must remain
        for the context; this is what guarantees the fallback context is big enough."""
        H, W = c.grid_size
        N = H * W
        if N - max_target_cells < c.min_keep:
            raise BadValue(f"target area too large: {what} can cover {max_target_cells} of {N} "
                             f"cells of a {H}x{W} grid, leaving fewer than min_keep={c.min_keep} for the context; "
                             f"lower target_scale={c.target_scale} or num_targets={c.num_targets}")

    # --- sampling ------------------------------------------------------------

    def __call__(self, batch_size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Masks:
        """Sample masks for a batch. Deterministic for a seeded generator.

        Returns Masks with context_indices [B, K_ctx] and target_indices [B, T, K_tgt] on
        `device` (default: the generator's device, i.e. CPU unless a CUDA generator is given).
        """
        if batch_size < 1:
            raise BadValue(f"batch_size must be >= 1, got {batch_size}")
        work = generator.device if generator is not None else torch.device("cpu")
        sample = {
            "multiblock": self._multiblock,
            "single_block": self._single_block,
            "random": self._random,
            "raster": self._raster,
        }[self.config.strategy]
        context, targets = sample(batch_size, generator, work)
        masks = Masks(context, targets, self.config.grid_size)
        return masks if device is None else masks.to(device)

    def _multiblock(self, B: int, g: torch.Generator | None, dev: torch.device) -> tuple[Tensor, Tensor]:
        T = self.num_target_blocks
        target_hw = self._draw_size(self.target_sizes, g, dev)
        context_hw = self._draw_size(self.context_sizes, g, dev)
        targets = self._place_blocks(B * T, target_hw, g, dev).view(B, T, -1)  # [B, T, K_tgt]
        is_target = self._to_mask(targets.flatten(1))  # [B, N]
        context = self._to_mask(self._place_blocks(B, context_hw, g, dev)) & ~is_target
        # Images whose targets ate their context get a new context block location, as in the
        # reference, but a bounded number of times and only for those images.
        for _ in range(CONTEXT_RETRIES):
            bad = context.sum(1) < self.config.min_keep  # [B]
            if not bool(bad.any()):
                break
            redo = self._place_blocks(int(bad.sum()), context_hw, g, dev)
            context[bad] = self._to_mask(redo) & ~is_target[bad]
        # Last resort: all non-target cells (>= min_keep by the construction check).
        bad = context.sum(1) < self.config.min_keep
        context = torch.where(bad[:, None], ~is_target, context)
        return self._subsample(context, g), targets

    def _single_block(self, B: int, g: torch.Generator | None, dev: torch.device) -> tuple[Tensor, Tensor]:
        target_hw = self._draw_size(self.target_sizes, g, dev)
        targets = self._place_blocks(B, target_hw, g, dev)[:, None, :]  # [B, 1, K_tgt]
        context = ~self._to_mask(targets[:, 0])  # the rest of the image
        return self._subsample(context, g), targets

    def _random(self, B: int, g: torch.Generator | None, dev: torch.device) -> tuple[Tensor, Tensor]:
        N, T, k = self.num_patches, self.num_target_blocks, self.config.min_keep
        K = int(self.target_counts[torch.randint(len(self.target_counts), (1,), generator=g, device=dev)])
        # Like multiblock, the context keeps a context_scale fraction of the non-target cells.
        lo, hi = self.config.context_scale
        s = lo + (hi - lo) * float(torch.rand(1, generator=g, device=dev))
        rest = N - T * K
        K_ctx = min(max(round(s * rest), k), rest)
        # One random permutation per image: first T*K cells are the (disjoint) targets, the
        # next K_ctx the context, so every subset is equally likely.
        perm = torch.rand(B, N, generator=g, device=dev).argsort(dim=1)
        targets = perm[:, : T * K].view(B, T, K).sort(dim=-1).values
        context = perm[:, T * K : T * K + K_ctx].sort(dim=1).values
        return context, targets

    def _raster(self, B: int, g: torch.Generator | None, dev: torch.device) -> tuple[Tensor, Tensor]:
        # Deterministic: predict the bottom rows from the rows above.
        N = self.num_patches
        split = N - self.raster_rows * self.config.grid_size[1]
        context = torch.arange(split, device=dev).expand(B, split).contiguous()
        targets = torch.arange(split, N, device=dev).expand(B, 1, N - split).contiguous()
        return context, targets

    # --- building blocks -----------------------------------------------------

    @staticmethod
    def _draw_size(sizes: Tensor, g: torch.Generator | None, dev: torch.device) -> tuple[int, int]:
        """One (h, w) for the whole batch, uniformly from the valid size table [L, 2]."""
        i = int(torch.randint(len(sizes), (1,), generator=g, device=dev))
        h, w = sizes[i].tolist()
        return h, w

    def _place_blocks(self, n: int, hw: tuple[int, int], g: torch.Generator | None,
                      dev: torch.device) -> Tensor:
        """n independently placed h x w blocks. Returns [n, h*w] sorted cell indices."""
        (H, W), (h, w) = self.config.grid_size, hw
        torus = self.config.placement == "torus"
        # inside: top in 0..H-h inclusive (randint's high is exclusive, hence the +1); reference: 0..H-h-1
        # (its sizes are clipped to H-1, so the range is never empty)
        edge = 0 if self.config.placement == "reference" else 1
        top = torch.randint(H if torus else H - h + edge, (n, 1), generator=g, device=dev)
        left = torch.randint(W if torus else W - w + edge, (n, 1), generator=g, device=dev)
        rows = top + torch.arange(h, device=dev)  # [n, h]
        cols = left + torch.arange(w, device=dev)  # [n, w]
        if torus:
            rows, cols = rows % H, cols % W
        cells = (rows[:, :, None] * W + cols[:, None, :]).flatten(1)  # [n, h*w]
        # row-major construction is already sorted unless the block wrapped around
        return cells.sort(dim=1).values if torus else cells

    def _to_mask(self, indices: Tensor) -> Tensor:
        """[n, K] indices -> [n, N] bool mask."""
        mask = torch.zeros(indices.shape[0], self.num_patches, dtype=torch.bool, device=indices.device)
        return mask.scatter_(1, indices, True)

    @staticmethod
    def _subsample(candidates: Tensor, g: torch.Generator | None) -> Tensor:
        """Cut every row to the batch's smallest candidate count K_ctx, keeping a uniformly
        random subset of each row (random scores + topk) so that no grid position is favoured.
        candidates: [B, N] bool -> context_indices: [B, K_ctx] sorted."""
        K = int(candidates.sum(1).min())
        scores = torch.rand(candidates.shape, generator=g, device=candidates.device)
        scores = scores.masked_fill(~candidates, -1.0)  # non-candidates lose every comparison
        return scores.topk(K, dim=1, sorted=False).indices.sort(dim=1).values  # sorted=False: faster


def _pair(c: MaskConfig, name: str) -> tuple[float, float]:
    value = getattr(c, name)
    if len(value) != 2:
        raise BadValue(f"{name} must be a (min, max) pair, got {value}")
    return float(value[0]), float(value[1])


def _levels(scale: tuple[float, float], levels: int = SIZE_LEVELS) -> list[float]:
    """The discretised uniform draw over a (min, max) range (level midpoints)."""
    lo, hi = scale
    return [lo + (i + 0.5) / levels * (hi - lo) for i in range(levels)]
