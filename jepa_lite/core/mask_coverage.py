"""Where masks land: the exact coverage of a uniformly placed block, and the reference
collator's sampler, faults kept, to compare jepa_lite's with (notebook 01, tests/test_masks.py,
benchmarks/bench_masks.py).

    expected_block_coverage((8, 8), (3, 2))          # [8, 8]: P(cell covered by one 3 x 2 block)
    context, targets = sample_reference_style(config, batch_size, random.Random(0))
"""
from __future__ import annotations

import math
import random

import torch
from torch import Tensor

from jepa_lite.core.masks import MaskConfig
from jepa_lite.errors import BadValue


def expected_block_coverage(grid_size: tuple[int, int], block_hw: tuple[int, int],
                            placement: str = "inside") -> Tensor:
    """Exact probability that one uniformly placed h x w block covers each cell. Returns [H, W].

    "inside": the top row is uniform over 0..H-h, so cell row r is covered by the
    tops max(0, r-h+1)..min(r, H-h); rows and columns are independent, so the 2-D
    probability is the outer product. Edge cells are covered least.
    "torus": every cell is covered with probability h*w / (H*W).
    """
    H, W = grid_size
    h, w = block_hw
    if not (1 <= h <= H and 1 <= w <= W):
        raise BadValue(f"block_hw must fit in the grid: 1 <= h <= {H}, 1 <= w <= {W}, got {block_hw}")
    if placement == "torus":
        return torch.full((H, W), h * w / (H * W), dtype=torch.float64)

    def one_axis(n: int, k: int) -> Tensor:
        r = torch.arange(n, dtype=torch.float64)
        first = (r - k + 1).clamp(min=0)
        last = r.clamp(max=n - k)
        return (last - first + 1).clamp(min=0) / (n - k + 1)

    return one_axis(H, h)[:, None] * one_axis(W, w)[None, :]


def sample_reference_style(config: MaskConfig, batch_size: int,
                           rng: random.Random | None = None,
                           max_tries: int = 1000) -> tuple[Tensor, list[Tensor]]:
    """A per-image Python-loop multi-block sampler in the style of the I-JEPA reference collator.

    Keeps the reference's behaviour on purpose, faults included: block sizes clipped to
    H-1 x W-1 and tops drawn from 0..H-h-1 (never the last row/column); rejection sampling
    of the context location until it keeps more than min_keep cells, dropping one target
    from the constraint every 20 failures; every row truncated to the batch's shortest by
    keeping its FIRST indices (row-major), which favours the top-left. Unlike the reference
    it gives up after `max_tries` attempts per block, so it cannot hang.
    Ignores strategy and placement. Returns (context [B, K_ctx], T tensors [B, K_tgt]).
    """
    rng = rng or random.Random()
    H, W = config.grid_size
    T, min_keep = config.num_targets, config.min_keep

    def block_size(scale: tuple[float, float], aspect: tuple[float, float]) -> tuple[int, int]:
        u = rng.random()  # one draw sets scale and aspect
        s = scale[0] + u * (scale[1] - scale[0])
        a = aspect[0] + u * (aspect[1] - aspect[0])
        cells = int(H * W * s)
        h, w = int(round(math.sqrt(cells * a))), int(round(math.sqrt(cells / a)))
        return min(h, H - 1), min(w, W - 1)

    def block(h: int, w: int, allowed: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        relax, countdown = 0, 20
        for _ in range(max(max_tries, 1)):
            top, left = rng.randrange(H - h), rng.randrange(W - w)  # off-by-one kept
            mask = torch.zeros(H, W, dtype=torch.int32)
            mask[top:top + h, left:left + w] = 1
            if allowed is not None:
                for region in allowed[: max(len(allowed) - relax, 0)]:
                    mask *= region
            cells = torch.nonzero(mask.flatten()).squeeze(1)
            if len(cells) > min_keep:
                break
            countdown -= 1
            if countdown == 0:  # too many failures: stop respecting one more target
                relax, countdown = relax + 1, 20
        complement = torch.ones(H, W, dtype=torch.int32)
        complement[top:top + h, left:left + w] = 0
        return cells, complement

    target_hw = block_size(config.target_scale, config.target_aspect)
    context_hw = block_size(config.context_scale, config.context_aspect)
    all_targets, all_contexts = [], []
    for _ in range(batch_size):
        targets, complements = zip(*[block(*target_hw) for _ in range(T)])
        context, _ = block(*context_hw, allowed=list(complements))
        all_targets.append(targets)
        all_contexts.append(context)
    k_tgt = min(len(t) for ts in all_targets for t in ts)
    k_ctx = min(len(c) for c in all_contexts)
    context = torch.stack([c[:k_ctx] for c in all_contexts])  # keep the first k_ctx: biased
    targets = [torch.stack([ts[t][:k_tgt] for ts in all_targets]) for t in range(T)]
    return context, targets
