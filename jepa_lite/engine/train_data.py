"""What a training run trains on: its training images (held in memory, or streamed from disk by
DataLoader workers when an image folder is too large) and the batch of each step: crops and flips,
the target encoder's colour view and the masks, each a pure function of (seed, step), so that a
resumed run draws what the uninterrupted run drew and each data-parallel rank keeps its rows of
the same global batch (train.py's Trainer draws them; notebook 05).

    training_images(config, dataset, log)    -> (the data set, whether it is streamed)
    TrainBatches(...)(step, rank, world)      -> (images, target images or None, masks, global batch size)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from jepa_lite.core.masks import MaskConfig, Masks, MaskSampler
from jepa_lite.core.video import VideoMaskSampler
from jepa_lite.data.augment import BatchAugment, scramble_colours
from jepa_lite.data.datasets import batch_indices, load_dataset, normalize, rows_of_rank, step_generator
from jepa_lite.data.images import ImageDataset
from jepa_lite.data.moving_shapes import ClipDataset
from jepa_lite.data.stream import STREAM_ABOVE_BYTES, ImageFolderStream, stream_loader
from jepa_lite.engine.config import CLIP_SPECS, TrainConfig
from jepa_lite.errors import BadValue

CROP_RATIO = (3 / 4, 4 / 3)          # the aspect ratios of the random resized crops (torchvision's)


def training_images(config: TrainConfig, dataset: ImageDataset | ClipDataset | None = None,
                    log=lambda message: None) -> tuple[ImageDataset | ClipDataset | ImageFolderStream, bool]:
    """The run's training set (`dataset` if given) and whether it is streamed: an image folder is
    streamed when config.stream asks or, with stream=None, when its decoded images exceed
    STREAM_ABOVE_BYTES (the log says so)."""
    streaming = False
    if dataset is None and config.data.startswith("imagefolder:") and config.stream is not False:
        # streamed, each image's random resized crop is cut from the decoded original (the reference's
        # crop), by the loader's workers; in memory, images are held as centre squares (PAPER_DEVIATIONS)
        streamed = ImageFolderStream(config.data, "train", image_size=config.image_size,
                                     max_images=config.max_train_images, crop=(config.crop_scale, CROP_RATIO),
                                     seed=config.seed)
        if config.stream or streamed.decoded_bytes() > STREAM_ABOVE_BYTES:
            dataset, streaming = streamed, True
            log(f"streaming {len(streamed)} images of {streamed.image_size} px from disk "
                f"({streamed.decoded_bytes() / 2 ** 30:.1f} GiB decoded"
                + ("" if config.stream else f", above the {STREAM_ABOVE_BYTES / 2 ** 30:.0f} GiB "
                   f"held in memory") + ")")
    if dataset is None:
        dataset = load_dataset(config.data, "train", root=config.data_root, image_size=config.image_size,
                               max_images=config.max_train_images)
    if len(dataset) < 1:
        raise BadValue(f"data set {config.data!r} is empty")
    if isinstance(dataset, ClipDataset) != (config.data in CLIP_SPECS):
        raise BadValue(f"data {config.data!r} trains on {'clips' if config.data in CLIP_SPECS else 'images'}, "
                       f"got a {type(dataset).__name__}")
    return dataset, streaming


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers
    and Binder often show many cores but grant one or two)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                                    # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(cpus, 1)


class TrainBatches:
    """The batch of each step. In memory (`dataset` on the device), every rank draws the whole batch
    (the same crops and masks) and keeps its rows; streamed, the DataLoader's workers decode and mask
    this rank's rows, and the crops are drawn here. Clips (a ClipDataset, with `time_steps` T' given)
    are used whole, normalised frame by frame, with VideoMaskSampler's tubes: no crops or flips."""

    def __init__(self, dataset: ImageDataset | ClipDataset | ImageFolderStream, streaming: bool,
                 config: TrainConfig, mask_config: MaskConfig, device: torch.device, time_steps: int | None = None):
        self.dataset, self.streaming, self.config, self.device = dataset, streaming, config, device
        self.mask_config = mask_config
        self.clips = isinstance(dataset, ClipDataset)
        if self.clips != (time_steps is not None):
            raise BadValue(f"clips need time_steps (the encoder's T'), images none; got a "
                           f"{type(dataset).__name__} and time_steps={time_steps}")
        self.mask_sampler = VideoMaskSampler(mask_config, time_steps) if self.clips else MaskSampler(mask_config)
        # streamed images arrive cropped (training_images): here they are only flipped
        self.augment = BatchAugment(crop_scale=(1.0, 1.0) if streaming else config.crop_scale,
                                    crop_ratio=(1.0, 1.0) if streaming else CROP_RATIO, hflip=config.hflip)
        self.loader_workers = (config.loader_workers if config.loader_workers is not None
                               else min(8, max(1, usable_cpus() // 2)))
        self._batches = None                   # streaming: the DataLoader's iterator, from the current step

    def __call__(self, step: int, rank: int = 0, world: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor | None, Masks, int]:
        """This rank's rows of step `step`'s batch: (images, the target encoder's images or None when
        they are the same, masks, global batch size)."""
        config = self.config
        if self.streaming:      # this rank's rows, decoded and masked by the loader's workers
            images, masks = self._streamed_batch(step, rank, world)
            rows = rows_of_rank(config.batch_size, rank, world)
            images, target_images = self._colour_views(images, step, rows=rows, batch_size=config.batch_size)
            return images, target_images, masks, config.batch_size
        indices = batch_indices(len(self.dataset), config.batch_size, config.seed, step)
        batch = len(indices)
        # the masks of the whole batch (their lengths are cut batch-wide), then this rank's rows of
        # everything: its images, crops and colours are those rows of the one-process batch
        masks = self.mask_sampler(batch, generator=step_generator(config.seed, step, 2), device=self.device)
        rows = rows_of_rank(batch, rank, world)
        if world > 1:
            masks = Masks(masks.context_indices[rows], masks.target_indices[rows], masks.grid_size)
        if self.clips:          # whole clips [b, T, 3, S, S], each frame normalised as an image is
            clips = self.dataset.images[indices[rows].to(self.device)]
            return normalize(clips.flatten(0, 1)).view(clips.shape), None, masks, batch
        images = self.augment(self.dataset.images[indices[rows].to(self.device)],
                              generator=step_generator(config.seed, step, 1), rows=rows, batch_size=batch)
        images, target_images = self._colour_views(images, step, rows=rows, batch_size=batch)
        return images, target_images, masks, batch

    def _colour_views(self, images: torch.Tensor, step: int, **rows) -> tuple[torch.Tensor, torch.Tensor | None]:
        """config.colour_views: (the context encoder's images, the target encoder's or None when the same)."""
        if self.config.colour_views == "same":
            return images, None
        colours = step_generator(self.config.seed, step, 3)
        target_images = scramble_colours(images, colours, **rows)
        if self.config.colour_views == "both":
            images = scramble_colours(images, colours, **rows)
        return images, target_images

    def _streamed_batch(self, step: int, rank: int, world: int) -> tuple[torch.Tensor, Masks]:
        """Streaming: the next batch from the DataLoader (started at `step` if there is none yet),
        moved to the device and cropped; returns (images, masks)."""
        config = self.config
        if self._batches is None:
            loader = stream_loader(self.dataset, self.mask_config, config.batch_size, config.seed, step, None,
                                   self.loader_workers, self.device, rank, world)
            self._batches = iter(loader)
        loaded_step, images_uint8, _, masks = next(self._batches)
        if loaded_step != step:                # a step was trained outside the loader (e.g. by hand): restart it
            self._batches = None
            return self._streamed_batch(step, rank, world)
        images_uint8 = images_uint8.to(self.device, non_blocking=True)
        masks = masks.to(self.device)
        rows = rows_of_rank(config.batch_size, rank, world)
        images = self.augment(images_uint8, generator=step_generator(config.seed, step, 1), rows=rows,
                              batch_size=config.batch_size)
        return images, masks

    def stop(self) -> None:
        """Streaming: stop the loader's workers (the next batch starts them again)."""
        self._batches = None
