"""Learning curve: how the probe grows with the number of pretraining steps.

    python benchmarks/bench_learning_curve.py              # shapes, 1300..10400 steps (~75 min on one thread)
    python benchmarks/bench_learning_curve.py --marks 200,400 --probe-train 1000 --probe-test 500   # a smoke run

One run of the recipe defaults (jepa_lite.engine.config.TrainConfig) in one process; at each mark it pauses,
keeps a copy of the checkpoint (stepN.pt) and probes the target and context encoders' frozen
features (linear; kNN for the target too; average-pooled tokens of the last 4 blocks, as
`jepa-lite probe` reads them). It ends with the FLOPs of one step and the GFLOP/s the run
achieved, which bound how many steps any implementation could fit into a budget on a given machine.

Why one run can stand for several budgets: after the 100-step warm-up the default schedules are
flat (constant lr, weight decay and EMA momentum), so the state after N steps of a long run is the
state a run of N steps would end in. On 2 cores with 2 data-parallel processes a 5-minute budget
does ~1300 steps of the default shapes recipe (docs/results.md), so the marks 1300, 2600, ... read as
5, 10, ... minutes there. This script trains in one process (`--threads`, default 1) and does not
need that speed; it counts steps.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing
from jepa_lite.data.datasets import load_dataset
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer
from jepa_lite.evaluation.probes import probe_encoders


def parse_marks(text: str) -> list[int]:
    try:
        marks = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"--marks must be comma-separated step counts, got {text!r}") from None
    if not marks or min(marks) < 1 or marks != sorted(set(marks)):
        raise SystemExit(f"--marks must be increasing step counts >= 1, got {text!r}")
    return marks


def flops_per_step(config: TrainConfig, dataset, steps: int = 20) -> float:
    """FLOPs of one training step (forward and backward of all three networks; torch's
    FlopCounterMode), averaged over `steps` steps since the mask sizes vary. A throwaway trainer
    does them, so the measured run is untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, scratch, dataset=dataset, resume=False, progress=False, log=lambda *a: None)
        total = 0
        for step in range(steps):
            with FlopCounterMode(display=False) as counter:
                trainer.train_step(step, config.steps)
            total += counter.get_total_flops()
    return total / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--model", default="tiny", help="a named size (jepa_lite.core.model_sizes.MODEL_SIZES)")
    parser.add_argument("--marks", default="1300,2600,3900,5200,6500,7800,9100,10400",
                        help="steps at which to probe")
    parser.add_argument("--probe-train", type=int, default=5000, help="probe training images")
    parser.add_argument("--probe-test", type=int, default=2000, help="probe test images")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/learning_curve")
    args = parser.parse_args(argv)
    marks = parse_marks(args.marks)
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)

    # a metrics record falls on every mark; checkpoints are saved at the marks instead of by the clock
    config = TrainConfig(data=args.data, data_root=args.data_root, model=args.model, steps=marks[-1],
                         log_every=math.gcd(100, *marks), checkpoint_every_minutes=10 ** 6).resolve()
    trainer = Trainer(config, out, resume=False, progress=False, log=lambda *a: None)
    probe_train = load_dataset(args.data, "train", root=args.data_root, max_images=args.probe_train)
    probe_test = load_dataset(args.data, "test", root=args.data_root, max_images=args.probe_test)
    print(f"{args.data}: recipe defaults, model {args.model}, B={config.batch_size}, {args.threads} thread(s); probe "
          f"{len(probe_train)}/{len(probe_test)} images, last {args.layers} blocks")
    print(f"{'steps':>6}{'train min':>11}{'target %':>10}{'context %':>11}{'target kNN %':>14}{'loss':>8}"
          f"{'share':>7}", flush=True)
    step_flops = flops_per_step(config, trainer.dataset)
    train_seconds = 0.0
    for mark in marks:
        start = time.perf_counter()
        trainer.run(until_step=mark)
        train_seconds += time.perf_counter() - start
        shutil.copy(trainer.checkpoint_path, out / f"step{mark}.pt")
        target, context = probe_encoders({"target": trainer.model.target_encoder,
                                          "context": trainer.model.context_encoder},
                                         probe_train, probe_test, layers=args.layers, include_pixels=False)
        last = trainer.history[-1]
        print(f"{mark:>6}{train_seconds / 60:>11.1f}{100 * target.linear:>10.1f}{100 * context.linear:>11.1f}"
              f"{100 * target.knn:>14.1f}{last['loss']:>8.4f}{last['target_image_share']:>7.2f}", flush=True)
    print(f"one step: {step_flops / 1e9:.2f} GFLOP ({step_flops / config.batch_size / 1e6:.0f} MFLOP per image); "
          f"achieved {step_flops * marks[-1] / train_seconds / 1e9:.1f} GFLOP/s over the run")


if __name__ == "__main__":
    main()
