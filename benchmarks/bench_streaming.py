"""Streaming image folders: images/s the DataLoader delivers, and the memory of a streamed run.

    python benchmarks/bench_streaming.py                         # ~5 min on 2 cores
    python benchmarks/bench_streaming.py --sizes 2000 --batches 10   # a quicker look

It writes JPEG folders of procedural shapes (32 px, and 224 px upsampled from 32 px) into a
temporary folder, then prints
1. the images/s `jepa_lite.data.stream.stream_loader` delivers (decoding, stacking, mask sampling) with
   0, 1 and 2 worker processes, for 32 and 224 px;
2. the peak memory (resident set of the training process and its loader workers together, sampled
   every 0.1 s) of a short streamed run (`jepa-lite train --stream`, model micro, 224 px, patch 16)
   on folders of each size in --sizes, next to the size of the decoded folder that the in-memory
   path would hold. Streaming memory should stay flat as the folder grows.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))    # run from a checkout without installing
from jepa_lite.core.masks import default_mask_config
from jepa_lite.data.datasets import make_shapes
from jepa_lite.data.stream import ImageFolderStream, stream_loader


def write_folder(folder: Path, count: int, size: int) -> None:
    """`count` JPEGs of `size` px under folder/<class>/, rendered in chunks (little memory)."""
    from PIL import Image

    for start in range(0, count, 500):
        shapes = make_shapes(min(500, count - start), seed=0, image_size=32, start_index=start)
        images = shapes.images
        if size != 32:
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
            images = images.round().clamp(0, 255).to(torch.uint8)
        for i in range(len(images)):
            sub = folder / shapes.classes[int(shapes.labels[i])]
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(sub / f"{start + i:06d}.jpg", quality=90)


def loader_speed(spec: str, size: int, patch: int, workers: int, batches: int, batch_size: int) -> float:
    dataset = ImageFolderStream(spec, image_size=size)
    mask_config = default_mask_config(size // patch)
    loader = stream_loader(dataset, mask_config, batch_size, seed=0, start_step=0, total_steps=batches + 2,
                           workers=workers, device=torch.device("cpu"))
    it = iter(loader)
    next(it)                                     # start-up (workers, first decode) not counted
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += len(next(it)[1])
    return count / (time.perf_counter() - start)


def peak_memory_of(command: list[str]) -> tuple[float, int]:
    """(peak MiB of the process tree, exit code) of a command, sampled every 0.1 s."""
    import psutil

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root] + root.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.1)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = process.communicate()
    done.set()
    thread.join()
    if process.returncode:
        print(err[-2000:], file=sys.stderr)
    return peak / 2 ** 20, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000], help="folder sizes for the memory runs")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps of each memory run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print(f"{os.cpu_count()} CPUs; batches of {args.batch_size}")
        for size, patch in ((32, 4), (224, 16)):
            folder = scratch / f"speed{size}"
            write_folder(folder, args.batch_size * (args.batches + 2), size)
            for workers in (0, 1, 2):
                speed = loader_speed(f"imagefolder:{folder}", size, patch, workers, args.batches, args.batch_size)
                print(f"{size:>4} px, {workers} loader workers: {speed:7.0f} images/s", flush=True)
        for count in args.sizes:
            folder = scratch / f"mem{count}"
            write_folder(folder, count, 224)
            command = [sys.executable, "-m", "jepa_lite", "train", "--data", f"imagefolder:{folder}", "--stream",
                       "--image-size", "224", "--patch-size", "16", "--model", "micro", "--batch-size", "32",
                       "--steps", str(args.steps), "--loader-workers", "2", "--quiet",
                       "--out", str(scratch / f"run{count}")]
            peak, code = peak_memory_of(command)
            decoded = count * 3 * 224 * 224 / 2 ** 20
            print(f"{count:>6} images of 224 px: streamed run peak {peak:6.0f} MiB (exit {code}); "
                  f"held in memory they would take {decoded:6.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
