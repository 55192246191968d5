"""What the evaluation costs: the linear probe, the kNN vote and UMAP, on the CPU, by probe size.

On a GPU the encoders' forward passes take seconds; the probes run on the CPU (scikit-learn, one
BLAS thread; UMAP with one job) and take the rest of notebooks 04, 06 and 08. This prints, for each
training-set size, what `linear_probe` (C picked on a held-out tenth, then refit), `knn_probe` and
`umap_embed` take on features shaped like notebook 06's: a random-init `small` encoder's last 4
blocks (512 numbers) and raw pixels (3,072), on the data given.

    python benchmarks/bench_probe_cost.py --data imagefolder:/tmp/cifar10/train --sizes 5000 10000 20000

(the CIFAR-10 training images as a JPEG folder; `--data shapes` needs no files). The images are
shuffled once; the training sets are the first N, the test set the `--test` after the largest, which
is enough to time the probes; the accuracies printed are random-init features' and only show the
probe is doing its work.
"""
from __future__ import annotations

import argparse
import time

import torch

from jepa_lite.core.model_sizes import model_configs
from jepa_lite.core.models import VisionTransformer
from jepa_lite.data.datasets import load_dataset
from jepa_lite.evaluation.probes import extract_features, knn_probe, linear_probe, raw_pixel_features, umap_embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--umap-points", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--candidates", type=float, nargs="+", default=None,
                        help="only time linear_probe with this fixed C (default: pick C as the course does)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    biggest = max(args.sizes)
    dataset = load_dataset(args.data, "train", root=args.data_root)   # all of it: a folder lists class by class
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    images, labels = dataset.images[order], dataset.labels[order]
    train_images, train_labels = images[:biggest], labels[:biggest]
    test_images, test_labels = images[biggest:biggest + args.test], labels[biggest:biggest + args.test]
    print(f"{args.data}: {len(train_images)} train / {len(test_images)} test images, "
          f"{tuple(images.shape[1:])}, torch {torch.__version__}")

    encoder_config, _ = model_configs("small", image_size=images.shape[-1])
    encoder = VisionTransformer(encoder_config)
    layers = min(4, len(encoder.blocks))
    start = time.perf_counter()
    feats = {"random init (last 4 blocks)": (extract_features(encoder, train_images, layers=layers),
                                             extract_features(encoder, test_images, layers=layers)),
             "raw pixels": (raw_pixel_features(train_images), raw_pixel_features(test_images))}
    print(f"features in {time.perf_counter() - start:.1f} s")

    print(f"\n{'features':28s} {'dims':>5s} {'train':>6s}   {'linear s':>8s} {'C':>5s} {'acc %':>6s}   "
          f"{'kNN s':>6s} {'acc %':>6s}")
    for name, (train_x, test_x) in feats.items():
        for n in args.sizes:
            linear = linear_probe(train_x[:n], train_labels[:n], test_x, test_labels,
                                  C=args.candidates[0] if args.candidates else None)
            knn = knn_probe(train_x[:n], train_labels[:n], test_x, test_labels)
            print(f"{name:28s} {train_x.shape[1]:5d} {n:6d}   {linear['seconds']:8.1f} {linear['C']:5g} "
                  f"{100 * linear['accuracy']:6.1f}   {knn['seconds']:6.1f} {100 * knn['accuracy']:6.1f}", flush=True)

    test_x = feats["random init (last 4 blocks)"][1]
    for points in args.umap_points:
        start = time.perf_counter()
        umap_embed(test_x[:points], seed=0)
        print(f"UMAP of {points} points ({test_x.shape[1]} dims): {time.perf_counter() - start:.1f} s "
              f"(the first call includes numba's compilation)", flush=True)


if __name__ == "__main__":
    main()
