"""Streaming image folders (jepa_lite.data.stream): the in-memory path's batches and masks with crops
cut from the originals, exact resume, and the choice between the two."""
import json
import math

import pytest
import torch
from PIL import Image

from jepa_lite.data import stream
from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer, train

QUIET = dict(progress=False, log=lambda *a: None)
RUN = dict(model="micro", batch_size=16, patch_size=2, log_every=1, device="cpu", warmup_steps=2,
           checkpoint_every_minutes=100.0, loader_workers=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """96 shapes images as PNG files in class folders (lossless: both paths decode the same pixels)."""
    root = tmp_path_factory.mktemp("stream") / "images"
    shapes = make_shapes(96, seed=0, image_size=16)
    for i in range(len(shapes)):
        sub = root / shapes.classes[int(shapes.labels[i])]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shapes.images[i].permute(1, 2, 0).numpy()).save(sub / f"{i:04d}.png")
    return f"imagefolder:{root}"


def _losses(result):
    return [record["loss"] for record in result.history]


def test_a_streamed_run_draws_the_in_memory_batches_and_masks_with_crops_of_the_originals(tmp_path, folder):
    """Streamed, a step has the in-memory path's images (same indices, labels) and masks; its crops are
    cut from each decoded original by the loader's workers (the reference's crop), where the in-memory
    path crops its centre squares; both runs train."""
    held = Trainer(TrainConfig(data=folder, steps=6, stream=False, **RUN), tmp_path / "memory", **QUIET)
    streamed = Trainer(TrainConfig(data=folder, steps=6, stream=True, **RUN), tmp_path / "stream", **QUIET)
    assert streamed.dataset.crop == (held.config.crop_scale, (3 / 4, 4 / 3))
    assert streamed.batches.augment.crop_scale == (1.0, 1.0)          # not cropped twice
    for step in (0, 5):
        _, _, held_masks, _ = held.batches(step)
        images, _, streamed_masks, _ = streamed.batches(step)
        assert torch.equal(held_masks.context_indices, streamed_masks.context_indices)
        assert torch.equal(held_masks.target_indices, streamed_masks.target_indices)
        assert images.shape == (16, 3, 16, 16) and images.dtype == torch.float32
    streamed.batches.stop()
    assert all(math.isfinite(loss) for loss in _losses(streamed.run()))


def test_streamed_run_resumes_exactly(tmp_path, folder):
    config = TrainConfig(data=folder, steps=6, stream=True, **{**RUN, "loader_workers": 2})
    whole = train(config, tmp_path / "whole", **QUIET)
    Trainer(config, tmp_path / "split", **QUIET).run(until_step=3)          # as if stopped after 3 steps
    resumed = train(config, tmp_path / "split", **QUIET)
    assert _losses(resumed) == _losses(whole)
    assert json.loads((tmp_path / "split" / "config.json").read_text())["train"]["stream"] is True


def test_large_folders_stream_by_default_and_say_so(tmp_path, folder, monkeypatch):
    monkeypatch.setattr(stream, "STREAM_ABOVE_BYTES", 0)
    import jepa_lite.engine.train_data as train_data
    monkeypatch.setattr(train_data, "STREAM_ABOVE_BYTES", 0)
    said = []
    trainer = Trainer(TrainConfig(data=folder, steps=2, **RUN), tmp_path / "auto", progress=False, log=said.append)
    assert trainer.streaming and any("streaming 96 images" in line for line in said)
    small = Trainer(TrainConfig(data=folder, steps=2, stream=False, **RUN), tmp_path / "held", **QUIET)
    assert not small.streaming


def test_stream_needs_an_image_folder():
    with pytest.raises(ValueError, match="stream=True reads image folders"):
        TrainConfig(data="shapes", stream=True)


def test_batches_are_the_ranks_rows_of_the_global_batch():
    one = list(stream.StepBatches(50, 8, seed=3, start_step=4, total_steps=7))
    halves = [list(stream.StepBatches(50, 8, seed=3, start_step=4, total_steps=7, rank=r, world=2)) for r in (0, 1)]
    assert [b[0][0] for b in one] == [4, 5, 6]                               # (step, index) pairs from step 4
    assert [a + b for a, b in zip(*halves)] == one
