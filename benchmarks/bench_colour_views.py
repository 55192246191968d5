"""Does the target encoder file images by colour or by shape? One recipe knob, `colour_views`, and one
data change, the same images in one palette (`shapes-mono`).

    python benchmarks/bench_colour_views.py                       # 3 runs x 1500 steps on shapes (~25 min on 2 cores)
    python benchmarks/bench_colour_views.py --variants same,mono  # the same images in colour and in one palette
    python benchmarks/bench_colour_views.py --checkpoints colour=data/shapes_tiny.pt mono=data/shapes_mono_tiny.pt
    python benchmarks/bench_colour_views.py --steps 200 --probe-train 1000 --probe-test 500   # a smoke run
    python benchmarks/bench_colour_views.py --checkpoints shipped=data/shapes_tiny.pt --readouts

In the procedural shapes images every colour is drawn independently of the class, yet a hidden
block's colour is among the easiest things to predict from the visible ones. With
`colour_views="same"` (the paper: both encoders see the same picture) the target encoder's plain
distances follow colour, which the kNN vote and UMAP read; with "target" the target encoder sees
the picture with its colours scrambled (jepa_lite.data.augment.scramble_colours), so colour stops being
predictable; "both" scrambles each encoder's view independently; "mono" keeps the paper's views
and changes the data instead: `shapes-mono` draws the same images in one grey palette.

For each variant it trains one run of the recipe defaults with that knob (one process, one thread
per run, the runs side by side) or loads the given checkpoints, then prints, for the target
encoder's average-pooled tokens of the last 4 blocks (as `jepa-lite probe` reads them): the linear
and kNN probes, the share of the 20 nearest neighbours with the query's class, how far their shape
colour is from the query's (as a fraction of a random image's: 1.0 = colour plays no part), the
embedding spread (std), and RankMe. With --readouts it also tries other ways of reading the same
frozen tokens with the kNN vote (pooling by mean, by standard deviation over tokens, both, a
saliency-weighted mean, and PCA-whitened pooled features): do they close the kNN gap without retraining?
Two more columns say where the features' variance goes: the share between the class means, and the
share a quadratic function of the shape's and the background's mean colours predicts (fitted on the
probe's training images, measured on its test images). Each run is probed on the data it trained on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))    # run from a checkout without installing
from jepa_lite.core.objective import embedding_std, rankme
from jepa_lite.data.augment import COLOUR_VIEWS
from jepa_lite.data.datasets import load_dataset, normalize
from jepa_lite.engine.checkpoint import jepa_from_checkpoint, load_checkpoint
from jepa_lite.evaluation.probes import (
    extract_features,
    knn_probe,
    last_layer_outputs,
    linear_probe,
    object_and_background_colours,
    variance_shares,
)

VARIANTS = COLOUR_VIEWS + ("mono",)


def train_runs(variants: list[str], steps: int, out: Path) -> dict[str, Path]:
    """One `jepa-lite train` per variant, all at once, one thread each ("mono": colour_views "same" on
    shapes-mono)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs, procs = {}, []
    for variant in variants:
        runs[variant] = out / variant
        data, views = ("shapes-mono", "same") if variant == "mono" else ("shapes", variant)
        command = [sys.executable, "-m", "jepa_lite.cli", "train", "--data", data, "--steps", str(steps),
                   "--colour-views", views, "--out", str(runs[variant]), "--no-resume", "--quiet"]
        procs.append((variant, subprocess.Popen(command, env=env, cwd=ROOT)))
    for variant, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"the {variant!r} run failed (exit {proc.returncode})")
    return {v: p / "checkpoint.pt" for v, p in runs.items()}


def neighbour_colour(train_x, test_x, train, test, k: int = 20) -> tuple[float, float]:
    """(share of the k nearest training images with the query's class, their mean shape-colour
    distance to the query / that of k random training images)."""
    train_c, test_c = (object_and_background_colours(data)[:, :3] for data in (train, test))   # the shape's RGB
    nearest = (F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T).topk(k, dim=1).indices
    same = (train.labels[nearest] == test.labels[:, None]).float().mean().item()
    random_pick = torch.randint(0, len(train_x), nearest.shape, generator=torch.Generator().manual_seed(0))
    near = (train_c[nearest] - test_c[:, None]).norm(dim=-1).mean()
    far = (train_c[random_pick] - test_c[:, None]).norm(dim=-1).mean()
    return same, (near / far).item()


