"""Benchmark and sanity-check the data module: is "shapes" fast, not linear in pixels, but learnable?

    python benchmarks/bench_data.py            # ~3 min on 2 CPU cores
    python benchmarks/bench_data.py --quick    # ~1 min, smaller numbers (the CNN will not reach 95%)

Prints
  1. shapes generation speed (images/s at 32 and 64 px),
  2. batched augmentation speed,
  3. a raw-pixel linear probe (StandardScaler + LogisticRegression): should stay BELOW 50%,
  4. a small supervised CNN trained for a fixed wall-clock budget: should reach >= 95% test accuracy,
  5. optionally (--imagefolder PATH) the decode speed of an image folder.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing
from jepa_lite.data.augment import BatchAugment
from jepa_lite.data.datasets import iterate_batches, load_dataset, make_shapes, normalize


def bench_generation(num_images: int, repeats: int = 3) -> None:
    """Best of `repeats` timings (the best is the least disturbed by other processes on a shared machine).
    make_shapes renders with one intra-op thread whatever torch's setting (see make_shapes)."""
    make_shapes(512)                                                  # warm-up (allocator, noise bank)
    for size in (32, 64):
        n = num_images if size == 32 else num_images // 4
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            make_shapes(n, image_size=size, start_index=10_000)
            best = min(best, time.perf_counter() - t)
        print(f"  shapes {size:>2} px: {n / best:8.0f} images/s (best of {repeats} x {n})")


def bench_augment(batch_size: int = 256, repeats: int = 20) -> None:
    images = make_shapes(batch_size).images
    augment = BatchAugment()
    g = torch.Generator().manual_seed(0)
    augment(images, g)
    t = time.perf_counter()
    for _ in range(repeats):
        augment(images, g)
    print(f"  BatchAugment (crop + flip, 32 px, batch {batch_size}): "
          f"{batch_size * repeats / (time.perf_counter() - t):.0f} images/s")


