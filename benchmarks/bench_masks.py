"""Speed of the vectorized MaskSampler against a reference-style per-image loop.

    python benchmarks/bench_masks.py

Runs single-threaded (as in a DataLoader worker, where torch uses one thread). Reports the
median over several timed repeats after a warm-up.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
from jepa_lite.core.mask_coverage import sample_reference_style
from jepa_lite.core.masks import MaskConfig, MaskSampler


def seconds_per_call(fn: Callable[[], object], calls: int, repeats: int = 5, warmup: int = 2) -> float:
    """Median over `repeats` of the mean time of `calls` back-to-back calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def measure(grid: int, batch_size: int) -> tuple[float, float]:
    """(ours, reference-style) seconds per batch for the paper's multi-block config."""
    config = MaskConfig(grid_size=grid)  # paper: 4 targets of 15-20%, context 85-100%
    sampler, g, rng = MaskSampler(config), torch.Generator().manual_seed(0), random.Random(0)
    ours = seconds_per_call(lambda: sampler(batch_size, g), calls=50)
    ref = seconds_per_call(lambda: sample_reference_style(config, batch_size, rng), calls=2)
    return ours, ref


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, multi-block paper config (MaskConfig defaults)")
    results = {(grid, B): measure(grid, B) for grid, B in [(8, 256), (8, 128), (14, 128), (14, 256)]}
    ours, ref = results[(8, 256)]
    print(f"8x8, B=256: MaskSampler {1 / ours:.0f} batches/s | reference-style loop "
          f"{1 / ref:.1f} batches/s | speed-up {ref / ours:.0f}x (target >= 20x)")
    print(f"{'grid':>6} {'B':>4} {'ours ms/batch':>14} {'loop ms/batch':>14} {'speed-up':>9}")
    for (grid, B), (ours, ref) in sorted(results.items()):
        print(f"{grid:>3}x{grid:<2} {B:>4} {ours * 1e3:14.3f} {ref * 1e3:14.2f} {ref / ours:8.0f}x")


if __name__ == "__main__":
    main()
