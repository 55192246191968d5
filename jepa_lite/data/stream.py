"""Image folders too large for memory: decoded on the fly by DataLoader worker processes.

The in-memory path (datasets.load_dataset) decodes a whole folder into one uint8 tensor, which is the
fastest way to train on small sets and impossible for ImageNet-size ones (~190 GB at 224 px). The
streaming path keeps only file names in memory:

- `ImageFolderStream` decodes one file per item (the same decoding as the in-memory path, so both
  paths see the same pixels), or, given `crop`, cuts a random resized crop from the decoded original
  (the reference's RandomResizedCrop: the sides of a photo stay reachable); an unreadable file is an
  error naming it;
- `StepBatches` yields, step after step, this rank's rows of the step's global batch: the same
  (seed, step) permutation as the in-memory path, so a run sees the same batches whichever path
  it takes, and a resumed run starts at the checkpoint's step;
- `MaskCollate` stacks the images and samples the step's masks in the worker process, off the
  training process's critical path, as the reference code does;
- on a GPU the batches come in pinned memory and are copied without blocking.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from jepa_lite.core.masks import MaskConfig, Masks, MaskSampler
from jepa_lite.data.datasets import batch_indices, rows_of_rank, step_generator
from jepa_lite.data.imagefolder import (
    decode,
    decode_original,
    random_resized_crop,
    resolve_imagefolder,
    scan_imagefolder,
)
from jepa_lite.data.images import _balanced_indices
from jepa_lite.errors import BadValue

# imagefolder data whose decoded tensor would exceed this streams by default (TrainConfig.stream=None)
STREAM_ABOVE_BYTES = 2 * 1024 ** 3


class ImageFolderStream(Dataset):
    """An image folder (PATH/<class>/<image>, see datasets.DATASET_SPECS) read file by file. Items are
    (step, index) pairs from StepBatches; an item is (step, image [3, S, S] uint8, label).

    crop=None: the image centre-cropped to a square and resized, as held in memory. crop=(scale, ratio):
    a random resized crop of the decoded original (imagefolder.random_resized_crop), drawn from a
    generator of (seed, step, index), so a resumed run and every rank cut the same crop of an image."""

    def __init__(self, spec: str, split: str = "train", image_size: int | None = None,
                 max_images: int | None = None, crop: tuple[tuple[float, float], tuple[float, float]] | None = None,
                 seed: int = 0):
        if not spec.startswith("imagefolder:"):
            raise BadValue(f"streaming reads image folders (imagefolder:PATH), got {spec!r}")
        path = spec.split(":", 1)[1]
        folder = resolve_imagefolder(Path(path).expanduser(), split)
        files, labels, self.classes = scan_imagefolder(folder)
        if max_images is not None and max_images < len(files):
            keep = _balanced_indices(torch.tensor(labels), max_images).tolist()
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        self.files, self.labels = [str(f) for f in files], labels
        self.name = f"{spec}[{split}, streamed]"
        if image_size is None:                    # the first readable image's (square crop) size
            first = next((a for a in map(lambda f: decode(Path(f), None), self.files[:50]) if a is not None), None)
            if first is None:
                raise BadValue(f"imagefolder: none of the first 50 image files under {folder} could be read")
            image_size = first.shape[0]
        self.image_size = image_size
        self.crop, self.seed = crop, seed

    def __len__(self) -> int:
        return len(self.files)

    def decoded_bytes(self) -> int:
        return len(self.files) * 3 * self.image_size ** 2

    def __getitem__(self, item: tuple[int, int]):
        """An unreadable file is a ValueError naming it (no other file stands in: the batch would change)."""
        step, index = item
        path = Path(self.files[index])
        if self.crop is not None:
            generator = step_generator(self.seed, step, 4)        # then this image's own stream:
            generator.manual_seed((generator.initial_seed() * 1_000_003 + index) % 2 ** 63)
            image = random_resized_crop(decode_original(path), self.image_size, *self.crop, generator)
            return step, image, self.labels[index]
        pixels = decode(path, self.image_size)
        if pixels is None:
            raise BadValue(f"imagefolder: cannot read {path} (image {index} of {self.name}); remove or replace it")
        return step, torch.from_numpy(np.array(pixels)).permute(2, 0, 1), self.labels[index]


class StepBatches(Sampler):
    """Batches of (step, index) pairs for steps start_step, start_step + 1, ... (up to total_steps,
    or without end when total_steps is None: a time budget stops the loop): this rank's rows of
    each step's global batch."""

    def __init__(self, num_images: int, batch_size: int, seed: int, start_step: int,
                 total_steps: int | None, rank: int = 0, world: int = 1):
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.start_step, self.total_steps, self.rank, self.world = start_step, total_steps, rank, world

    def __iter__(self):
        step = self.start_step
        while self.total_steps is None or step < self.total_steps:
            indices = batch_indices(self.num_images, self.batch_size, self.seed, step)
            rows = rows_of_rank(len(indices), self.rank, self.world)
            yield [(step, int(i)) for i in indices[rows]]
            step += 1

    def __len__(self) -> int:
        return 10 ** 9 if self.total_steps is None else max(self.total_steps - self.start_step, 0)


class MaskCollate:
    """Stack a batch and sample its step's masks (for the whole global batch, from the (seed, step)
    generator as the in-memory path does, then this rank's rows) in the loader's worker."""

    def __init__(self, mask_config: MaskConfig, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.mask_config, self.batch_size, self.seed, self.rank, self.world = \
            mask_config, batch_size, seed, rank, world
        self._sampler = None

    def __call__(self, items):
        if self._sampler is None:                 # built in the worker, once
            self._sampler = MaskSampler(self.mask_config)
        step = items[0][0]
        images = torch.stack([image for _, image, _ in items])
        labels = torch.tensor([label for _, _, label in items], dtype=torch.int64)
        masks = self._sampler(self.batch_size, generator=step_generator(self.seed, step, 2))
        rows = rows_of_rank(self.batch_size, self.rank, self.world)
        return step, images, labels, Masks(masks.context_indices[rows], masks.target_indices[rows], masks.grid_size)


def stream_loader(dataset: ImageFolderStream, mask_config: MaskConfig, batch_size: int, seed: int,
                  start_step: int, total_steps: int | None, workers: int, device: torch.device,
                  rank: int = 0, world: int = 1) -> DataLoader:
    """The DataLoader of a streamed run, from `start_step` on."""
    return DataLoader(dataset, batch_sampler=StepBatches(len(dataset), batch_size, seed, start_step, total_steps,
                                                         rank, world),
                      collate_fn=MaskCollate(mask_config, batch_size, seed, rank, world), num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                      persistent_workers=False)
