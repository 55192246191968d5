"""Data for jepa_lite: small image data sets held in memory as uint8 tensors, plus batched augmentation.

Everything the trainer sees goes through three steps:

    dataset = load_dataset("shapes", "train")          # ImageDataset, images [N, 3, H, W] uint8
    for images, labels in iterate_batches(dataset, 256, generator):
        x = BatchAugment()(images, generator)           # [B, 3, h, w] float, normalised

Data sets are small enough (tens of thousands of images at 32-96 px) to decode ONCE into a uint8
tensor cache; augmentation then runs batched on whatever device that cache lives on, so the GPU
(or the CPU) never waits for a per-image Python data loader.

The default data set, "shapes", is procedural: it needs no download, and image i is a pure
function of (seed, i): the same whichever batch it is generated in (and, barring a last-bit
difference of the platform's sin/cos landing on a pixel boundary, on every machine).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataUnavailable

DATASET_SPECS = """\
Supported data set specs (load_dataset(spec, split, ...)):
  shapes             procedural, offline: 10 shape classes under random colours, pose and clutter.
                     splits: train (indices [0, 50k)), test (indices [1M, 1M + 10k)); 32 px by default.
  cifar10            torchvision CIFAR-10 (32 px), downloaded into --data-root on demand. splits: train, test.
  stl10              torchvision STL-10 (96 px), downloaded into --data-root on demand.
                     splits: train, test, unlabeled (100k images, labels -1).
  imagefolder:PATH   your own images: PATH/<class>/<image> (train split only), or PATH/train/<class>/...
                     with PATH/test/ (or PATH/val/) for the test split. Decoded once, center-cropped
                     to square and resized to image_size (default: the first image's size). A folder
                     of images without class subfolders is one class (fine for pretraining)."""

VALID_SPECS = ("shapes", "cifar10", "stl10", "imagefolder:PATH")
_SPLITS = {"shapes": ("train", "test"), "cifar10": ("train", "test"), "stl10": ("train", "test", "unlabeled"),
           "imagefolder": ("train", "test")}

# Fixed normalisation constants, the same for every data set: a checkpoint then never depends on
# data statistics, and (x/255 - 0.5) / 0.25 maps [0, 255] to [-2, 2] with roughly unit variance for
# natural images and for the uniformly-coloured procedural shapes alike.
NORM_MEAN = (0.5, 0.5, 0.5)
NORM_STD = (0.25, 0.25, 0.25)


# ----------------------------------------------------------------------------------------------
# the in-memory data set

@dataclass
class ImageDataset:
    """A small data set held fully in memory as a uint8 tensor cache."""
    images: Tensor                       # [N, 3, H, W] uint8
    labels: Tensor                       # [N] int64 (-1 where unlabeled)
    classes: list[str]
    masks: Tensor | None = None          # [N, H, W] bool, per-pixel object mask (procedural set only)
    boxes: Tensor | None = None          # [N, 4] float32, (x0, y0, x1, y1) in pixels, x1/y1 exclusive
    name: str = ""

    def __post_init__(self) -> None:
        # fail here, at construction, rather than deep inside a training step
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be [N, 3, H, W] uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        """H (images are square)."""
        return self.images.shape[2]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "ImageDataset":
        """A copy with every tensor on `device` (no copy for tensors already there)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, images=move(self.images), labels=move(self.labels),
                       masks=move(self.masks), boxes=move(self.boxes))

    def subset(self, indices: Tensor | Sequence[int] | slice) -> "ImageDataset":
        """The images at `indices` (a slice, a sequence / tensor of ints, or a [N] bool mask), in that order."""
        if isinstance(indices, Tensor) and indices.dtype == torch.bool:
            indices = indices.nonzero().squeeze(1)                # a boolean mask selects where True
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.long).to(self.images.device)
        pick = lambda t: None if t is None else t[indices]  # noqa: E731
        return replace(self, images=pick(self.images), labels=pick(self.labels),
                       masks=pick(self.masks), boxes=pick(self.boxes))


# ----------------------------------------------------------------------------------------------
# procedural "shapes": counter-based random parameters + vectorised rendering

