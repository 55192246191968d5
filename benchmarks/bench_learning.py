"""Learning per minute: pretrain for a time budget, then probe; prints the table and figures.

    python benchmarks/bench_learning.py --data shapes --minutes 5
    python benchmarks/bench_learning.py --data imagefolder:/tmp/cifar10split --minutes 10

The same as `jepa-lite train ... && jepa-lite probe ...` with the recipe defaults of
jepa_lite.engine.config.TrainConfig; extra arguments after `--` go to `jepa-lite train`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jepa_lite.cli import main as cli


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", default="runs/bench_learning")
    parser.add_argument("--layers", type=int, default=None, help="probe readout (default: the CLI's)")
    parser.add_argument("--max-train-images", type=int, default=None, help="probe training images")
    parser.add_argument("--max-test-images", type=int, default=None)
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    start = time.perf_counter()
    code = cli(["train", "--data", args.data, "--budget-minutes", str(args.minutes), "--out", str(out),
                "--no-resume", "--quiet", *extra])
    if code:
        sys.exit(code)
    train_seconds = time.perf_counter() - start
    probe_args = ["probe", "--checkpoint", str(out)]
    for flag, value in (("--layers", args.layers), ("--max-train-images", args.max_train_images),
                        ("--max-test-images", args.max_test_images)):
        if value is not None:
            probe_args += [flag, str(value)]
    if cli(probe_args):
        sys.exit(1)
    table = {row["name"]: row for row in json.loads((out / "probe.json").read_text())["rows"]}
    metrics = json.loads((out / "metrics.json").read_text())
    speed = sum(m["images_per_second"] for m in metrics[1:]) / max(len(metrics) - 1, 1)
    target, random_init, pixels = (table[k]["linear"] for k in ("target encoder", "random init", "raw pixels"))
    print(f"\ndata {args.data}, {args.minutes} min budget ({train_seconds / 60:.1f} min wall incl. loading), "
          f"{metrics[-1]['step']} steps, ~{speed:.0f} img/s")
    print(f"target encoder linear {100 * target:.1f}% | random init {100 * random_init:.1f}% "
          f"({100 * (target - random_init):+.1f}) | raw pixels {100 * pixels:.1f}% ({100 * (target - pixels):+.1f})")


if __name__ == "__main__":
    run()
