"""How far does the course's ViT get on shapes WITH labels, in as many steps as a 5-minute JEPA run?

    python benchmarks/bench_supervised_vit.py                 # 1400 steps, ~8 min on one CPU thread
    python benchmarks/bench_supervised_vit.py --steps 300     # quicker, smaller numbers

A JEPA run never sees a label, so the same network trained end to end on the labels, with the
same batch size, crops and number of steps, is an upper bound for what a linear probe on its
features can reach at that budget (with a margin: a supervised run optimises exactly the probed
quantity). Prints the end-to-end test accuracy and the linear probe on the frozen features,
read as `jepa-lite probe` reads a JEPA encoder (average-pooled tokens, last 1 and last 4 blocks).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing
from jepa_lite.core.model_sizes import model_configs
from jepa_lite.core.models import VisionTransformer
from jepa_lite.data.augment import BatchAugment
from jepa_lite.data.datasets import iterate_batches, load_dataset, normalize
from jepa_lite.engine.config import DATA_DEFAULTS, TrainConfig
from jepa_lite.evaluation.probes import extract_features, linear_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1400,
                        help="1400 ~ a 5-minute JEPA run on 2 cores (docs/results.md)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    defaults, recipe = DATA_DEFAULTS["shapes"], TrainConfig(steps=1).resolve()
    batch_size = defaults["batch_size"]
    train = load_dataset("shapes", "train")
    test = load_dataset("shapes", "test", max_images=2000)
    encoder_config, _ = model_configs(args.model, image_size=32, patch_size=4)
    encoder = VisionTransformer(encoder_config)
    head = nn.Linear(encoder_config.embed_dim, len(train.classes))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=recipe.lr, weight_decay=0.05)
    augment = BatchAugment(crop_scale=defaults["crop_scale"], hflip=True)     # the JEPA run's crops
    generator = torch.Generator().manual_seed(0)
    print(f"supervised ViT {args.model!r} on shapes: {args.steps} steps x {batch_size}, lr {recipe.lr} "
          f"(warm-up {recipe.warmup_steps}, cosine), crops {defaults['crop_scale']}, {args.threads} thread(s)")
    start, step = time.perf_counter(), 0
    while step < args.steps:
        for images, labels in iterate_batches(train, batch_size, generator):
            if step >= args.steps:
                break
            warmup = min(1.0, (step + 1) / recipe.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * warmup * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            loss = F.cross_entropy(head(encoder(augment(images, generator)).mean(dim=1)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 200 == 0:
                print(f"  step {step:5d}  {time.perf_counter() - start:5.0f} s  loss {loss.item():.3f}", flush=True)
    seconds = time.perf_counter() - start
    encoder.eval()
    with torch.no_grad():
        predicted = torch.cat([head(encoder(normalize(chunk)).mean(dim=1)).argmax(dim=1)
                               for chunk in test.images.split(500)])
    accuracy = (predicted == test.labels).float().mean().item()
    print(f"  trained in {seconds:.0f} s; end-to-end test accuracy {accuracy:.1%} on {len(test)} images")
    probe_train = load_dataset("shapes", "train", max_images=5000)
    for layers in (1, 4):
        result = linear_probe(extract_features(encoder, probe_train.images, layers=layers), probe_train.labels,
                              extract_features(encoder, test.images, layers=layers), test.labels)
        print(f"  linear probe on its frozen features (5000 train images), last {layers} block(s): "
              f"{result['accuracy']:.1%}")


if __name__ == "__main__":
    main()
