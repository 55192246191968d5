"""The moving-shapes clips (data/moving_shapes.py) and the video pieces of V-JEPA (core/video.py), each
checked against its image piece: tubelets against PatchEmbed, 3-D positions against the 2-D table, the
spatio-temporal masks against MaskSampler, and the JEPA of core/objective.py training a VideoTransformer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepa_lite.core.masks import MaskConfig, MaskSampler, default_mask_config
from jepa_lite.core.models import PatchEmbed, PredictorConfig, gather_tokens, sincos_pos_embed_1d, sincos_pos_embed_2d
from jepa_lite.core.objective import JEPA
from jepa_lite.core.video import (
    TubeletEmbed,
    VideoConfig,
    VideoMaskSampler,
    VideoPredictor,
    VideoTransformer,
    sincos_pos_embed_3d,
    sincos_split,
    tube_indices,
)
from jepa_lite.data.datasets import normalize
from jepa_lite.data.moving_shapes import (
    MOTION_CLASSES,
    ClipDataset,
    clip_labels,
    make_moving_shapes,
    render_moving_shapes,
)
from jepa_lite.data.shapes import SHAPE_CLASSES
from jepa_lite.errors import BadValue

TINY = dict(embed_dim=48, depth=2, num_heads=3)


@pytest.fixture(scope="module")
def clips() -> ClipDataset:
    return make_moving_shapes(96, seed=0, keep_masks=True)


# ---------------------------------------------------------------------------------------------
# the clips

def test_clips_shapes_labels_and_frames_as_images(clips):
    assert clips.clips.shape == (96, 8, 3, 32, 32) and clips.clips.dtype == torch.uint8
    assert clips.masks.shape == (96, 8, 32, 32)
    assert clips.shape_classes == SHAPE_CLASSES and clips.motion_classes == MOTION_CLASSES
    assert 0 <= int(clips.shape_labels.min()) and int(clips.shape_labels.max()) < len(SHAPE_CLASSES)
    assert set(clips.motion_labels.tolist()) == set(range(len(MOTION_CLASSES)))
    assert (clips.images is clips.clips) and (clips.labels is clips.motion_labels)
    frames = clips.frames_as_images()
    assert frames.images.shape == (96 * 8, 3, 32, 32)
    assert torch.equal(frames.images[8 * 5 + 3], clips.clips[5, 3])            # image j: frame j % T of clip j // T
    assert torch.equal(frames.labels, clips.shape_labels.repeat_interleave(8))
    third = clips.frames_as_images(frame=3, labels="motion")
    assert torch.equal(third.images, clips.clips[:, 3]) and torch.equal(third.labels, clips.motion_labels)
    sub = clips.subset([4, 2])
    assert torch.equal(sub.clips, clips.clips[[4, 2]]) and torch.equal(sub.motion_labels, clips.motion_labels[[4, 2]])
    # the shape is inside the image and visible in every frame
    assert bool((clips.masks.flatten(2).sum(2) >= 8).all())
    assert not bool(clips.masks[:, :, 0].any() or clips.masks[:, :, -1].any() or clips.masks[..., 0].any())


def test_a_clip_is_a_pure_function_of_seed_and_index(clips):
    again = make_moving_shapes(5, seed=0, start_index=40)
    assert torch.equal(again.clips, clips.clips[40:45]) and torch.equal(again.motion_labels, clips.motion_labels[40:45])
    alone, *_ = render_moving_shapes(torch.tensor([77, 3]), seed=0)             # any batch, any order
    assert torch.equal(alone[0], clips.clips[77]) and torch.equal(alone[1], clips.clips[3])
    shape, motion = clip_labels(torch.arange(96), seed=0)                       # labels without rendering
    assert torch.equal(shape, clips.shape_labels) and torch.equal(motion, clips.motion_labels)
    other = make_moving_shapes(96, seed=1)
    assert not torch.equal(other.clips, clips.clips)
    assert (other.motion_labels != clips.motion_labels).float().mean() > 0.5


def test_a_motion_and_its_reverse_have_the_same_frames_in_the_opposite_order(clips):
    """What no frame can tell: the reverse of every clip is a clip of the other class of its pair, made
    of the same frames; so anything computed from the frames without their order is the same for both."""
    backwards, shape, motion, masks = render_moving_shapes(torch.arange(96), seed=0, reverse=True)
    assert torch.equal(backwards, clips.clips.flip(1)) and torch.equal(masks, clips.masks.flip(1))
    assert torch.equal(motion, clips.motion_labels ^ 1) and torch.equal(shape, clips.shape_labels)
    assert bool((motion != clips.motion_labels).all())
    flipped = clips.reversed()
    assert torch.equal(flipped.clips, backwards) and torch.equal(flipped.motion_labels, motion)
    mean_frame = lambda c: c.float().mean(1)                                   # noqa: E731
    assert torch.equal(mean_frame(backwards), mean_frame(clips.clips))


def test_the_mono_palette_draws_the_same_clips_in_grey(clips):
    """moving-shapes-mono: the same shapes, paths, clutter and frames in the grey levels of shapes-mono
    (a dark shape on a light background), and a reverse that is still the clip backwards."""
    grey = make_moving_shapes(96, seed=0, keep_masks=True, palette="mono")
    assert torch.equal(grey.masks, clips.masks) and torch.equal(grey.motion_labels, clips.motion_labels)
    assert torch.equal(grey.shape_labels, clips.shape_labels) and grey.name.startswith("moving-shapes-mono")
    frames = grey.clips.float()
    assert (frames.max(2).values - frames.min(2).values).mean() < 8          # channels differ by the noise only
    shape = frames.mean(2)[grey.masks].mean()
    background = frames.mean(2)[~grey.masks].mean()
    assert shape < 90 < 150 < background                                       # dark shape, light background
    backwards, _, motion, _ = render_moving_shapes(torch.arange(96), seed=0, reverse=True, palette="mono")
    assert torch.equal(backwards, grey.clips.flip(1)) and torch.equal(motion, grey.motion_labels ^ 1)
    with pytest.raises(BadValue, match=r"palette must be one of \('colour', 'mono'\), got 'grey'"):
        make_moving_shapes(2, palette="grey")


def test_the_shape_moves_as_its_motion_class_says(clips):
    xs = torch.arange(32).float() + 0.5
    m = clips.masks.float()                                                    # [N, T, S, S]
    mass = m.sum((2, 3))
    cx, cy = (m.sum(2) * xs).sum(2) / mass, (m.sum(3) * xs).sum(2) / mass      # [N, T]
    dx, dy, grow = cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0], mass[:, -1] / mass[:, 0]
    expected = {"right": dx > 8, "left": dx < -8, "down": dy > 8, "up": dy < -8, "grow": grow > 2.0,
                "shrink": grow < 0.5}
    for k, name in enumerate(MOTION_CLASSES):
        rows = clips.motion_labels == k
        assert bool(expected[name][rows].all()), name


def test_bad_clip_settings_are_clear_errors():
    with pytest.raises(BadValue, match="frames"):
        make_moving_shapes(2, frames=1)
    with pytest.raises(BadValue, match="clips must be"):
        ClipDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2).long(), torch.zeros(2).long(),
                    [], [])


def test_motion_needs_frames_in_order_a_linear_read_out_of_pixels():
    """The lesson of notebook 11 on raw pixels: the difference of the last and first frames' foreground
    maps tells the motion to a linear classifier; the mean frame (the frames without their order) tells
    a motion from its reverse no better than chance."""
    train, test = make_moving_shapes(1200, seed=0), make_moving_shapes(600, seed=0, start_index=100_000)

    def foreground(c: torch.Tensor) -> torch.Tensor:
        x = c.float()                                                          # [N, T, 3, S, S]
        background = x[:, 0].flatten(2).median(dim=2).values                   # [N, 3]
        f = (x - background[:, None, :, None, None]).pow(2).sum(2)             # [N, T, S, S]
        return F.avg_pool2d(f / f.flatten(1).amax(1).view(-1, 1, 1, 1), 2)    # [N, T, 16, 16]

    def ridge_accuracy(x_train, y_train, x_test, y_test) -> float:            # a linear classifier, closed form
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        add_bias = lambda x: torch.cat([(x - mean) / std, torch.ones(len(x), 1)], 1).double()  # noqa: E731
        a, b = add_bias(x_train), add_bias(x_test)
        targets = F.one_hot(y_train).double()
        w = torch.linalg.solve(a.T @ a + 100.0 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ targets)
        return (b @ w).argmax(1).eq(y_test).float().mean().item()

    f_train, f_test = foreground(train.clips), foreground(test.clips)
    change = lambda f: (f[:, -1] - f[:, 0]).flatten(1)                         # noqa: E731
    still = lambda f: f.mean(1).flatten(1)                                     # noqa: E731
    y_train, y_test = train.motion_labels, test.motion_labels
    assert ridge_accuracy(change(f_train), y_train, change(f_test), y_test) > 0.75           # 6 classes: 0.87
    assert ridge_accuracy(change(f_train), y_train % 2, change(f_test), y_test % 2) > 0.9    # direction: 0.96
    assert ridge_accuracy(still(f_train), y_train % 2, still(f_test), y_test % 2) < 0.6      # chance: 0.52


# ---------------------------------------------------------------------------------------------
# tubelets and positions

def test_tubelet_of_one_frame_is_patch_embed_on_every_frame():
    torch.manual_seed(0)
    tubelet, patch = TubeletEmbed(1, 4, 3, 24), PatchEmbed(4, 3, 24)
    with torch.no_grad():
        patch.proj.weight.copy_(tubelet.proj.weight[:, :, 0])
        patch.proj.bias.copy_(tubelet.proj.bias)
    x = torch.randn(2, 6, 3, 16, 16)
    per_frame = patch(x.flatten(0, 1)).reshape(2, 6 * 16, 24)                     # frame-grids one after another
    torch.testing.assert_close(tubelet(x), per_frame)


def test_tubelet_of_two_frames_is_patch_embed_on_the_frame_pairs_stacked_as_channels():
    torch.manual_seed(0)
    tubelet, patch = TubeletEmbed(2, 4, 3, 24), PatchEmbed(4, 6, 24)
    with torch.no_grad():
        patch.proj.weight.copy_(tubelet.proj.weight.flatten(1, 2))             # [D, C, 2, p, p] -> [D, C * 2, p, p]
        patch.proj.bias.copy_(tubelet.proj.bias)
    x = torch.randn(2, 6, 3, 16, 16)                                           # [B, T, C, H, W]
    pairs = x.view(2, 3, 2, 3, 16, 16).transpose(2, 3).reshape(2 * 3, 6, 16, 16)   # [B * T', C * 2, H, W]
    torch.testing.assert_close(tubelet(x), patch(pairs).reshape(2, 3 * 16, 24))


def test_3d_positions_are_the_2d_table_at_every_time_step_plus_a_time_block():
    for dim, (T, H, W) in ((96, (4, 8, 8)), (192, (1, 8, 8)), (128, (3, 4, 5))):
        table = sincos_pos_embed_3d(dim, (T, H, W))
        time, space = sincos_split(dim)
        assert table.shape == (T * H * W, dim) and time + 2 * space == dim and space % 2 == 0
        grid = table.view(T, H * W, dim)
        image = sincos_pos_embed_2d(dim - time, (H, W))
        for t in range(T):
            torch.testing.assert_close(grid[t, :, time:], image)               # the image's table, every step
            step = sincos_pos_embed_1d(time, torch.tensor([t]))                 # [1, time]: one row per step
            torch.testing.assert_close(grid[t, :, :time], step.expand(H * W, -1))
        # time step 0: sin 0 = 0, cos 0 = 1 in the time block
        assert torch.equal(grid[0, :, :time // 2], torch.zeros(H * W, time // 2))
        assert torch.equal(grid[0, :, time // 2:time], torch.ones(H * W, time - time // 2))
        assert torch.unique(table, dim=0).shape[0] == T * H * W                # every token has its own position
    with pytest.raises(BadValue, match="even"):
        sincos_pos_embed_3d(95, (2, 2, 2))


def test_3d_positions_are_nearer_for_nearer_tokens_in_time():
    table = sincos_pos_embed_3d(96, (4, 8, 8)).view(4, 64, 96)
    d = [(table[0, 10] - table[t, 10]).norm().item() for t in range(4)]
    assert d[0] == 0 and d[1] < d[2] < d[3]


# ---------------------------------------------------------------------------------------------
# encoder and predictor

def test_video_encoder_keeps_the_encoder_contract():
    torch.manual_seed(0)
    config = VideoConfig(**TINY)
    encoder = VideoTransformer(config)
    assert encoder.grid_size == (4, 8, 8) and encoder.num_patches == 256 and encoder.embed_dim == 48
    x = torch.randn(2, 8, 3, 32, 32)
    full = encoder(x)
    assert full.shape == (2, 256, 48)
    idx = torch.tensor([[0, 5, 64, 200], [1, 2, 3, 255]])
    assert encoder(x, idx).shape == (2, 4, 48)
    torch.testing.assert_close(encoder.embed(x, idx), gather_tokens(encoder.embed(x), idx))
    torch.testing.assert_close(encoder(x, torch.arange(256).expand(2, -1)), full)
    outputs = encoder.layer_outputs(x)
    assert len(outputs) == 2 and torch.equal(outputs[-1], full)
    # the tokens it is given see nothing of the others: change every pixel outside tubelet 0 of frames 0-1
    y = x.clone()
    y[:, 2:] += 1.0
    y[:, :2, :, 4:] -= 1.0
    y[:, :2, :, :4, 4:] += 2.0
    first = torch.zeros(2, 1, dtype=torch.long)
    torch.testing.assert_close(encoder(x, first), encoder(y, first))
    assert not torch.allclose(encoder(x, first + 64), encoder(y, first + 64))
    with pytest.raises(BadValue, match="expected clips"):
        encoder(torch.randn(2, 4, 3, 32, 32))


def test_video_config_errors_name_the_values():
    with pytest.raises(BadValue, match="valid tubelets"):
        VideoConfig(frames=8, tubelet=3)
    with pytest.raises(BadValue, match="patch"):
        VideoConfig(patch_size=5)


def test_video_predictor_is_the_image_predictor_with_3d_positions():
    torch.manual_seed(0)
    config = PredictorConfig(embed_dim=24, depth=2, num_heads=3)
    predictor = VideoPredictor(config, 48, (4, 8, 8))
    assert predictor.grid_size == (4, 8, 8)
    assert torch.equal(predictor.pos_embed, sincos_pos_embed_3d(24, (4, 8, 8)))
    assert "pos_embed" not in predictor.state_dict()                           # a fixed buffer, as in Predictor
    context = torch.randn(2, 10, 48)
    out = predictor(context, torch.arange(10).expand(2, -1), torch.arange(100, 112).view(1, 2, 6).expand(2, -1, -1))
    assert out.shape == (2, 2, 6, 48)


# ---------------------------------------------------------------------------------------------
# spatio-temporal masks

def test_video_masks_repeat_the_image_masks_through_time():
    spatial = default_mask_config((8, 8))
    sampler = VideoMaskSampler(spatial, time_steps=4)
    masks = sampler(16, generator=torch.Generator().manual_seed(3))
    image = MaskSampler(spatial)(16, generator=torch.Generator().manual_seed(3))   # the same draws
    assert masks.grid_size == (32, 8) and masks.num_patches == 256 == sampler.num_patches
    B, M, K = image.target_indices.shape
    assert masks.context_indices.shape == (B, 4 * image.context_indices.shape[1])
    assert masks.target_indices.shape == (B, M, 4 * K)
    for indices in (masks.context_indices, masks.target_indices):
        assert int(indices.min()) >= 0 and int(indices.max()) < 256
        assert bool((indices.diff(dim=-1) > 0).all())                          # sorted, unique
    context = sampler.as_grid(masks.context_mask())                            # [B, T', H', W']
    targets = sampler.as_grid(masks.target_mask())
    for t in range(4):                                                         # identical at every time step
        assert torch.equal(targets[:, t], image.target_mask().view(B, 8, 8))
        assert torch.equal(context[:, t], image.context_mask().view(B, 8, 8))
    assert not bool((context & targets).any())                                 # disjoint
    assert torch.equal(tube_indices(torch.tensor([[1, 9]]), 3, 64), torch.tensor([[1, 9, 65, 73, 129, 137]]))
    with pytest.raises(BadValue, match="time_steps"):
        VideoMaskSampler(MaskConfig(), time_steps=0)


# ---------------------------------------------------------------------------------------------
# the JEPA of core/objective.py, unchanged, on clips

def test_jepa_trains_a_video_transformer_unchanged(clips):
    torch.manual_seed(0)
    config = VideoConfig(**TINY)
    encoder = VideoTransformer(config)
    predictor = VideoPredictor(PredictorConfig(embed_dim=24, depth=2, num_heads=3), 48, config.grid_size)
    model = JEPA(encoder, predictor, loss="l1", target_norm="layer")
    T, H, W = config.grid_size
    masks = VideoMaskSampler(default_mask_config((H, W)), T)(4, generator=torch.Generator().manual_seed(0))
    x = normalize(clips.clips[:4])                                             # [B, T, 3, S, S]: normalize broadcasts
    out = model(x, masks.context_indices, masks.target_indices)
    assert out["predictions"].shape == out["targets"].shape == (*masks.target_indices.shape, 48)
    assert out["target_tokens"].shape == (4, 256, 48)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert predictor.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())      # EMA: no gradient to the target
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = out["loss"].item()
    for _ in range(3):                                                         # the loss falls on a fixed batch
        optimizer.zero_grad()
        loss = model(x, masks.context_indices, masks.target_indices)["loss"]
        loss.backward()
        optimizer.step()
        model.update_target(0.996)
    assert model(x, masks.context_indices, masks.target_indices)["loss"].item() < before


# ---------------------------------------------------------------------------------------------
# reading clips: evaluation.probes.clip_features


def test_clip_features_of_a_video_encoder_are_its_time_steps_mean_tokens_in_order(clips):
    from jepa_lite.evaluation.probes import clip_features

    torch.manual_seed(0)
    encoder = VideoTransformer(VideoConfig(patch_size=8, tubelet=2, **TINY)).eval()
    T, H, W = encoder.grid_size
    with torch.no_grad():
        tokens = encoder(normalize(clips.clips[:5]))                            # [5, T'H'W', D]
    per_step = F.layer_norm(tokens.view(5, T, H * W, -1).mean(2), (48,))        # [5, T', D]
    in_order = clip_features(encoder, clips.clips[:5], batch_size=2)
    assert in_order.shape == (5, T * 48)
    assert torch.allclose(in_order, per_step.flatten(1), atol=1e-5)
    assert torch.allclose(clip_features(encoder, clips.clips[:5], in_order=False), per_step.mean(1), atol=1e-5)
    # the order is in the features: a clip played backwards has its time steps' features in another order
    assert not torch.allclose(clip_features(encoder, clips.clips[:5].flip(1)), in_order, atol=1e-3)


def test_clip_features_of_an_image_encoder_read_frame_by_frame_and_average_away_the_order(clips):
    from jepa_lite.core.models import VisionTransformer, ViTConfig
    from jepa_lite.evaluation.probes import clip_features, extract_features

    torch.manual_seed(0)
    encoder = VisionTransformer(ViTConfig(image_size=32, patch_size=8, **TINY)).eval()
    frames = extract_features(encoder, clips.clips[:4].flatten(0, 1)).view(4, 8, -1)
    assert torch.allclose(clip_features(encoder, clips.clips[:4]), frames.flatten(1), atol=1e-5)
    averaged = clip_features(encoder, clips.clips[:4], in_order=False)
    assert torch.allclose(averaged, frames.mean(1), atol=1e-5)
    # a clip and its reverse: the same frames, so the same averaged features (and other in-order ones)
    backwards = clips.subset(slice(0, 4)).reversed().clips
    assert torch.allclose(clip_features(encoder, backwards, in_order=False), averaged, atol=1e-5)
    assert not torch.allclose(clip_features(encoder, backwards), clip_features(encoder, clips.clips[:4]), atol=1e-3)
    with pytest.raises(BadValue, match=r"clips must be \[N, T, 3, H, W\], got shape \(8, 3, 32, 32\)"):
        clip_features(encoder, clips.clips[0])
