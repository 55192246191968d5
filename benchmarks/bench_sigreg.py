"""SIGReg against EMA on the same engine: what each learns per step and per minute.

    python benchmarks/bench_sigreg.py --data shapes                          # ema, sigreg; 2 seeds; 1000 and 3000 steps
    python benchmarks/bench_sigreg.py --data imagefolder:/tmp/cifar10split   # CIFAR-10 training images, held-out split
    python benchmarks/bench_sigreg.py --modes sigreg:pooled sigreg:tokens --steps-at 1000 --seeds 0
    python benchmarks/bench_sigreg.py --steps-at 20 40 --probe-train 500 --probe-test 200 --seeds 0   # a smoke run

Each run trains the course's recipe (`--recipe fast`, `tiny`, batch 128; `--target-norm` for all) with one target mode:
"ema" (the course's default) or "sigreg[:pooled|tokens]" (one encoder, SIGReg on each image's mean
token or on one random token per image; `--sigreg-weight`), and pauses at each of `--steps-at` to
probe the target encoder (for SIGReg, the one encoder) on held-out images: linear and kNN probes
of the last 4 blocks' pooled tokens (as `jepa-lite probe` reads them), with RankMe and the
across-image share of the last metrics record. The recipe's schedules are flat after the warm-up,
so the state after N steps is the state an N-step run ends in. Runs go two at a time, one thread
each (`--parallel`), so "minutes" compare runs measured side by side.

CIFAR-10 as a folder with a held-out split (the last 1,000 images of each class for testing):
    mkdir -p /tmp/cifar10 && tar xzf ../shared/data/cifar10-train-jpg.tar.gz -C /tmp/cifar10
    python benchmarks/bench_sigreg.py --make-split /tmp/cifar10/train /tmp/cifar10split
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))    # run from a checkout without installing


def make_split(source: Path, target: Path, test_per_class: int = 1000) -> None:
    """source/<class>/<files> -> target/{train,test}/<class>/ as symbolic links (the last
    `test_per_class` files of each class, in sorted order, are the test split)."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        for split, chosen in (("train", files[:-test_per_class]), ("test", files[-test_per_class:])):
            out = target / split / folder.name
            out.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                link = out / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
    print(f"{target}: train and test splits ({test_per_class} test images per class)")


def one_run(args) -> None:
    """Train one (mode, seed), probing at each of args.steps_at; print one JSON line per probe."""
    import torch

    from jepa_lite.data.datasets import load_dataset
    from jepa_lite.engine.config import TrainConfig
    from jepa_lite.engine.train import Trainer
    from jepa_lite.evaluation.probes import extract_features, knn_probe, linear_probe

    torch.set_num_threads(1)
    mode, _, sigreg_on = args.one_mode.partition(":")
    options = dict(target_mode=mode, target_norm=args.target_norm)
    if mode == "sigreg":
        options.update(sigreg_on=sigreg_on or "pooled", sigreg_weight=args.sigreg_weight)
    config = TrainConfig(data=args.data, data_root=args.data_root, model=args.model, batch_size=args.batch_size,
                         steps=max(args.steps_at), seed=args.one_seed, device="cpu",
                         log_every=min(25, *args.steps_at), checkpoint_every_minutes=1e6, **options)
    probe_train = load_dataset(args.data, "train", root=args.data_root, max_images=args.probe_train)
    probe_test = load_dataset(args.data, "test", root=args.data_root, max_images=args.probe_test)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, progress=False, log=lambda *a: None)
        for steps in sorted(args.steps_at):
            start = time.perf_counter()
            trainer.run(until_step=steps)
            encoder = trainer.model.target_encoder
            layers = min(4, len(encoder.blocks))
            train_x = extract_features(encoder, probe_train.images, layers=layers)
            test_x = extract_features(encoder, probe_test.images, layers=layers)
            last = trainer.history[-1]
            linear = linear_probe(train_x, probe_train.labels, test_x, probe_test.labels)["accuracy"]
            knn = knn_probe(train_x, probe_train.labels, test_x, probe_test.labels)["accuracy"]
            print(json.dumps({"mode": args.one_mode, "seed": args.one_seed, "steps": steps,
                              "train_minutes": trainer.elapsed / 60, "probe_seconds": time.perf_counter() - start,
                              "linear": 100 * linear, "knn": 100 * knn,
                              "rankme": last["target_rankme"], "image_share": last["target_image_share"],
                              "std": last["target_std"], "loss": last["loss"]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--modes", nargs="+", default=["ema", "sigreg"],
                        help="ema, joint, sigreg, sigreg:pooled or sigreg:tokens")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps-at", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sigreg-weight", type=float, default=0.02)
    parser.add_argument("--target-norm", choices=["instance", "layer", "none"], default=None,
                        help="the targets' normalisation for every run (default: the recipe's, instance)")
    parser.add_argument("--probe-train", type=int, default=5000)
    parser.add_argument("--probe-test", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--make-split", nargs=2, metavar=("SOURCE", "TARGET"))
    parser.add_argument("--one-mode", help=argparse.SUPPRESS)
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_split:
        make_split(Path(args.make_split[0]), Path(args.make_split[1]))
        return
    if args.one_mode:
        one_run(args)
        return

    jobs = [(mode, seed) for seed in args.seeds for mode in args.modes]
    passed = [a for a in sys.argv[1:]]
    print(f"{args.data}: {args.model}, batch {args.batch_size}, targets {args.target_norm or 'the recipe default'}, "
          f"modes {args.modes}, seeds {args.seeds}, "
          f"probes at {args.steps_at} steps ({args.probe_train} / {args.probe_test} images), "
          f"{args.parallel} runs at a time", flush=True)
    results, running = [], []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while jobs or running:
        while jobs and len(running) < args.parallel:
            mode, seed = jobs.pop(0)
            command = [sys.executable, __file__, *passed, "--one-mode", mode, "--one-seed", str(seed)]
            running.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True))
        done = running.pop(0)
        output, _ = done.communicate()
        if done.returncode != 0:
            raise SystemExit(f"a run failed (exit {done.returncode}); its error is above")
        results += [json.loads(line) for line in output.splitlines() if line.startswith("{")]

    print(f"\n{'mode':15s} {'seed':>4s} {'steps':>6s} {'train min':>9s} {'linear %':>8s} {'kNN %':>6s} "
          f"{'RankMe':>7s} {'share':>6s} {'std':>6s} {'loss':>7s}")
    for r in sorted(results, key=lambda r: (r["steps"], r["mode"], r["seed"])):
        print(f"{r['mode']:15s} {r['seed']:4d} {r['steps']:6d} {r['train_minutes']:9.1f} {r['linear']:8.1f} "
              f"{r['knn']:6.1f} {r['rankme']:7.1f} {r['image_share']:6.2f} {r['std']:6.3f} {r['loss']:7.4f}")
    print(f"\n{'mode':15s} {'steps':>6s} {'linear % (mean of seeds)':>25s} {'kNN %':>6s} {'train min':>9s}")
    for steps in sorted(args.steps_at):
        for mode in args.modes:
            rows = [r for r in results if r["mode"] == mode and r["steps"] == steps]

            def mean(key: str, rows: list = rows) -> float:
                return sum(r[key] for r in rows) / len(rows)
            print(f"{mode:15s} {steps:6d} {mean('linear'):25.1f} {mean('knn'):6.1f} {mean('train_minutes'):9.1f}")


if __name__ == "__main__":
    main()
