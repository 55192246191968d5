"""Notebook 11's motion probe, outside the notebook: train a video JEPA on moving shapes with the engine,
then fit the linear motion probe on clip features (time steps in order) for the trained encoder, its random
init and the shipped image encoder (frames averaged and in order), tested on held-out clips and their
reverses. Prints one table row per encoder.

    python benchmarks/bench_video_motion.py --data moving-shapes-mono --steps 1000
    python benchmarks/bench_video_motion.py --data moving-shapes --steps 1000 --image-checkpoint data/shapes_tiny.pt
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from jepa_lite.data.datasets import load_dataset
from jepa_lite.engine.build import build_encoder
from jepa_lite.engine.checkpoint import jepa_from_checkpoint, load_checkpoint
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import train
from jepa_lite.evaluation.probes import clip_features, linear_probe


def probe_rows(encoders: dict, fit, test) -> dict:
    """name -> (motion, pair, direction) accuracies of a linear probe on each encoder's clip features."""
    test_clips = torch.cat([test.clips, test.reversed().clips])
    labels = torch.cat([test.motion_labels, test.motion_labels ^ 1])
    rows = {}
    for name, (encoder, in_order) in encoders.items():
        fit_x = clip_features(encoder, fit.clips, in_order=in_order)
        test_x = clip_features(encoder, test_clips, in_order=in_order)
        predicted = torch.as_tensor(linear_probe(fit_x, fit.motion_labels, test_x, labels)["predictions"])
        pair = predicted // 2 == labels // 2
        rows[name] = ((predicted == labels).float().mean().item(), pair.float().mean().item(),
                      (predicted == labels)[pair].float().mean().item())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="moving-shapes-mono", choices=["moving-shapes", "moving-shapes-mono"])
    parser.add_argument("--model", default="video-tiny")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--train-clips", type=int, default=10_000)
    parser.add_argument("--probe-train", type=int, default=3_000)
    parser.add_argument("--probe-test", type=int, default=2_000)
    parser.add_argument("--image-checkpoint", default="data/shapes_mono_tiny.pt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    clips = load_dataset(args.data, "train", max_images=args.train_clips)
    held_out = load_dataset(args.data, "test", max_images=args.probe_train + args.probe_test)
    fit, test = held_out.subset(slice(0, args.probe_train)), held_out.subset(slice(args.probe_train, None))
    config = TrainConfig(data=args.data, model=args.model, steps=args.steps, seed=args.seed, log_every=100)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = train(config, out, dataset=clips, resume=False, log=lambda *a: None)
    minutes = (time.perf_counter() - start) / 60
    torch.manual_seed(args.seed)
    image = jepa_from_checkpoint(load_checkpoint(args.image_checkpoint)).target_encoder.eval()
    encoders = {"video JEPA": (run.model.target_encoder, True),
                "random init (video)": (build_encoder(run.model.target_encoder.config), True),
                "image encoder, frames averaged": (image, False), "image encoder, frames in order": (image, True)}
    rows = probe_rows(encoders, fit, test)
    n = 2 * len(test)
    print(f"{args.data}, {args.model}, {args.steps} steps in {minutes:.1f} min (batch {config.resolve().batch_size}); "
          f"probe fitted on {len(fit)} clips, tested on {n} (test clips and reverses); one standard error near 50%: "
          f"{100 * math.sqrt(0.25 / n):.1f} points; image encoder {args.image_checkpoint}")
    print(f"| {'encoder':32s} | motion (6) | pair (3) | direction (2) |")
    print("|---|---|---|---|")
    for name, (motion, pair, direction) in rows.items():
        print(f"| {name:32s} | {motion:.1%} | {pair:.1%} | {direction:.1%} |")


if __name__ == "__main__":
    main()