SHAPE_CLASSES = ["disk", "ring", "square", "frame", "triangle", "plus", "star", "half-disk", "bar", "ell"]

# splitmix64 constants, as signed int64 (torch has no uint64 arithmetic; int64 multiply wraps the same way)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic, so mask off the sign extension)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """splitmix64's finaliser: a bijective, well-mixing hash of int64 -> int64."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def _uniforms(seed: int, index: Tensor, num: int) -> Tensor:
    """Counter-based random numbers: [n] int64 image indices -> [n, num] float64 uniform in [0, 1).

    Column p of row i depends only on (seed, index[i], p), never on the batch it is drawn in:
    it is output p of the splitmix64 stream whose state starts at hash(seed, index[i])."""
    key = _mix64(_mix64(torch.tensor(seed, dtype=torch.int64)) + index * _GOLDEN)        # [n]
    steps = torch.arange(1, num + 1, dtype=torch.int64) * _GOLDEN                            # [num]
    bits = _mix64(key[:, None] + steps[None, :])                                              # [n, num]
    return _shr(bits, 11).double() * 2.0 ** -53          # top 53 bits: exactly representable


# Parameter slots of one image in the counter-based stream (adding one never shifts the others).
_P_LABEL, _P_SIZE, _P_CX, _P_CY, _P_ANGLE, _P_NOISE, _P_NUM_DISTRACTORS = range(7)
_P_BG, _P_BG_DELTA, _P_FG = 8, 11, 14                  # 3 channels each
_P_GRAD_ANGLE = 17
_P_DISTRACTORS, _D_STRIDE = 20, 8                       # per distractor: cx, cy, angle, length, radius, rgb
_MAX_DISTRACTORS = 4
_NUM_PARAMS = _P_DISTRACTORS + _D_STRIDE * _MAX_DISTRACTORS

_NOISE_BANK_SIZE = 64
_SIZE_RANGE = (0.28, 0.42)       # shape size r (~ its radius) as a fraction of the image size: objects fill
                                 # much of the image, so most target blocks cut into one (JEPA learned
                                 # more with these than with 0.18-0.34, see docs/results.md)

# star: a pentagram is the set of points inside at least 4 of the 5 lines through its tips
# (the inner pentagon is inside all 5; each tip is outside exactly 1); this avoids a per-pixel atan2.
_STAR_NORMALS = [(math.cos(math.pi / 2 + 2 * math.pi * k / 5), math.sin(math.pi / 2 + 2 * math.pi * k / 5))
                 for k in range(5)]
_STAR_RADIUS = 1.15
_STAR_APOTHEM = _STAR_RADIUS * math.cos(2 * math.pi / 5)
_SQRT3 = math.sqrt(3.0)


def _shape_inside(label: int, u: Tensor, v: Tensor) -> Tensor:
    """Is the point inside shape `label`? u, v: [n, H, W] float coordinates in the shape's own frame,
    in units of its size r (every shape fits in a disk of radius ~1.15). Returns [n, H, W] bool.

    Only +, *, abs, min/max and comparisons: they round identically in SIMD and scalar code, so a
    pixel never flips with the image's position in the batch (transcendentals could)."""
    au, av = u.abs(), v.abs()
    if label == 0:                                   # disk
        return u * u + v * v <= 1.0
    if label == 1:                                   # ring
        d2 = u * u + v * v
        return (d2 <= 1.0) & (d2 >= 0.5 ** 2)
    if label == 2:                                   # square
        return torch.maximum(au, av) <= 0.8
    if label == 3:                                   # hollow square
        m = torch.maximum(au, av)
        return (m <= 0.85) & (m >= 0.45)
    if label == 4:                                   # equilateral triangle, circumradius 1.15
        return (v >= -0.575) & (v <= 1.15 - _SQRT3 * au)
    if label == 5:                                   # plus
        return (torch.minimum(au, av) <= 0.3) & (torch.maximum(au, av) <= 1.0)
    if label == 6:                                   # five-pointed star
        count = sum((u * nx + v * ny <= _STAR_APOTHEM).to(torch.uint8) for nx, ny in _STAR_NORMALS)
        return count >= 4
    if label == 7:                                   # half-disk, flat side down, centred on its box
        w = v + 0.4
        return (u * u + w * w <= 1.0) & (w >= 0.0)
    if label == 8:                                   # bar
        return (au <= 1.05) & (av <= 0.33)
    if label == 9:                                   # L shape
        in_box = (au <= 0.75) & (av <= 0.75)
        return in_box & ((u <= -0.3) | (v <= -0.3))
    raise ValueError(f"unknown shape label {label}")


