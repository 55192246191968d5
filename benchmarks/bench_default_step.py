"""The default training step's speed, and its share of this CPU's fp32 matmul peak.

    python benchmarks/bench_default_step.py                 # defaults vs the colour/lr 1.5e-3 defaults
    python benchmarks/bench_default_step.py --rounds 5 --steps 20

One process with every thread torch uses (the way notebook 05 and `jepa-lite train` run). Each named
configuration gets a Trainer; rounds alternate between them so that machine noise hits all alike.
Prints steps/s and img/s (median round), the FLOPs of one step (torch's FlopCounterMode: forward and
backward of the three networks), the GFLOP/s achieved, and that as a share of the fp32 matmul peak
measured here (a large square torch.mm with the same threads).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer

CONFIGS = {
    "default (shapes-mono, lr 3e-3)": {},
    "before (shapes, lr 1.5e-3)": {"data": "shapes", "lr": 1.5e-3},
}


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an fp32 [size, size] @ [size, size] product (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def step_flops(trainer: Trainer, steps: int = 5) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for step in range(steps):
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(step, 1000)
        total += counter.get_total_flops()
    return total / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    args = parser.parse_args(argv)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as scratch:
        trainers, flops, times = {}, {}, {}
        for name, overrides in CONFIGS.items():
            config = TrainConfig(steps=1000, max_train_images=20_000, **overrides)
            trainer = Trainer(config, Path(scratch) / str(len(trainers)), resume=False, progress=False,
                              log=lambda *a: None)
            flops[name] = step_flops(trainer)
            trainers[name], times[name] = trainer, []
        for round_ in range(args.rounds):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                for step in range(args.steps):
                    trainer.train_step(10 + round_ * args.steps + step, 1000)
                times[name].append((time.perf_counter() - start) / args.steps)
    print(f"{'configuration':<34}{'steps/s':>9}{'img/s':>8}{'GFLOP/step':>12}{'GFLOP/s':>9}{'of peak':>9}")
    for name, trainer in trainers.items():
        seconds = statistics.median(times[name])
        achieved = flops[name] / seconds / 1e9
        print(f"{name:<34}{1 / seconds:>9.2f}{trainer.config.batch_size / seconds:>8.0f}{flops[name] / 1e9:>12.2f}"
              f"{achieved:>9.1f}{achieved / peak:>9.0%}")


if __name__ == "__main__":
    main()
