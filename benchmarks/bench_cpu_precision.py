"""On a CPU, do torch.compile and bf16 autocast pay within a 5-minute run?

    python benchmarks/bench_cpu_precision.py                    # tiny and small, ~6 min on 2 cores
    python benchmarks/bench_cpu_precision.py --models tiny --steps 10

For each model size and each of fp32 / bf16 autocast, eager / torch.compile, it builds the real
Trainer (shapes, the default recipe, one process with every core as a thread), times the first
steps (which include compilation) and then `--steps` more, and prints the steady img/s, the
start-up seconds, and the steps a 5-minute budget would get (start-up included) relative to fp32
eager. It first prints whether the CPU has native bf16 instructions (AVX512-BF16 or AMX).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))    # run from a checkout without installing
from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 instruction sets, from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted({f for f in flags.split() if f in ("avx512_bf16", "amx_bf16", "amx_tile")})


def measure(model: str, amp: str, compile_model: bool, steps: int, dataset) -> tuple[float, float]:
    """(steady img/s, start-up seconds of the first 3 steps beyond their steady cost)."""
    config = TrainConfig(model=model, steps=10 ** 6, amp=amp, compile=compile_model, device="cpu",
                         log_every=10 ** 6, checkpoint_every_minutes=10 ** 6)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, dataset=dataset, progress=False, log=lambda *a: None)
        start = time.perf_counter()
        for step in range(3):
            trainer.train_step(step, config.steps)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for step in range(3, 3 + steps):
            trainer.train_step(step, config.steps)
        per_step = (time.perf_counter() - start) / steps
        batch = trainer.config.batch_size
    return batch / per_step, max(first - 3 * per_step, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    flags = cpu_bf16_flags()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16 on this CPU: "
          f"{'yes (' + ', '.join(flags) + ')' if flags else 'no (bf16 is emulated, expect it slower)'}")
    dataset = make_shapes(4096)
    budget = 300.0
    print(f"{'model':<7}{'amp':<6}{'compile':<9}{'img/s':>8}{'start-up s':>12}{'steps in 5 min':>16}"
          f"{'vs fp32 eager':>15}")
    for model in args.models:
        base = None
        for amp, compile_model in (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)):
            speed, startup = measure(model, amp, compile_model, args.steps, dataset)
            steps_in_budget = max(budget - startup, 0) * speed / 128
            base = base or steps_in_budget
            print(f"{model:<7}{amp:<6}{str(compile_model):<9}{speed:>8.0f}{startup:>12.1f}{steps_in_budget:>16.0f}"
                  f"{steps_in_budget / base:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
