"""Build torchvision's on-disk CIFAR-10 ("python version") from a folder of CIFAR-10 JPEGs, for a
machine that cannot download it (the GPU measurement in benchmarks/gpu_course.sh).

    python benchmarks/make_cifar10_batches.py TRAIN_FOLDER OUT_ROOT [--test-per-class 1000]
                                              [--sitecustomize DIR]

TRAIN_FOLDER holds one sub-folder per class (airplane automobile bird cat deer dog frog horse ship
truck) of 32x32 images, e.g. the `train/` folder of `cifar10-train-jpg.tar.gz`; a folder with such
a `train/` inside is accepted too. Writes OUT_ROOT/cifar-10-batches-py/ the way torchvision's
`CIFAR10` reads it: data_batch_1..5 and test_batch (pickled dicts with "data": uint8 [N, 3072],
each row one image in channel-major order R(32x32) G B, and "labels": list of int) and
batches.meta ("label_names").

The last --test-per-class files (sorted by name) of every class become `test_batch`, so they are
never pretrained on; the rest, shuffled with a fixed seed, fill the five training batches. These
are the CIFAR-10 *training* images only (stored as lossy JPEG): a held-out part of them stands in
for the official test split, so accuracies are comparable, not identical, to CIFAR-10's.

torchvision checks every batch file against the md5 of the official archive, which a rebuilt file
can never match. --sitecustomize DIR writes DIR/sitecustomize.py which, in any Python that has
DIR on its path (PYTHONPATH), replaces those md5s with the ones of the files written here the moment
`torchvision.datasets.cifar` is imported: torchvision's own check then runs, against these files.
That is for this measurement only; the project itself never uses it.
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = 5
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


def class_root(path: Path) -> Path:
    """The folder whose sub-folders are the ten classes: `path` itself or `path/train`."""
    for candidate in (path, path / "train"):
        if all((candidate / name).is_dir() for name in CLASSES):
            return candidate
    raise SystemExit(f"{path}: expected the class folders {', '.join(CLASSES)} in it or in {path}/train")


def image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    # by name; names of digits (0000.jpg ...) by number, so unpadded names order the same way
    return sorted(files, key=lambda p: (0, int(p.stem), p.name) if p.stem.isdigit() else (1, 0, p.name))


def read_rows(files: list[Path]) -> np.ndarray:
    """[N, 3072] uint8, each row CHW-flattened as in the CIFAR-10 batches."""
    rows = np.empty((len(files), 3 * 32 * 32), dtype=np.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if pixels.shape != (32, 32, 3):
            raise SystemExit(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} px, CIFAR-10 batches hold 32x32 images")
        rows[i] = pixels.transpose(2, 0, 1).reshape(-1)
    return rows


def write_pickle(path: Path, obj: dict) -> str:
    data = pickle.dumps(obj, protocol=4)
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


SITECUSTOMIZE = '''"""Written by benchmarks/make_cifar10_batches.py for one measurement (benchmarks/gpu_course.sh):
torchvision's CIFAR10 compares each batch file with the md5 of the official archive; this CIFAR-10
was rebuilt from JPEGs, so its md5s are put in their place when torchvision.datasets.cifar is
imported. torchvision's own integrity check then still runs, against these files. Not part of the
project: it exists only under a temporary folder on PYTHONPATH."""
import os
import sys

_MD5 = {md5!r}


def _patch(module):
    cls = module.CIFAR10
    cls.train_list = [[name, _MD5[name]] for name, _ in cls.train_list]
    cls.test_list = [[name, _MD5[name]] for name, _ in cls.test_list]
    cls.meta = dict(cls.meta, md5=_MD5[cls.meta["filename"]])


class _PatchOnImport:
    """A finder that only wraps the loader of torchvision.datasets.cifar, so no process imports
    torchvision because of this file."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision.datasets.cifar":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _patch(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


if "torchvision.datasets.cifar" in sys.modules:
    _patch(sys.modules["torchvision.datasets.cifar"])
else:
    sys.meta_path.insert(0, _PatchOnImport())


def _chain():
    """Run the sitecustomize this file shadows (a distribution's own), if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.curdir)
        candidate = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(candidate):
            try:
                with open(candidate) as f:
                    exec(compile(f.read(), candidate, "exec"), {{"__name__": "sitecustomize", "__file__": candidate}})
            except Exception as error:   # as site.py does: report, go on
                print(f"Error in {{candidate}}: {{error!r}}", file=sys.stderr)
            return


_chain()
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_folder", type=Path)
    parser.add_argument("out_root", type=Path, help="writes OUT_ROOT/cifar-10-batches-py/")
    parser.add_argument("--test-per-class", type=int, default=1000,
                        help="the last N files of each class form test_batch (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="order of the images in the batches")
    parser.add_argument("--sitecustomize", type=Path, default=None, metavar="DIR",
                        help="write DIR/sitecustomize.py that makes torchvision accept these files (see above)")
    args = parser.parse_args(argv)

    root = class_root(args.train_folder)
    train_files, train_labels, test_files, test_labels = [], [], [], []
    for label, name in enumerate(CLASSES):
        files = image_files(root / name)
        if len(files) <= args.test_per_class:
            raise SystemExit(f"{root / name}: {len(files)} images, "
                             f"not more than --test-per-class {args.test_per_class}")
        cut = len(files) - args.test_per_class
        train_files += files[:cut]
        train_labels += [label] * cut
        test_files += files[cut:]
        test_labels += [label] * args.test_per_class

    rng = np.random.default_rng(args.seed)
    out = args.out_root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    md5 = {}
    train_order = rng.permutation(len(train_files))
    for b, chunk in enumerate(np.array_split(train_order, TRAIN_BATCHES), start=1):
        name = f"data_batch_{b}"
        files = [train_files[i] for i in chunk]
        md5[name] = write_pickle(out / name, {
            "batch_label": f"training batch {b} of {TRAIN_BATCHES}", "labels": [train_labels[i] for i in chunk],
            "data": read_rows(files), "filenames": [f"{p.parent.name}/{p.name}" for p in files]})
        print(f"{name}: {len(chunk)} images", flush=True)
    test_order = rng.permutation(len(test_files))
    files = [test_files[i] for i in test_order]
    md5["test_batch"] = write_pickle(out / "test_batch", {
        "batch_label": "testing batch 1 of 1 (held-out training images)",
        "labels": [test_labels[i] for i in test_order],
        "data": read_rows(files), "filenames": [f"{p.parent.name}/{p.name}" for p in files]})
    print(f"test_batch: {len(files)} images (the last {args.test_per_class} of each class)", flush=True)
    md5["batches.meta"] = write_pickle(out / "batches.meta", {
        "label_names": CLASSES, "num_cases_per_batch": int(np.ceil(len(train_files) / TRAIN_BATCHES)), "num_vis": 3072})
    print(f"written: {out} ({len(train_files)} train / {len(test_files)} test images)")

    if args.sitecustomize is not None:
        args.sitecustomize.mkdir(parents=True, exist_ok=True)
        target = args.sitecustomize / "sitecustomize.py"
        target.write_text(SITECUSTOMIZE.format(md5=md5))
        print(f"written: {target} (torchvision's CIFAR10 md5s -> these files')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