@torch.no_grad()
def readouts(encoder, layers: int, train, test) -> None:
    """kNN accuracy of other read-outs of the same frozen tokens (last `layers` blocks, concatenated)."""
    def tokens(images):
        return torch.cat([torch.cat(last_layer_outputs(encoder, normalize(images[i:i + 256]), layers=layers), -1)
                          for i in range(0, len(images), 256)])                    # [N, tokens, layers * D]

    def saliency(t):           # tokens far from the image's mean token (the object, not the background) weigh more
        far = (t - t.mean(1, keepdim=True)).norm(dim=-1)
        weights = torch.softmax(far / far.std(1, keepdim=True).clamp_min(1e-6), dim=1)
        return (weights.unsqueeze(-1) * t).sum(1)

    def whitened(a, b, k=64):  # PCA on the training features, each of the first k directions scaled to unit variance
        mean = a.mean(0)
        _, s, v = torch.linalg.svd(a - mean, full_matrices=False)
        w = v[:k].T / (s[:k] / len(a) ** 0.5)
        return (a - mean) @ w, (b - mean) @ w

    train_t, test_t = tokens(train.images), tokens(test.images)
    pooled = {"mean": lambda t: t.mean(1), "std over tokens": lambda t: t.std(1),
              "mean + std": lambda t: torch.cat([t.mean(1), t.std(1)], -1), "saliency-weighted mean": saliency}
    for name, pool in pooled.items():
        accuracy = knn_probe(pool(train_t), train.labels, pool(test_t), test.labels)["accuracy"]
        print(f"  kNN on {name:24s} {100 * accuracy:5.1f}%")
    a, b = whitened(train_t.mean(1), test_t.mean(1))
    accuracy = knn_probe(a, train.labels, b, test.labels)["accuracy"]
    print(f"  kNN on {'PCA-whitened mean (64)':24s} {100 * accuracy:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--variants", default=",".join(COLOUR_VIEWS), help=f"comma-separated, of {VARIANTS}")
    parser.add_argument("--checkpoints", nargs="*", default=None, metavar="NAME=PATH",
                        help="probe these checkpoints instead of training")
    parser.add_argument("--probe-train", type=int, default=5000)
    parser.add_argument("--probe-test", type=int, default=2000)
    parser.add_argument("--readouts", action="store_true", help="also try other read-outs of the frozen tokens")
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        if args.checkpoints:
            paths = dict(item.split("=", 1) for item in args.checkpoints)
        else:
            variants = args.variants.split(",")
            bad = [v for v in variants if v not in VARIANTS]
            if bad:
                raise SystemExit(f"--variants: unknown {bad}; valid: {VARIANTS}")
            paths = train_runs(variants, args.steps, Path(args.out or scratch))
        probe_data = {}
        print(f"probe: {args.probe_train} train / {args.probe_test} test images of each run's data; target encoder, "
              f"last 4 blocks pooled")
        print(f"{'run':10s} {'data':12s} {'steps':>6s} {'linear %':>9s} {'kNN %':>6s} {'gap':>5s} {'same class':>10s} "
              f"{'colour dist':>11s} {'std':>6s} {'RankMe':>6s} {'var: class':>10s} {'colours':>8s}")
        for name, path in paths.items():
            checkpoint = load_checkpoint(path)
            spec = checkpoint["data"]["spec"]
            if spec not in probe_data:
                probe_data[spec] = (load_dataset(spec, "train", max_images=args.probe_train),
                                    load_dataset(spec, "test", max_images=args.probe_test))
            train, test = probe_data[spec]
            encoder = jepa_from_checkpoint(checkpoint).target_encoder.eval()
            layers = min(4, checkpoint["encoder_config"]["depth"])
            tr = extract_features(encoder, train.images, layers=layers)
            te = extract_features(encoder, test.images, layers=layers)
            linear = 100 * linear_probe(tr, train.labels, te, test.labels)["accuracy"]
            knn = 100 * knn_probe(tr, train.labels, te, test.labels)["accuracy"]
            same, colour = neighbour_colour(tr, te, train, test)
            last = extract_features(encoder, test.images, layers=1)
            class_share, colour_share = variance_shares(tr, te, train, test)
            print(f"{name:10s} {spec:12s} {checkpoint['step']:6d} {linear:9.1f} {knn:6.1f} {linear - knn:5.1f} "
                  f"{100 * same:9.0f}% {colour:10.2f}x {embedding_std(last):6.3f} {rankme(last):6.1f} "
                  f"{100 * class_share:9.0f}% {100 * colour_share:7.0f}%")
            if args.readouts:
                readouts(encoder, layers, train, test)


if __name__ == "__main__":
    main()
