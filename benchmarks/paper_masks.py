"""`--recipe paper`'s masks on the reference's own grid (224 px, patch 16: 14x14) against a sampler
written the way the I-JEPA reference collator works (mask_coverage.sample_reference_style, faults kept).

    python benchmarks/paper_masks.py [--batches 40] [--batch-size 128]

Prints, for both (and for the paper recipe with its declared placement deviation undone,
`--mask placement=reference`): the mean context tokens per image (after the batch's cut to its shortest row, what
the context encoder sees), the mean target tokens per block, and the share of images whose context
(or targets) reach the last row / the last column. Batches of 128 are the reference config's batch
per GPU (its collator masks each GPU's batch). tests/test_paper_recipe.py checks the same figures.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
from jepa_lite.core.mask_coverage import sample_reference_style
from jepa_lite.core.masks import MaskConfig, MaskSampler
from jepa_lite.engine.build import configs_for
from jepa_lite.engine.config import TrainConfig

# facebookresearch/ijepa, configs/in1k_vith14_ep300.yaml (mask:), on a 14 x 14 grid
REFERENCE_MASKS = MaskConfig(grid_size=(14, 14), num_targets=4, target_scale=(0.15, 0.2),
                             target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0),
                             min_keep=10, floor_tokens=True)


def paper_mask_config(image_size: int = 224, patch_size: int = 16) -> MaskConfig:
    """The mask config `jepa-lite train --recipe paper --image-size 224 --patch-size 16` builds."""
    config = TrainConfig(recipe="paper", image_size=image_size, patch_size=patch_size, steps=1).resolve()
    return configs_for(config, image_size)[2]


def mask_stats(batches: list[tuple[torch.Tensor, torch.Tensor]], grid: tuple[int, int]) -> dict[str, float]:
    """batches: (context [B, K_ctx], targets [B, T, K_tgt]) -> the figures above."""
    H, W = grid
    ctx_tokens, tgt_tokens, rows = [], [], {k: [] for k in ("ctx_last_row", "ctx_last_col", "tgt_last_row",
                                                             "tgt_last_col")}
    for context, targets in batches:
        ctx_tokens.append(float(context.shape[1]))
        tgt_tokens.append(float(targets.shape[-1]))
        for name, cells in (("ctx", context), ("tgt", targets.flatten(1))):
            rows[f"{name}_last_row"].append((cells // W == H - 1).any(1).float().mean())
            rows[f"{name}_last_col"].append((cells % W == W - 1).any(1).float().mean())
    stats = {"context_tokens": sum(ctx_tokens) / len(ctx_tokens), "target_tokens": sum(tgt_tokens) / len(tgt_tokens)}
    stats.update({k: float(torch.stack(v).mean()) for k, v in rows.items()})
    return stats


def sample_ours(config: MaskConfig, batches: int, batch_size: int, seed: int = 0) -> dict[str, float]:
    sampler, g = MaskSampler(config), torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        m = sampler(batch_size, generator=g)
        out.append((m.context_indices, m.target_indices))
    return mask_stats(out, config.grid_size)


def sample_reference(config: MaskConfig, batches: int, batch_size: int, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    out = []
    for _ in range(batches):
        context, targets = sample_reference_style(config, batch_size, rng)
        out.append((context, torch.stack(targets, 1)))
    return mask_stats(out, config.grid_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paper = paper_mask_config()
    print(f"--recipe paper on 14x14: {paper}")
    ours = sample_ours(paper, args.batches, args.batch_size)
    undone = sample_ours(replace(paper, placement="reference"), args.batches, args.batch_size)
    ref = sample_reference(REFERENCE_MASKS, args.batches, args.batch_size)
    print(f"{args.batches} batches of {args.batch_size}")
    print(f"{'':18s}{'paper recipe':>14s}{'placement=reference':>21s}{'reference-style':>17s}")
    for name in ours:
        print(f"{name:18s}{ours[name]:14.3f}{undone[name]:21.3f}{ref[name]:17.3f}")


if __name__ == "__main__":
    main()
