"""The container every data set loads into: ImageDataset, images held in memory as one uint8 tensor
(with labels, and for the procedural shapes their masks and boxes); and the deterministic
class-balanced subset that every loader takes when asked for fewer images (_balanced_indices).
datasets.py, imagefolder.py and stream.py build on this module.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from jepa_lite.errors import BadValue


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
            raise BadValue(f"images must be [N, 3, H, W] uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise BadValue(f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}")

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
