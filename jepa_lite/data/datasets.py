"""Data for jepa_lite: small image data sets held in memory as uint8 tensors, and the batches a step draws.

Everything the trainer sees goes through three steps:

    dataset = load_dataset("shapes", "train")          # ImageDataset, images [N, 3, H, W] uint8
    indices = batch_indices(len(dataset), 256, seed, step)     # the step's batch, a function of (seed, step)
    x = BatchAugment()(dataset.images[indices], generator)     # [B, 3, h, w] float, normalised (augment.py)

Data sets are small enough (tens of thousands of images at 32-96 px) to decode ONCE into a uint8
tensor cache (ImageDataset, images.py); augmentation then runs batched on whatever device that cache
lives on, so the GPU (or the CPU) never waits for a per-image Python data loader. Image folders are
read by imagefolder.py, and those larger than memory are streamed (stream.py).

The default data set, "shapes", is procedural: it needs no download, and image i is a pure
function of (seed, i): the same whichever batch it is generated in (and, barring a last-bit
difference of the platform's sin/cos landing on a pixel boundary, on every machine).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_lite.data.imagefolder import load_imagefolder
from jepa_lite.data.images import ImageDataset, _balanced_indices
from jepa_lite.data.moving_shapes import ClipDataset, make_moving_shapes
from jepa_lite.data.shapes import PALETTES, SHAPE_CLASSES, mask_boxes, render_shapes
from jepa_lite.errors import BadValue, DataUnavailable

DATASET_SPECS = """\
Supported data set specs (load_dataset(spec, split, ...)):
  shapes             procedural, offline: 10 shape classes under random colours, pose and clutter.
                     splits: train (indices [0, 50k)), test (indices [1M, 1M + 10k)); 32 px by default.
  shapes-mono        the same images in one palette (dark shape, light background, grey clutter).
  cifar10            torchvision CIFAR-10 (32 px), downloaded into --data-root on demand. splits: train, test.
  stl10              torchvision STL-10 (96 px), downloaded into --data-root on demand.
                     splits: train, test, unlabeled (100k images, labels -1).
  imagefolder:PATH   your own images: PATH/<class>/<image> (train split only), or PATH/train/<class>/...
                     with PATH/test/ (or PATH/val/) for the test split. Decoded once, center-cropped
                     to square and resized to image_size (default: the first image's size). A folder
                     of images without class subfolders is one class (fine for pretraining).
  moving-shapes      procedural clips (ClipDataset, 8 frames of 32 px) of a shape moving one of 6 ways.
  moving-shapes-mono the same clips in the grey levels of shapes-mono (notebook 11 trains on these).
                     splits: train (clips [0, 10k)), test (clips [1M, 1M + 2k)); max_images: the number of clips."""

VALID_SPECS = ("shapes", "shapes-mono", "moving-shapes", "moving-shapes-mono", "cifar10", "stl10", "imagefolder:PATH")
SHAPES_SPECS = {"shapes": "colour", "shapes-mono": "mono"}        # the procedural specs and their palettes
CLIP_PALETTES = {"moving-shapes": "colour", "moving-shapes-mono": "mono"}   # the clip specs and their palettes
_SPLITS = {**{spec: ("train", "test") for spec in {**SHAPES_SPECS, **CLIP_PALETTES}},
           "cifar10": ("train", "test"),
           "stl10": ("train", "test", "unlabeled"), "imagefolder": ("train", "test")}

# Fixed normalisation constants, the same for every data set: a checkpoint then never depends on
# data statistics, and (x/255 - 0.5) / 0.25 maps [0, 255] to [-2, 2] with roughly unit variance for
# natural images and for the uniformly-coloured procedural shapes alike.
NORM_MEAN = (0.5, 0.5, 0.5)
NORM_STD = (0.25, 0.25, 0.25)


def make_shapes(num_images: int, seed: int = 0, image_size: int = 32, start_index: int = 0,
                palette: str = "colour") -> ImageDataset:
    """The procedural shapes data set: images start_index .. start_index + num_images - 1.

    Image i is a pure function of (seed, i, image_size): its class (one of SHAPE_CLASSES), colours,
    size, position, rotation, background gradient, 1-4 clutter strokes and noise come from a
    counter-based hash of (seed, i), then all images are rendered at once on a pixel grid.
    Returns images [N, 3, S, S] uint8, labels [N] int64, masks [N, S, S] bool (the shape's pixels)
    and boxes [N, 4] float32 (the masks' tight boxes). palette: "colour" or "mono" (shapes.PALETTES):
    the same images, drawn in each image's own colours or in one grey palette."""
    if palette not in PALETTES:
        raise BadValue(f"palette must be one of {PALETTES}, got {palette!r}")
    if num_images < 0 or start_index < 0:
        raise BadValue(f"num_images and start_index must be >= 0, got {num_images}, {start_index}")
    if image_size < 8:
        raise BadValue(f"image_size must be >= 8, got {image_size}")
    S = image_size
    images = torch.empty(num_images, 3, S, S, dtype=torch.uint8)
    labels = torch.empty(num_images, dtype=torch.int64)
    masks = torch.empty(num_images, S, S, dtype=torch.bool)
    # 256 images per chunk at 32 px: small temporaries stay in cache and are reused by the allocator
    # (large ones cost fresh, page-faulting memory on every op)
    chunk = max(1, (1 << 18) // (S * S))
    # One intra-op thread: the renderer runs ~1000 small ops per 1000 images, and with several threads
    # each op ends in a barrier; on a busy machine a descheduled thread then stalls every op (10x slower).
    # Single-threaded it is ~80% of the 2-thread speed on an idle machine, and stays there on a busy one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, num_images, chunk):
            stop = min(start + chunk, num_images)
            index = torch.arange(start_index + start, start_index + stop, dtype=torch.int64)
            order, *rendered = render_shapes(index, seed, S, palette)
            for out, x in zip((images, labels, masks), rendered):    # back to index order
                out.index_copy_(0, order + start, x)
    finally:
        torch.set_num_threads(threads)
    return ImageDataset(images, labels, list(SHAPE_CLASSES), masks=masks, boxes=mask_boxes(masks),
                        name=f"shapes(seed={seed})" if palette == "colour" else f"shapes-{palette}(seed={seed})")


# the two disjoint index ranges of load_dataset("shapes", ...)
SHAPES_TRAIN_START, SHAPES_TRAIN_SIZE = 0, 50_000
SHAPES_TEST_START, SHAPES_TEST_SIZE = 1_000_000, 10_000


def _load_shapes(spec: str, split: str, image_size: int | None, max_images: int | None) -> ImageDataset:
    # max_images sets the length; train may grow up to 1M images and still never meets test
    start = SHAPES_TRAIN_START if split == "train" else SHAPES_TEST_START
    size = SHAPES_TRAIN_SIZE if split == "train" else SHAPES_TEST_SIZE
    if max_images is not None:
        size = max_images
        if split == "train" and size > SHAPES_TEST_START:
            raise BadValue(f"shapes train split holds at most {SHAPES_TEST_START} images, asked for {size}")
    ds = make_shapes(size, seed=0, image_size=image_size or 32, start_index=start, palette=SHAPES_SPECS[spec])
    ds.name = f"{spec}[{split}]"
    return ds


# the two disjoint clip index ranges of load_dataset("moving-shapes" or "moving-shapes-mono", ...)
CLIPS_TRAIN_SIZE, CLIPS_TEST_START, CLIPS_TEST_SIZE = 10_000, 1_000_000, 2_000


def _load_moving_shapes(spec: str, split: str, image_size: int | None, max_images: int | None) -> ClipDataset:
    start = 0 if split == "train" else CLIPS_TEST_START
    size = max_images if max_images is not None else (CLIPS_TRAIN_SIZE if split == "train" else CLIPS_TEST_SIZE)
    if split == "train" and size > CLIPS_TEST_START:
        raise BadValue(f"moving-shapes train split holds at most {CLIPS_TEST_START} clips, asked for {size}")
    ds = make_moving_shapes(size, seed=0, frames=8, image_size=image_size or 32, start_index=start,
                            palette=CLIP_PALETTES[spec])
    ds.name = f"{spec}[{split}]"
    return ds


# ----------------------------------------------------------------------------------------------
# helpers shared by the file-backed data sets

def _resize_uint8(images: Tensor, size: int, chunk: int = 512) -> Tensor:
    """[N, 3, H, W] uint8 -> [N, 3, size, size] uint8, batched antialiased bilinear resize."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(images.shape[0], 3, size, size, dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):          # chunks bound the float32 temporary
        x = F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear",
                          antialias=True, align_corners=False)
        out[i:i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _take(ds: ImageDataset, max_images: int | None) -> ImageDataset:
    if max_images is None or max_images >= len(ds):
        return ds
    return ds.subset(_balanced_indices(ds.labels, max_images))


# ----------------------------------------------------------------------------------------------
# torchvision data sets

def _load_torchvision(name: str, split: str, root: Path, image_size: int | None, max_images: int | None,
                      download: bool) -> ImageDataset:
    import torchvision  # lazy: importing torchvision costs a second even when only shapes are used

    try:
        if name == "cifar10":
            tv = torchvision.datasets.CIFAR10(root=str(root), train=split == "train", download=download)
            images = torch.from_numpy(tv.data).permute(0, 3, 1, 2).contiguous()     # [N, 32, 32, 3] -> NCHW
            labels = torch.as_tensor(tv.targets, dtype=torch.int64)
        else:
            tv = torchvision.datasets.STL10(root=str(root), split=split, download=download)
            images = torch.from_numpy(np.ascontiguousarray(tv.data))                # already [N, 3, 96, 96]
            labels = torch.from_numpy(tv.labels.astype(np.int64))                  # -1 for "unlabeled"
    except Exception as e:  # offline download (URLError, ...), missing or corrupt files
        folder = "cifar-10-batches-py" if name == "cifar10" else "stl10_binary"
        raise DataUnavailable(
            f"could not load {name} ({split}) from {root}: {type(e).__name__}: {e}. "
            f"To use {name}, either allow the download (needs network), or put the extracted torchvision files "
            f"into {root}/{folder}/ (or the original archive into {root}/) and pass --data-root {root}. "
            f"Offline alternatives: --data shapes (procedural, no files needed) or --data imagefolder:PATH."
        ) from e
    ds = ImageDataset(images, labels, list(tv.classes), name=f"{name}[{split}]")
    ds = _take(ds, max_images)                      # subset before resizing: less to resize
    if image_size is not None:
        ds.images = _resize_uint8(ds.images, image_size)
    return ds


# ----------------------------------------------------------------------------------------------
# the one entry point

def load_dataset(spec: str, split: str = "train", root: str | Path | None = "data", image_size: int | None = None,
                 max_images: int | None = None, download: bool = True) -> ImageDataset | ClipDataset:
    """Load a data set into memory as an ImageDataset (images [N, 3, H, W] uint8 on the CPU).

    spec: see DATASET_SPECS ("shapes", "cifar10", "stl10", "imagefolder:PATH").
    split: "train" or "test" ("unlabeled" too for stl10).
    root: where torchvision data sets are downloaded / looked for; image folders keep a decoded-tensor
        cache in root/cache/ (root=None: no cache).
    image_size: resize to image_size x image_size (default: the data set's own size; 32 for shapes).
    max_images: a deterministic class-balanced subset of that many images (for shapes: the length).
    download: let torchvision download missing files."""
    if max_images is not None and max_images < 0:
        raise BadValue(f"max_images must be >= 0, got {max_images}")
    kind = "imagefolder" if spec.lower().startswith("imagefolder:") else spec.strip().lower()
    if kind not in _SPLITS:
        raise BadValue(f"unknown data set spec {spec!r}; valid specs: {', '.join(VALID_SPECS)}\n{DATASET_SPECS}")
    if split not in _SPLITS[kind]:
        raise BadValue(f"invalid split {split!r} for {kind}; valid splits: {', '.join(_SPLITS[kind])}")
    if kind in SHAPES_SPECS:
        return _load_shapes(kind, split, image_size, max_images)
    if kind in CLIP_PALETTES:
        return _load_moving_shapes(kind, split, image_size, max_images)
    if kind == "imagefolder":
        path = spec[len("imagefolder:"):]
        if not path:
            raise BadValue("imagefolder spec needs a path: imagefolder:PATH")
        return load_imagefolder(path, split, None if root is None else Path(root), image_size, max_images)
    if root is None:
        raise BadValue(f"{kind} needs a root folder to download to / load from")
    return _load_torchvision(kind, split, Path(root), image_size, max_images, download)


# ----------------------------------------------------------------------------------------------
# normalisation, batched augmentation, batching

def normalize(images_uint8: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, 3, H, W] uint8 -> [B, 3, H, W] `dtype`: (x / 255 - 0.5) / 0.25 per channel (fixed constants,
    NORM_MEAN / NORM_STD, for every data set)."""
    mean = torch.tensor(NORM_MEAN, dtype=dtype, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(NORM_STD, dtype=dtype, device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.to(dtype) / 255.0 - mean) / std


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, stream): this is what makes resume exact."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 16 + stream)


def batch_indices(num_images: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The image indices of a step: epochs are fresh permutations, batches consecutive slices."""
    per_epoch = max(num_images // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    return epoch_order(num_images, seed, epoch)[position * batch_size:(position + 1) * batch_size].clone()


@functools.lru_cache(maxsize=2)
def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """An epoch's permutation of the images, drawn once per epoch (not once per step)."""
    return torch.randperm(num_images, generator=step_generator(seed, epoch, 15))


def rows_of_rank(batch: int, rank: int, world: int) -> slice:
    """This rank's rows of a step's global batch (data parallelism: every rank draws the whole batch,
    its crops and masks, and keeps these rows; engine/distributed.py)."""
    share = batch // world
    return slice(rank * share, (rank + 1) * share)


def iterate_batches(dataset: ImageDataset, batch_size: int, generator: torch.Generator,
                    drop_last: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch in an order shuffled by `generator`: yields (images [b, 3, H, W] uint8, labels [b])
    on the dataset's device; b = batch_size except for a last partial batch when drop_last=False."""
    if batch_size < 1:
        raise BadValue(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    order = torch.randperm(n, generator=generator, device=generator.device).to(dataset.images.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield dataset.images[idx], dataset.labels[idx]
