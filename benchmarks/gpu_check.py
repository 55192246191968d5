"""GPU throughput check: CIFAR-shaped batches (random uint8, no download), full training steps
(augmentation, masks, forward, backward, AdamW, EMA) with bf16 autocast, eager and compiled.

    python benchmarks/gpu_check.py [--models small base] [--batch-size 512] [--steps 50]

Prints img/s per model and mode. Runs on CPU too (slowly), so it can be checked anywhere.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from jepa_lite.data.images import ImageDataset
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer


def measure(model: str, batch_size: int, steps: int, compile_model: bool, device: str) -> float:
    n = batch_size * 4
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                        labels=torch.randint(0, 10, (n,), generator=g), classes=[str(i) for i in range(10)])
    config = TrainConfig(model=model, batch_size=batch_size, steps=10 ** 6, device=device, amp="auto",
                         compile=compile_model, log_every=10 ** 6)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, dataset=data, progress=False, log=lambda *a: None)
        for step in range(5):                       # warm-up (and compilation)
            trainer.train_step(step, config.steps)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(5, 5 + steps):
            result = trainer.train_step(step, config.steps)
        result["loss"].item()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["small", "base"])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    for model in args.models:
        for compiled in (False, True):
            ips = measure(model, args.batch_size, args.steps, compiled, args.device)
            mode = "compiled" if compiled else "eager"
            print(f"{model:<8} B={args.batch_size} {mode:<9} {ips:>9.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