def linear_probe(num_train: int, num_test: int) -> float:
    """Raw-pixel baseline: StandardScaler + multinomial logistic regression on normalised pixels.
    Reports the best test accuracy over a few regularisation strengths (generous to the baseline)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train = load_dataset("shapes", "train", max_images=num_train)
    test = load_dataset("shapes", "test", max_images=num_test)
    x_train, x_test = (normalize(d.images).flatten(1).numpy() for d in (train, test))
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    t, results = time.perf_counter(), []
    with threadpool_limits(torch.get_num_threads()), warnings.catch_warnings():   # same CPU budget as torch
        warnings.simplefilter("ignore", ConvergenceWarning)          # 200 lbfgs steps is plenty for a baseline
        for C in (1e-4, 1e-3, 1e-2):
            clf = LogisticRegression(C=C, max_iter=200, tol=1e-3).fit(x_train, y_train)
            results.append((clf.score(x_test, y_test), clf.score(x_train, y_train), C))
    acc, train_acc, C = max(results)
    print(f"  raw-pixel linear probe ({num_train} train / {num_test} test, best of C in 1e-4..1e-2: C={C:g}): "
          f"test accuracy {acc:.1%} (train {train_acc:.1%}; {time.perf_counter() - t:.0f} s)  [target < 50%]")
    return acc


class SmallCNN(nn.Module):
    """4 conv layers with max-pooling in between (32 -> 16 -> 8 -> 4 px), global average pool, linear head.
    Max-pooling (rather than strided convs) learns these shapes several times faster per sample."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(chans[i], chans[i + 1], k, padding=k // 2, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """uint8 images [N, 3, H, W] -> predicted labels [N]."""
    model.eval()
    preds = torch.cat([model(normalize(images[i:i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)])
    model.train()
    return preds


def train_cnn(seconds: float, num_train: int, num_test: int, width: int, lr: float = 3e-3,
              batch_size: int = 64) -> float:
    """Supervised CNN on shapes for a wall-clock budget; the learning rate follows a cosine over the
    budget (by elapsed time, so the schedule completes whatever the machine's speed)."""
    torch.manual_seed(0)
    train = load_dataset("shapes", "train", max_images=num_train)
    test = load_dataset("shapes", "test", max_images=num_test)
    model = SmallCNN(len(train.classes), width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    start, steps, seen, done = time.perf_counter(), 0, 0, False
    while not done:
        for images, labels in iterate_batches(train, batch_size, g):
            frac = (time.perf_counter() - start) / seconds
            if frac >= 1:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac)) * min(1.0, steps / 50)  # + short warm-up
            loss = F.cross_entropy(model(normalize(images)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps, seen = steps + 1, seen + len(images)
            if steps % 500 == 0:
                print(f"    step {steps:5d}  {time.perf_counter() - start:5.0f} s  loss {loss.item():.3f}", flush=True)
    train_time = time.perf_counter() - start
    correct = predict(model, test.images) == test.labels
    acc = correct.float().mean().item()
    per_class = [correct[test.labels == c].float().mean().item() for c in range(len(test.classes))]
    print(f"  supervised CNN (width {width}, {steps} steps x {batch_size} = {seen / len(train):.1f} epochs of "
          f"{len(train)}, {train_time:.0f} s): test accuracy {acc:.1%} on {len(test)}  [target >= 95%]")
    print("    per class: " + ", ".join(f"{name} {a:.0%}" for name, a in zip(test.classes, per_class)))
    return acc


def pick_threads() -> int:
    """The faster of 1 and torch's default number of CPU threads for a few CNN training steps.

    On an idle machine more threads win; on a shared, busy one every op waits at a barrier for its
    slowest thread, and one thread can be several times faster."""
    default = torch.get_num_threads()
    if default == 1:
        return 1
    model, x, y = SmallCNN(), torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    opt = torch.optim.Adam(model.parameters())
    speed = {}
    for threads in (default, 1, default):                              # default twice: warm-up, then measure
        torch.set_num_threads(threads)
        t = time.perf_counter()
        for _ in range(5):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        speed[threads] = 5 * 64 / (time.perf_counter() - t)
    best = max(speed, key=speed.get)
    torch.set_num_threads(best)
    print("  CNN training speed: " + ", ".join(f"{k} thread(s) {v:.0f} images/s" for k, v in speed.items())
          + f" -> using {best}")
    return best


def bench_imagefolder(path: str) -> None:
    with tempfile.TemporaryDirectory() as cache_root:
        for attempt in ("decode", "cached"):
            t = time.perf_counter()
            ds = load_dataset(f"imagefolder:{path}", "train", root=cache_root)
            dt = time.perf_counter() - t
            print(f"  imagefolder ({attempt}): {len(ds)} images, {ds.image_size} px, {len(ds.classes)} classes "
                  f"in {dt:.1f} s ({len(ds) / dt:.0f} images/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, ~1 minute")
    parser.add_argument("--cnn-seconds", type=float, default=None, help="CNN training budget (default 120, quick 30)")
    parser.add_argument("--cnn-width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the faster of 1 and torch's default)")
    parser.add_argument("--imagefolder", default=None, help="also time decoding this image folder")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: gen,augment,probe,cnn")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    q = args.quick
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU(s){load}")
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        pick_threads()
    t0 = time.perf_counter()
    if "gen" not in skip:
        print("generation:")
        bench_generation(5_000 if q else 10_000)
    if "augment" not in skip:
        print("augmentation:")
        bench_augment()
    if "probe" not in skip:
        print("learnability:")
        linear_probe(*((3_000, 1_000) if q else (10_000, 2_000)))
    if "cnn" not in skip:
        seconds = args.cnn_seconds or (30 if q else 120)
        train_cnn(seconds, *((10_000, 2_000) if q else (50_000, 10_000)), width=args.cnn_width)
    if args.imagefolder:
        print("image folder:")
        bench_imagefolder(args.imagefolder)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
