"""Training a video JEPA with the engine: TrainConfig(data="moving-shapes", model="video-..."), its data,
masks (tubes), checkpoints and refusals, and the CLI."""
import math

import pytest
import torch

from jepa_lite.core.model_sizes import MODEL_SIZES, VIDEO_SIZES, model_configs
from jepa_lite.core.video import VideoConfig, VideoPredictor, VideoTransformer
from jepa_lite.data.datasets import VALID_SPECS, batch_indices, load_dataset
from jepa_lite.data.moving_shapes import ClipDataset, make_moving_shapes
from jepa_lite.engine.build import build_encoder, configs_for
from jepa_lite.engine.checkpoint import jepa_from_checkpoint, load_checkpoint
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer, train
from jepa_lite.errors import BadValue

VIDEO = dict(data="moving-shapes", model="video-micro", batch_size=8, log_every=1, device="cpu",
             warmup_steps=1, checkpoint_every_minutes=100.0)
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def clips():
    return make_moving_shapes(24, seed=0)


def test_video_sizes_are_their_own_table_and_build_a_video_transformer():
    assert not set(VIDEO_SIZES) & set(MODEL_SIZES)
    encoder_config, predictor_config = model_configs("video-tiny")
    assert isinstance(encoder_config, VideoConfig) and encoder_config.grid_size == (4, 4, 4)
    assert (encoder_config.embed_dim, encoder_config.depth, encoder_config.num_heads) == (64, 4, 4)
    assert (predictor_config.embed_dim, predictor_config.depth, predictor_config.num_heads) == (32, 2, 4)
    assert isinstance(build_encoder(encoder_config), VideoTransformer)


def test_moving_shapes_splits_start_at_0_and_1m():
    assert "moving-shapes" in VALID_SPECS
    test = load_dataset("moving-shapes", "test", max_images=6)
    assert isinstance(test, ClipDataset) and test.images.shape == (6, 8, 3, 32, 32)
    direct = make_moving_shapes(6, seed=0, start_index=1_000_000)
    assert torch.equal(test.labels, direct.labels) and torch.equal(test.clips, direct.clips)
    assert torch.equal(test.shape_labels, direct.shape_labels)
    train_split = load_dataset("moving-shapes", "train", max_images=6)
    assert torch.equal(train_split.clips, make_moving_shapes(6, seed=0).clips)
    assert not torch.equal(train_split.clips, test.clips)
    grey = load_dataset("moving-shapes-mono", "test", max_images=6)           # the same clips in grey
    assert torch.equal(grey.clips, make_moving_shapes(6, seed=0, start_index=1_000_000, palette="mono").clips)
    assert torch.equal(grey.motion_labels, test.motion_labels) and not torch.equal(grey.clips, test.clips)
    assert TrainConfig(data="moving-shapes-mono", model="video-tiny").resolve().hflip is False


def test_clip_defaults_and_mask_config_on_the_frame_grid():
    config = TrainConfig(data="moving-shapes", model="video-tiny").resolve()
    assert config.batch_size == 64 and config.crop_scale == (1.0, 1.0) and config.hflip is False
    assert config.patch_size == 8
    encoder_config, _, mask_config = configs_for(config, 32)
    assert isinstance(encoder_config, VideoConfig) and mask_config.grid_size == (4, 4)


@pytest.mark.parametrize("given, named", [
    (dict(data="moving-shapes", model="tiny"), "'tiny'"),
    (dict(data="shapes", model="video-tiny"), "'video-tiny'"),
    (dict(data="moving-shapes", model="video-tiny", objective="pixels"), "'pixels'"),
    (dict(data="moving-shapes", model="video-tiny", objective="both"), "'both'"),
    (dict(data="moving-shapes", model="video-tiny", encoder="cnn"), "'cnn'"),
    (dict(data="moving-shapes", model="video-tiny", hflip=True), "hflip"),
    (dict(data="moving-shapes", model="video-tiny", crop_scale=(0.5, 1.0)), "0.5"),
])
def test_refusals_are_one_line_naming_the_value(given, named):
    with pytest.raises(BadValue) as error:
        TrainConfig(**given)
    message = str(error.value)
    assert named in message and "\n" not in message


def test_tubes_every_target_cell_is_hidden_at_every_time_step(tmp_path, clips):
    trainer = Trainer(TrainConfig(steps=1, **VIDEO), tmp_path, dataset=clips, **QUIET)
    images, target_images, masks, batch = trainer.batches(0)
    assert images.shape == (8, 8, 3, 32, 32) and images.dtype == torch.float32 and target_images is None
    T, H, W = trainer.encoder_config.grid_size
    assert masks.grid_size == (T * H, W)
    for name in ("target_indices", "context_indices"):
        grid = torch.zeros(batch, T * H * W, dtype=torch.bool)
        indices = getattr(masks, name)
        grid.scatter_(1, indices.flatten(1), True)
        grid = grid.view(batch, T, H, W)
        assert (grid == grid[:, :1]).all(), name          # each cell in all T' steps or in none
    # the rows of the epoch permutation, whole, each frame normalised as images are: (x / 255 - 0.5) / 0.25
    rows = batch_indices(len(clips), 8, 0, 0)
    assert torch.allclose(images, (clips.clips[rows].float() / 255 - 0.5) / 0.25)
    # the same (seed, step): the same masks
    again = trainer.batches(0)[2]
    assert torch.equal(again.target_indices, masks.target_indices)


def test_trains_and_resume_is_exact(tmp_path, clips):
    full = train(TrainConfig(steps=3, **VIDEO), tmp_path / "full", dataset=clips, **QUIET)
    losses = [m["loss"] for m in full.history]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert isinstance(full.model.context_encoder, VideoTransformer)
    assert isinstance(full.model.predictor, VideoPredictor)

    trainer = Trainer(TrainConfig(steps=3, **VIDEO), tmp_path / "split", dataset=clips, **QUIET)
    for _ in range(2):
        trainer.train_step(trainer.step, trainer.total_steps)
        trainer.step += 1
    trainer.save()
    resumed = train(TrainConfig(steps=3, **VIDEO), tmp_path / "split", dataset=clips, **QUIET)
    assert [m["loss"] for m in resumed.history] == losses[2:]       # the resumed run logs step 3
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    model = jepa_from_checkpoint(load_checkpoint(tmp_path / "full"))
    assert isinstance(model.target_encoder, VideoTransformer)
    for a, b in zip(full.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_sigreg_and_joint_train_on_clips(tmp_path, clips):
    for mode in ("sigreg", "joint"):
        result = train(TrainConfig(steps=1, target_mode=mode, **VIDEO), tmp_path / mode, dataset=clips, **QUIET)
        assert math.isfinite(result.history[-1]["loss"])


def test_images_given_to_a_clip_run_are_refused(tmp_path):
    from jepa_lite.data.datasets import make_shapes

    with pytest.raises(BadValue, match="clips"):
        train(TrainConfig(steps=1, **VIDEO), tmp_path, dataset=make_shapes(8, seed=0), **QUIET)


def test_cli_trains_on_moving_shapes(tmp_path):
    from jepa_lite.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "moving-shapes", "--model", "video-micro", "--steps", "2", "--batch-size", "8",
                 "--max-train-images", "32", "--device", "cpu", "--out", str(out)]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] == 2 and checkpoint["data"]["num_images"] == 32
    assert isinstance(jepa_from_checkpoint(checkpoint).context_encoder, VideoTransformer)
