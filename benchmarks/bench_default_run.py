"""The default CPU run's speed, this checkout against another one, side by side.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_default_run.py --before /tmp/before [--steps 300] [--rounds 2]

Runs `python -m jepa_lite train --steps N` with every default (the way a learner or a script runs it)
from each checkout in turn, `rounds` times, alternating so that machine noise hits both alike, and
prints each run's images per second: the mean of the metrics records after the first (start-up
excluded) and the wall time of the whole command. Only img/s is compared: the two checkouts may
differ in how many processes a default run uses.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def one_run(checkout: Path, steps: int, out: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jepa_lite", "train", "--steps", str(steps), "--log-every", "50",
                    "--out", str(out), "--no-resume", "--quiet"], env=env, check=True, cwd=checkout,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    records = json.loads((out / "metrics.json").read_text())[1:]
    return statistics.mean(r["images_per_second"] for r in records), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": HERE}
    speeds: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, checkout in checkouts.items():
                speed, wall = one_run(checkout, args.steps, Path(tmp) / f"{name}{round_}")
                speeds[name].append(speed)
                print(f"round {round_ + 1} {name:6s} {speed:6.0f} img/s   {wall:5.0f} s wall", flush=True)
    for name, values in speeds.items():
        print(f"{name:6s} median {statistics.median(values):6.0f} img/s")
    print(f"after / before: {statistics.median(speeds['after']) / statistics.median(speeds['before']):.2f}")


if __name__ == "__main__":
    main()