@lru_cache(maxsize=8)
def _noise_bank(seed: int, image_size: int) -> Tensor:
    """[64, 3, S, S] float32 Gaussian noise fields in grey levels, field j with std 10 * j / 63. Each image
    adds one of them (picked by its hash): per-pixel noise stays deterministic by index without
    hashing every pixel."""
    generator = torch.Generator().manual_seed(0x5EED0000 + seed)   # torch's CPU RNG is platform-independent
    std = torch.linspace(0.0, 10.0, _NOISE_BANK_SIZE).view(-1, 1, 1, 1)
    return torch.randn(_NOISE_BANK_SIZE, 3, image_size, image_size, generator=generator) * std


def _render_shapes(index: Tensor, seed: int, image_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render images `index` ([n] int64) of the shapes set, in an order grouped by class (so each
    class's shape test runs on one contiguous slice). Returns (order [n], images [n, 3, S, S] uint8,
    labels [n] int64, masks [n, S, S] bool), where row j is the image index[order[j]]."""
    S = image_size
    p = _uniforms(seed, index, _NUM_PARAMS)                           # [n, P] float64
    labels = (p[:, _P_LABEL] * len(SHAPE_CLASSES)).long().clamp_(max=len(SHAPE_CLASSES) - 1)
    labels, order = torch.sort(labels, stable=True)
    p, n = p[order], index.shape[0]

    # Per-image geometry in float64, then rounded to float32: sin/cos may differ in the last bit between
    # vectorised and scalar code paths, and rounding to float32 hides that (see _shape_inside).
    r = (_SIZE_RANGE[0] + (_SIZE_RANGE[1] - _SIZE_RANGE[0]) * p[:, _P_SIZE]) * S   # shape size in pixels
    margin = 1.1 * r                                                  # keep the shape (almost) fully inside
    angle = 2 * math.pi * p[:, _P_ANGLE]
    cx, cy, cos_r, sin_r = torch.stack([
        margin + (S - 2 * margin) * p[:, _P_CX],
        margin + (S - 2 * margin) * p[:, _P_CY],
        torch.cos(angle) / r,                                         # rotation and 1/r folded together
        torch.sin(angle) / r,
    ]).float().view(4, n, 1, 1)

    coords = torch.arange(S, dtype=torch.float32) + 0.5               # pixel centres
    xs, ys = coords.view(1, 1, S), coords.view(1, S, 1)

    masks = torch.empty(n, S, S, dtype=torch.bool)
    stop = 0
    for c, count in enumerate(torch.bincount(labels, minlength=len(SHAPE_CLASSES)).tolist()):
        if count == 0:                                                # a loop over 10 classes, not images
            continue
        sl = slice(stop, stop + count)
        stop += count
        dx, dy = xs - cx[sl], ys - cy[sl]                             # [k, 1, S], [k, S, 1]
        u = dx * cos_r[sl] + dy * sin_r[sl]                           # [k, S, S] in the shape's frame
        v = dy * cos_r[sl] - dx * sin_r[sl]
        masks[sl] = _shape_inside(c, u, v)

    # Clutter: up to 4 thin capsules (blobs and short strokes), drawn BEHIND the shape so they never
    # change its silhouette, only the background a linear read-out of the pixels has to see through.
    num_distractors = 1 + (p[:, _P_NUM_DISTRACTORS] * _MAX_DISTRACTORS).long()   # 1..4
    d = p[:, _P_DISTRACTORS:].view(n, _MAX_DISTRACTORS, _D_STRIDE)               # [n, K, 8]
    active = torch.arange(_MAX_DISTRACTORS).view(1, -1) < num_distractors.view(-1, 1)      # [n, K]
    d_cx, d_cy, d_cos, d_sin, d_half, d_rad2 = torch.stack([          # each [n, K]
        d[..., 0] * S,
        d[..., 1] * S,
        torch.cos(2 * math.pi * d[..., 2]),
        torch.sin(2 * math.pi * d[..., 2]),
        0.14 * S * d[..., 3],                                         # half length: 0 (a dot) .. 4.5 px
        torch.where(active, ((0.02 + 0.025 * d[..., 4]) * S) ** 2, -1.0),  # radius^2 (0.6 .. 1.4 px); -1:
    ]).float()                                                        # inactive distractors hit nothing

    # layer id per pixel: 0 = background, 1..K = distractor k, K + 1 = the shape. Distractors are tiny, so
    # each is tested only on a small window of pixels around it (~7x fewer pixels than the full image).
    win = min(S, math.ceil(2 * (0.14 * S + 0.045 * S)) + 3)          # covers the longest, thickest capsule
    ox = (d_cx.floor().long() - win // 2).clamp(0, S - win)          # [n, K] window origins
    oy = (d_cy.floor().long() - win // 2).clamp(0, S - win)
    offs = torch.arange(win)
    wx = (ox.unsqueeze(-1) + offs).float() + 0.5                       # [n, K, win] pixel centres
    wy = (oy.unsqueeze(-1) + offs).float() + 0.5
    dx = (wx - d_cx.unsqueeze(-1)).unsqueeze(-2)                      # [n, K, 1, win]
    dy = (wy - d_cy.unsqueeze(-1)).unsqueeze(-1)                      # [n, K, win, 1]
    c_, s_ = d_cos[..., None, None], d_sin[..., None, None]
    along = (dx * c_ + dy * s_).abs()                                 # [n, K, win, win]
    across = dy * c_ - dx * s_
    beyond = (along - d_half[..., None, None]).clamp_(min=0.0)
    hit = beyond * beyond + across * across <= d_rad2[..., None, None]
    # paint by scatter-max of k + 1: where capsules overlap, the later one is on top
    value = hit.to(torch.uint8) * (torch.arange(1, _MAX_DISTRACTORS + 1, dtype=torch.uint8).view(1, -1, 1, 1))
    flat = ((oy.unsqueeze(-1) + offs).unsqueeze(-1) * S + (ox.unsqueeze(-1) + offs).unsqueeze(-2))  # [n, K, win, win]
    layer = torch.zeros(n, S * S, dtype=torch.uint8)
    layer.scatter_reduce_(1, flat.view(n, -1), value.view(n, -1), "amax")
    layer = layer.view(n, S, S)
    layer.masked_fill_(masks, _MAX_DISTRACTORS + 1)

    # Colours: every channel of the shape differs from the background base colour by 0.3..0.7, so the
    # shape is always visible, but which colour is independent of the class; distractors differ from the
    # shape colour by >= 0.25 per channel so they never merge into its silhouette.
    bg = p[:, _P_BG:_P_BG + 3]                                                       # [n, 3]
    fg = (bg + 0.3 + 0.4 * p[:, _P_FG:_P_FG + 3]) % 1.0
    d_col = (fg.unsqueeze(1) + 0.25 + 0.5 * d[..., 5:8]) % 1.0                        # [n, K, 3]
    # palette in 0..255 units plus 0.5, so that the final clamp + truncation to uint8 rounds
    palette = torch.cat([bg.unsqueeze(1), d_col, fg.unsqueeze(1)], dim=1).float() * 255.0 + 0.5   # [n, K + 2, 3]
    flat = layer.view(n, 1, S * S).long().expand(n, 3, S * S)
    images = palette.transpose(1, 2).gather(2, flat).view(n, 3, S, S)               # [n, 3, S, S]

    # uneven lighting: a linear colour ramp over the whole image (up to +-0.14 at the corners)
    g_angle = 2 * math.pi * p[:, _P_GRAD_ANGLE]
    delta = (0.4 * p[:, _P_BG_DELTA:_P_BG_DELTA + 3] - 0.2) * 255.0                    # [n, 3]
    gx = (torch.cos(g_angle).unsqueeze(1) * delta / S).float().view(n, 3, 1, 1)
    gy = (torch.sin(g_angle).unsqueeze(1) * delta / S).float().view(n, 3, 1, 1)
    images += (xs - S / 2) * gx                    # in-place broadcast adds: no [n, 3, S, S] temporaries
    images += (ys - S / 2) * gy

    # mild pixel noise: one of 64 fixed noise fields (std 0 .. 10 grey levels), picked by the hash
    images += _noise_bank(seed, S)[(p[:, _P_NOISE] * _NOISE_BANK_SIZE).long()]
    images = images.clamp_(0.0, 255.0).to(torch.uint8)
    return order, images, labels, masks


def _mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of [N, H, W] bool masks -> [N, 4] float32 (x0, y0, x1, y1), x1/y1 exclusive
    (all zeros for an empty mask)."""
    n, H, W = masks.shape
    m = masks.view(torch.uint8)                                       # max over uint8 is faster than any()
    rows, cols = m.amax(dim=2), m.amax(dim=1)                         # [N, H], [N, W]
    first = lambda r: r.argmax(dim=1)                                 # noqa: E731  first nonzero
    x0, y0 = first(cols), first(rows)
    x1, y1 = W - first(cols.flip(1)), H - first(rows.flip(1))
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * (rows.amax(dim=1, keepdim=True) > 0)


def make_shapes(num_images: int, seed: int = 0, image_size: int = 32, start_index: int = 0) -> ImageDataset:
    """The procedural shapes data set: images start_index .. start_index + num_images - 1.

    Image i is a pure function of (seed, i, image_size): its class (one of SHAPE_CLASSES), colours,
    size, position, rotation, background gradient, 1-4 clutter strokes and noise come from a
    counter-based hash of (seed, i), then all images are rendered at once on a pixel grid.
    Returns images [N, 3, S, S] uint8, labels [N] int64, masks [N, S, S] bool (the shape's pixels)
    and boxes [N, 4] float32 (the masks' tight boxes)."""
    if num_images < 0 or start_index < 0:
        raise ValueError(f"num_images and start_index must be >= 0, got {num_images}, {start_index}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
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
            order, *rendered = _render_shapes(index, seed, S)
            for out, x in zip((images, labels, masks), rendered):    # back to index order
                out.index_copy_(0, order + start, x)
    finally:
        torch.set_num_threads(threads)
    return ImageDataset(images, labels, list(SHAPE_CLASSES), masks=masks, boxes=_mask_boxes(masks),
                        name=f"shapes(seed={seed})")


# the two disjoint index ranges of load_dataset("shapes", ...)
SHAPES_TRAIN_START, SHAPES_TRAIN_SIZE = 0, 50_000
SHAPES_TEST_START, SHAPES_TEST_SIZE = 1_000_000, 10_000


def _load_shapes(split: str, image_size: int | None, max_images: int | None) -> ImageDataset:
    # max_images sets the length; train may grow up to 1M images and still never meets test
    start = SHAPES_TRAIN_START if split == "train" else SHAPES_TEST_START
    size = SHAPES_TRAIN_SIZE if split == "train" else SHAPES_TEST_SIZE
    if max_images is not None:
        size = max_images
        if split == "train" and size > SHAPES_TEST_START:
            raise ValueError(f"shapes train split holds at most {SHAPES_TEST_START} images, asked for {size}")
    ds = make_shapes(size, seed=0, image_size=image_size or 32, start_index=start)
    ds.name = f"shapes[{split}]"
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


def _balanced_indices(labels: Tensor, k: int, seed: int = 0) -> Tensor:
    """A deterministic, class-balanced choice of k of the indices 0..N-1 (returned sorted).

    Each class is shuffled with a fixed seed, then classes are taken round-robin, so k images hold
    k / C of each class (or all of a class that has fewer)."""
    n = labels.shape[0]
    if k >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    _, cls = torch.unique(labels[perm], return_inverse=True)            # class id 0..C-1 per shuffled item
    sorted_cls, order = torch.sort(cls, stable=True)                   # grouped by class, shuffled within
    counts = torch.bincount(sorted_cls)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n) - starts[sorted_cls]                # position within its class
    take = torch.sort(rank * (int(cls.max()) + 1) + cls, stable=True).indices[:k]
    return torch.sort(perm[take]).values


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
# image folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _resolve_imagefolder(path: Path, split: str) -> Path:
    """The class-folder root holding `split` under `path` (see DATASET_SPECS)."""
    if not path.is_dir():
        raise ValueError(f"imagefolder: {path} does not exist or is not a directory; expected a folder with one "
                         f"subfolder per class (PATH/<class>/<image>), or PATH/train/ and PATH/test/ (or val/)")
    test_dir = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if (path / "train").is_dir():
        if split == "train":
            return path / "train"
        if test_dir is None:
            raise ValueError(f"imagefolder: {path} has a train/ but no test/ or val/ subfolder for the test split; "
                             f"add one, or pass a separate test folder (--test-data imagefolder:PATH2)")
        return test_dir
    if split == "train":
        return path
    raise ValueError(f"imagefolder: {path} has no train/ and test/ (or val/) subfolders, so it only provides the "
                     f"train split; pass a separate test folder (--test-data imagefolder:PATH2)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _scan_imagefolder(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, labels and class names of a class-folder root (sorted, like torchvision's ImageFolder).
    A folder with images but no class subfolders is one class named after the folder."""
    classes, files, labels = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(Path(d) / f for d, _, names in os.walk(sub) for f in names if _is_image(f))
        if found:
            labels += [len(classes)] * len(found)
            classes.append(sub.name)
            files += found
    if not files:
        files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))
        labels, classes = [0] * len(files), [folder.name]
    if not files:
        raise ValueError(f"imagefolder: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}; "
                         f"expected {folder}/<class>/<image>")
    return files, labels, classes


def _decode(path: Path, size: int | None) -> np.ndarray | None:
    """One image file -> [size, size, 3] uint8 (center-cropped to square, resized), or None if unreadable.
    size None keeps the square crop's own size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft("RGB", (size, size))       # JPEG: decode at a reduced scale when much larger
            im = im.convert("RGB")                   # grayscale, palette, RGBA (alpha dropped), CMYK -> RGB
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            if size is not None and s != size:
                im = im.resize((size, size), Image.BICUBIC)     # PIL antialiases when shrinking
            return np.asarray(im, dtype=np.uint8)
    except Exception:  # truncated / corrupt / not an image: the caller counts and reports these
        return None


def _decode_all(files: list[Path], size: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode files in parallel into [N, size, size, 3] uint8; also returns the [N] bool 'readable' flags."""
    out = np.zeros((len(files), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(files), dtype=bool)

    def work(lo: int, hi: int) -> None:            # PIL releases the GIL while decoding, so threads help
        for i in range(lo, hi):
            a = _decode(files[i], size)
            if a is not None:
                out[i], ok[i] = a, True

    step = max(1, math.ceil(len(files) / (4 * threads)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(work, lo, min(lo + step, len(files))) for lo in range(0, len(files), step)]:
            f.result()
    return out, ok


def _load_imagefolder(path: str, split: str, root: Path | None, image_size: int | None,
                      max_images: int | None) -> ImageDataset:
    folder = _resolve_imagefolder(Path(path).expanduser(), split)
    files, labels, classes = _scan_imagefolder(folder)
    if max_images is not None and max_images < len(files):
        keep = _balanced_indices(torch.tensor(labels), max_images).tolist()
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]

    # Optional on-disk cache of the decoded tensor, keyed by every file's path, size and mtime.
    cache_file = None
    if root is not None:
        h = hashlib.sha1(f"{folder.resolve()}|{image_size}".encode())
        for f in files:
            st = f.stat()
            h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        cache_file = Path(root) / "cache" / f"imagefolder-{folder.name}-{h.hexdigest()[:16]}.pt"
        if cache_file.is_file():
            try:
                c = torch.load(cache_file, weights_only=True)
                if c["skipped"]:
                    warnings.warn(f"imagefolder: skipped {c['skipped']} unreadable image file(s) under {folder} "
                                  f"(cached result: {cache_file})")
                return ImageDataset(c["images"], c["labels"], c["classes"], name=f"imagefolder:{path}[{split}]")
            except Exception as e:  # a stale or broken cache is rebuilt, never fatal
                warnings.warn(f"imagefolder: ignoring unreadable cache {cache_file}: {e}")

    size = image_size
    if size is None:                                 # default: the first readable image's (square crop) size
        for f in files:
            first = _decode(f, None)
            if first is not None:
                size = first.shape[0]
                break
        else:
            raise ValueError(f"imagefolder: none of the {len(files)} image files under {folder} could be read")
    pixels, ok = _decode_all(files, size, threads=min(8, os.cpu_count() or 1))
    skipped = int((~ok).sum())
    if skipped == len(files):
        raise ValueError(f"imagefolder: none of the {len(files)} image files under {folder} could be read")
    if skipped:
        bad = [str(files[i]) for i in np.flatnonzero(~ok)[:3]]
        warnings.warn(f"imagefolder: skipped {skipped} unreadable image file(s) of {len(files)} under {folder} "
                      f"(e.g. {', '.join(bad)})")
    images = torch.from_numpy(pixels[ok]).permute(0, 3, 1, 2).contiguous()
    label_t = torch.tensor(labels, dtype=torch.int64)[torch.from_numpy(ok)]
    ds = ImageDataset(images, label_t, classes, name=f"imagefolder:{path}[{split}]")

    if cache_file is not None:                       # temp file + os.replace: readers never see half a file
        tmp = cache_file.with_name(f"{cache_file.name}.tmp{os.getpid()}")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"images": images, "labels": label_t, "classes": classes, "skipped": skipped}, tmp)
            os.replace(tmp, cache_file)
        except (OSError, RuntimeError) as e:         # read-only or full disk: the cache is optional
            tmp.unlink(missing_ok=True)
            warnings.warn(f"imagefolder: could not write cache {cache_file}: {e}")
    return ds


# ----------------------------------------------------------------------------------------------
# the one entry point

def load_dataset(spec: str, split: str = "train", root: str | Path | None = "data", image_size: int | None = None,
                 max_images: int | None = None, download: bool = True) -> ImageDataset:
    """Load a data set into memory as an ImageDataset (images [N, 3, H, W] uint8 on the CPU).

    spec: see DATASET_SPECS ("shapes", "cifar10", "stl10", "imagefolder:PATH").
    split: "train" or "test" ("unlabeled" too for stl10).
    root: where torchvision data sets are downloaded / looked for; image folders keep a decoded-tensor
        cache in root/cache/ (root=None: no cache).
    image_size: resize to image_size x image_size (default: the data set's own size; 32 for shapes).
    max_images: a deterministic class-balanced subset of that many images (for shapes: the length).
    download: let torchvision download missing files."""
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images must be >= 0, got {max_images}")
    kind = "imagefolder" if spec.lower().startswith("imagefolder:") else spec.strip().lower()
    if kind not in _SPLITS:
        raise ValueError(f"unknown data set spec {spec!r}; valid specs: {', '.join(VALID_SPECS)}\n{DATASET_SPECS}")
    if split not in _SPLITS[kind]:
        raise ValueError(f"invalid split {split!r} for {kind}; valid splits: {', '.join(_SPLITS[kind])}")
    if kind == "shapes":
        return _load_shapes(split, image_size, max_images)
    if kind == "imagefolder":
        path = spec[len("imagefolder:"):]
        if not path:
            raise ValueError("imagefolder spec needs a path: imagefolder:PATH")
        return _load_imagefolder(path, split, None if root is None else Path(root), image_size, max_images)
    if root is None:
        raise ValueError(f"{kind} needs a root folder to download to / load from")
    return _load_torchvision(kind, split, Path(root), image_size, max_images, download)


# ----------------------------------------------------------------------------------------------
# normalisation, batched augmentation, batching

def normalize(images_uint8: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, 3, H, W] uint8 -> [B, 3, H, W] `dtype`: (x / 255 - 0.5) / 0.25 per channel (fixed constants,
    NORM_MEAN / NORM_STD, for every data set)."""
    mean = torch.tensor(NORM_MEAN, dtype=dtype, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(NORM_STD, dtype=dtype, device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.to(dtype) / 255.0 - mean) / std


@dataclass
class BatchAugment:
    """Random resized crop + horizontal flip for a whole batch at once, on the input's device.

    Like torchvision's RandomResizedCrop, each sample draws an area fraction uniformly from
    crop_scale and an aspect ratio log-uniformly from crop_ratio (10 tries, else the whole image),
    then a uniform position; crops are continuous (sub-pixel) boxes resampled with bilinear
    grid_sample (no antialiasing, fine for the small crops used on 32-96 px images)."""
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    output_size: int | tuple[int, int] | None = None      # default: the input size

    def __call__(self, images_uint8: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """images_uint8: [B, 3, H, W] uint8 -> [B, 3, h, w] float32, normalised (see normalize)."""
        B, _, H, W = images_uint8.shape
        if isinstance(self.output_size, int):
            out_h = out_w = self.output_size
        else:
            out_h, out_w = self.output_size or (H, W)
        # Draw parameters where the generator lives (a CPU generator is fine for CUDA images).
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def rand(*shape: int) -> Tensor:                       # float64: exact identity crops
            return torch.rand(*shape, generator=generator, device=gen_device, dtype=torch.float64)

        tries = 10
        lo, hi = self.crop_scale
        area = lo + (hi - lo) * rand(B, tries)
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * rand(B, tries))
        w = torch.sqrt(area * ratio * H / W)                   # crop width / image width
        h = torch.sqrt(area / ratio * W / H)                   # crop height / image height
        valid = (w <= 1.0) & (h <= 1.0)
        first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)          # first valid try
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # no valid try: the largest crop of the closest allowed aspect ratio (torchvision's fallback)
        in_ratio = W / H
        clamped = min(max(in_ratio, self.crop_ratio[0]), self.crop_ratio[1])
        fb_w, fb_h = (clamped / in_ratio, 1.0) if clamped <= in_ratio else (1.0, in_ratio / clamped)
        none = ~valid.any(dim=1)
        w, h = torch.where(none, fb_w, w), torch.where(none, fb_h, h)
        x0 = (1.0 - w) * rand(B)
        y0 = (1.0 - h) * rand(B)
        x0, y0 = torch.where(none, (1.0 - w) / 2, x0), torch.where(none, (1.0 - h) / 2, y0)
        flip = (rand(B) < 0.5) if self.hflip else torch.zeros(B, dtype=torch.bool, device=gen_device)

        # Affine map from output to input in normalised [-1, 1] coordinates (align_corners=False:
        # -1/+1 are the outer pixel edges, so the crop box's edges map exactly to the output's edges).
        theta = torch.zeros(B, 2, 3, dtype=torch.float64, device=gen_device)
        theta[:, 0, 0] = torch.where(flip, -w, w)              # a negative x-scale mirrors the crop
        theta[:, 0, 2] = 2 * x0 + w - 1
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * y0 + h - 1
        x = normalize(images_uint8)
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [B, 3, out_h, out_w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


COLOUR_VIEWS = ("same", "target", "both")


def scramble_colours(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The same pictures in other colours: each image's channels are shuffled by a random
    permutation and each channel is inverted (v -> 1 - v) with probability 1/2, 48 colourings in all.
    Edges, shapes and textures stay; which colour is where does not. images: [B, 3, H, W] normalised
    as `normalize` makes them; returns the same shape and normalisation."""
    B = images.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.argsort(torch.rand(B, 3, generator=generator, device=gen_device), dim=1)
    invert = torch.rand(B, 3, generator=generator, device=gen_device) < 0.5
    mean = torch.tensor(NORM_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(NORM_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    pixels = images * std + mean                                    # back to [0, 1]
    index = order.to(images.device).view(B, 3, 1, 1).expand_as(pixels)
    pixels = pixels.gather(1, index)
    pixels = torch.where(invert.to(images.device).view(B, 3, 1, 1), 1.0 - pixels, pixels)
    return (pixels - mean) / std


def iterate_batches(dataset: ImageDataset, batch_size: int, generator: torch.Generator,
                    drop_last: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch in an order shuffled by `generator`: yields (images [b, 3, H, W] uint8, labels [b])
    on the dataset's device; b = batch_size except for a last partial batch when drop_last=False."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    order = torch.randperm(n, generator=generator, device=generator.device).to(dataset.images.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield dataset.images[idx], dataset.labels[idx]
