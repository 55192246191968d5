"""Data-parallel CPU training: img/s of the default recipe with 1 process vs `workers` processes.

    python benchmarks/bench_workers.py [--steps 150] [--batch-sizes 128 256] [--model tiny]

Runs `jepa_lite.engine.train` (the real engine, shapes data, 32 px) for the same number of steps with
workers=1 (one process, all cores as OpenMP threads) and workers=N (N processes, one thread each
on 2 cores), and prints the steady-state img/s (the mean of the logged intervals after the first)
and the wall time including the helpers' start-up. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.distributed import usable_cpus
from jepa_lite.engine.train import train


def measure(workers: int, batch_size: int, steps: int, model: str, dataset) -> tuple[float, float]:
    config = TrainConfig(data="shapes", model=model, batch_size=batch_size, steps=steps, workers=workers,
                         log_every=max(steps // 6, 1), checkpoint_every_minutes=1e9)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train(config, out, dataset=dataset, progress=False, log=lambda *a: None)
    wall = time.perf_counter() - start
    speeds = [m["images_per_second"] for m in result.history[1:]]
    return sum(speeds) / len(speeds), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    dataset = make_shapes(20_000)
    print(f"{usable_cpus()} usable CPUs; model {args.model}; {args.steps} steps per run")
    print(f"{'batch':>6}{'workers':>9}{'img/s':>9}{'wall s':>9}{'speed-up':>10}")
    for batch_size in args.batch_sizes:
        base = None
        for workers in (1, args.workers):
            speed, wall = measure(workers, batch_size, args.steps, args.model, dataset)
            base = base or speed
            print(f"{batch_size:>6}{workers:>9}{speed:>9.0f}{wall:>9.1f}{speed / base:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
