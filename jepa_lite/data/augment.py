"""Augmentation on whole batches, on the batch's own device: the random resized crop and flip of the
training views (BatchAugment), and the recoloured views of `colour_views` (scramble_colours)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_lite.data.datasets import NORM_MEAN, NORM_STD, normalize


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

    def __call__(self, images_uint8: Tensor, generator: torch.Generator | None = None,
                 rows: slice | None = None, batch_size: int | None = None) -> Tensor:
        """images_uint8: [B, 3, H, W] uint8 -> [B, 3, h, w] float32, normalised (see normalize).
        rows, batch_size: the images are these rows of a batch of batch_size (one process's share of a
        global batch): the crops are drawn for the whole batch, as one process would, and these rows kept."""
        b, _, H, W = images_uint8.shape
        B = batch_size if rows is not None else b
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
        if rows is not None:
            theta = theta[rows]
        x = normalize(images_uint8)
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [b, 3, out_h, out_w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


COLOUR_VIEWS = ("same", "target", "both")


def scramble_colours(images: Tensor, generator: torch.Generator | None = None,
                     rows: slice | None = None, batch_size: int | None = None) -> Tensor:
    """The same pictures in other colours: each image's channels are shuffled by a random
    permutation and each channel is inverted (v -> 1 - v) with probability 1/2, 48 colourings in all.
    Edges, shapes and textures stay; which colour is where does not. images: [B, 3, H, W] normalised
    as `normalize` makes them; returns the same shape and normalisation. rows, batch_size: as in
    BatchAugment (draws for the whole batch, keeps these rows)."""
    B = images.shape[0]
    n = batch_size if rows is not None else B
    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.argsort(torch.rand(n, 3, generator=generator, device=gen_device), dim=1)
    invert = torch.rand(n, 3, generator=generator, device=gen_device) < 0.5
    if rows is not None:
        order, invert = order[rows], invert[rows]
    mean = torch.tensor(NORM_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(NORM_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    pixels = images * std + mean                                    # back to [0, 1]
    index = order.to(images.device).view(B, 3, 1, 1).expand_as(pixels)
    pixels = pixels.gather(1, index)
    pixels = torch.where(invert.to(images.device).view(B, 3, 1, 1), 1.0 - pixels, pixels)
    return (pixels - mean) / std
