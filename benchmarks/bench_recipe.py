"""How fast does a recipe learn the shapes? One run of a TrainConfig (with any overrides), probed at marks.

    python benchmarks/bench_recipe.py --data shapes-mono --marks 500,1000,1500
    python benchmarks/bench_recipe.py --data shapes-mono --set lr=3e-3 --set ema_end=0.99 --marks 1000,2000
    python benchmarks/bench_recipe.py --set 'mask={"num_targets": 2}' --threads 2 --marks 800

Every --set is NAME=VALUE for a TrainConfig field (VALUE as JSON where it parses, else a string).
The run is one process with --threads threads; at each mark it pauses (the schedules are those of a
run of the last mark's length) and probes the target encoder's frozen features (average-pooled
tokens of the last 4 blocks, as `jepa-lite probe` reads them): linear probe, kNN, their gap, and
the share of each test image's 10 nearest training images (cosine) that have its class. It prints
the training minutes so far and steps per second, so two recipes run side by side (one thread
each) compare in steps, and the steps per second say what a budget buys.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing
from jepa_lite.data.datasets import load_dataset
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer
from jepa_lite.evaluation.probes import extract_features, knn_probe, linear_probe, raw_pixel_features


def parse_set(items: list[str]) -> dict:
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes NAME=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def neighbour_share(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    k: int = 10) -> float:
    """Mean share of each test point's k nearest training points (cosine) with its class."""
    a, b = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    nearest = (b @ a.T).topk(k, dim=1).indices
    return (train_y[nearest] == test_y[:, None]).float().mean().item()


def probe(encoder, train, test, layers: int) -> dict:
    train_x = extract_features(encoder, train.images, layers=layers)
    test_x = extract_features(encoder, test.images, layers=layers)
    linear = linear_probe(train_x, train.labels, test_x, test.labels)["accuracy"]
    knn = knn_probe(train_x, train.labels, test_x, test.labels)["accuracy"]
    return {"linear": linear, "knn": knn, "share10": neighbour_share(train_x, train.labels, test_x, test.labels)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="shapes-mono")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--marks", default="500,1000,1500")
    parser.add_argument("--probe-train", type=int, default=5000)
    parser.add_argument("--probe-test", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--label", default="")
    parser.add_argument("--pixels", action="store_true", help="also probe raw pixels")
    args = parser.parse_args(argv)
    marks = [int(m) for m in args.marks.split(",")]
    torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    config = TrainConfig(data=args.data, model=args.model, steps=marks[-1], log_every=min(marks),
                         checkpoint_every_minutes=10 ** 6, max_train_images=50_000, **overrides).resolve()
    train = load_dataset(args.data, "train", image_size=config.image_size, max_images=args.probe_train)
    test = load_dataset(args.data, "test", image_size=config.image_size, max_images=args.probe_test)
    label = args.label or " ".join(args.set) or "defaults"
    print(f"[{label}] {args.data} {args.model} B={config.batch_size} lr={config.lr} ema={config.ema_end} "
          f"patch={config.patch_size} threads={args.threads}", flush=True)
    if args.pixels:
        px_tr, px_te = raw_pixel_features(train.images), raw_pixel_features(test.images)
        linear = linear_probe(px_tr, train.labels, px_te, test.labels)["accuracy"]
        knn = knn_probe(px_tr, train.labels, px_te, test.labels)["accuracy"]
        print(f"[{label}] raw pixels: linear {100 * linear:.1f} kNN {100 * knn:.1f} "
              f"share10 {100 * neighbour_share(px_tr, train.labels, px_te, test.labels):.1f}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, resume=False, progress=False, log=lambda *a: None)
        seconds = 0.0
        first = probe(trainer.model.target_encoder, train, test, args.layers)
        print(f"[{label}] step 0: linear {100 * first['linear']:.1f} kNN {100 * first['knn']:.1f}", flush=True)
        for mark in marks:
            start = time.perf_counter()
            trainer.run(until_step=mark)
            seconds += time.perf_counter() - start
            r = probe(trainer.model.target_encoder, train, test, args.layers)
            print(f"[{label}] step {mark:>5} {seconds / 60:5.1f} min {mark / seconds:5.2f} steps/s  "
                  f"linear {100 * r['linear']:5.1f}  kNN {100 * r['knn']:5.1f}  "
                  f"gap {100 * (r['linear'] - r['knn']):5.1f}"
                  f"  share10 {100 * r['share10']:5.1f}  loss {trainer.history[-1]['loss']:.4f}", flush=True)


if __name__ == "__main__":
    main()
