import math

import pytest
import torch

from jepa_lite.core.models import VisionTransformer, ViTConfig
from jepa_lite.data.datasets import make_shapes, normalize
from jepa_lite.evaluation.boxes import box_probe
from jepa_lite.evaluation.dense import (
    extract_patch_features,
    patch_fractions,
    patch_labels,
    pca_rgb,
    pixel_labels,
    raw_patch_features,
    segmentation_iou,
    segmentation_probe,
    upsample_logits,
)


def small_encoder(depth=3):
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=depth, num_heads=2))


# ---------------------------------------------------------------------------------------------
# features

def test_extract_patch_features_shapes_and_layers():
    encoder = small_encoder()
    images = make_shapes(6, image_size=16).images
    one = extract_patch_features(encoder, images, batch_size=4)
    assert one.shape == (6, 4, 4, 32) and one.dtype == torch.float32
    three = extract_patch_features(encoder, images, layers=3)
    assert three.shape == (6, 4, 4, 96)
    assert torch.allclose(three[..., -32:], one, atol=1e-5)              # the last block = the default readout
    # token n sits at grid cell (n // cols, n % cols), each token layer-normed
    with torch.no_grad():
        tokens = encoder(normalize(images))                                # [6, 16, 32]
    expected = torch.nn.functional.layer_norm(tokens, (32,)).reshape(6, 4, 4, 32)
    assert torch.allclose(one, expected, atol=1e-5)
    assert encoder.training                                                # mode restored
    with pytest.raises(ValueError, match="only 3 blocks"):
        extract_patch_features(encoder, images, layers=4)
    with pytest.raises(ValueError, match="layers must be >= 1, got 0"):
        extract_patch_features(encoder, images, layers=0)
    with pytest.raises(ValueError, match="uint8"):
        extract_patch_features(encoder, images.float())


def test_raw_patch_features():
    images = make_shapes(3, image_size=16).images
    raw = raw_patch_features(images, 4)
    assert raw.shape == (3, 4, 4, 48)
    assert torch.equal(raw[1, 2, 3], normalize(images)[1, :, 8:12, 12:16].reshape(-1))
    with pytest.raises(ValueError, match=r"patch_size 3 must divide the image size 16x16; valid: \[1, 2, 4, 8, 16\]"):
        raw_patch_features(images, 3)


# ---------------------------------------------------------------------------------------------
# labels and scores

def test_patch_labels_on_a_hand_made_mask():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True          # top-left patch: full
    mask[0, 0, 2:4] = True            # top-right patch: half (a tie goes to the object)
    mask[0, 3, 0] = True              # bottom-left patch: a quarter -> background
    labels = torch.tensor([3])
    assert torch.equal(patch_fractions(mask, 2), torch.tensor([[[1.0, 0.5], [0.25, 0.0]]]))
    assert torch.equal(patch_labels(mask, labels, 2), torch.tensor([[[4, 4], [0, 0]]]))
    assert torch.equal(patch_labels(mask, labels, 2, min_fraction=0.75), torch.tensor([[[4, 0], [0, 0]]]))
    assert torch.equal(patch_labels(mask, labels, 2, min_fraction=0.25), torch.tensor([[[4, 4], [4, 0]]]))
    assert torch.equal(pixel_labels(mask, labels)[0, 0], torch.tensor([4, 4, 4, 4]))
    with pytest.raises(ValueError, match=r"min_fraction must be in \(0, 1\], got 0"):
        patch_labels(mask, labels, 2, min_fraction=0)
    with pytest.raises(ValueError, match="patch_size 3 must divide"):
        patch_labels(mask, labels, 3)


def test_patch_labels_on_shapes_are_the_patch_majority():
    data = make_shapes(20, image_size=32)
    targets = patch_labels(data.masks, data.labels, 4)
    pixels = pixel_labels(data.masks, data.labels)                       # [N, 32, 32]
    assert targets.shape == (20, 8, 8) and pixels.shape == (20, 32, 32)
    on_object = pixels.reshape(20, 8, 4, 8, 4).ne(0).float().mean(dim=(2, 4))
    assert torch.equal(targets > 0, on_object >= 0.5)
    assert set(targets.unique().tolist()) <= set(range(11))


def test_segmentation_iou_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    scores = segmentation_iou(predicted, target, num_classes=4)
    # class 0: I=1, U=3; class 1: I=2, U=3; class 2: I=1, U=2; class 3 absent -> nan, left out of the mean
    expected = torch.tensor([1 / 3, 2 / 3, 1 / 2, float("nan")], dtype=torch.float64)
    assert torch.allclose(scores["per_class_iou"], expected, equal_nan=True)
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["fg_iou"] == pytest.approx(3 / 5)                       # fg: I = 3 (idx 2, 3, 5), U = 5
    with pytest.raises(ValueError, match=r"targets must be in \[0, 1\], got \[0, 2\]"):
        segmentation_iou(predicted.clamp(max=1), target, num_classes=2)


def test_upsample_logits_shape():
    assert upsample_logits(torch.randn(2, 8, 8, 11), (32, 32)).shape == (2, 11, 32, 32)


# ---------------------------------------------------------------------------------------------
# the segmentation probe

def synthetic_segmentation(n=240, grid=4, dim=16, classes=11, signal=3.0, seed=0):
    """Per-patch labels (half background) linearly encoded in the features, or pure noise."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, classes, (n, grid, grid), generator=g)
    targets[torch.rand(n, grid, grid, generator=g) < 0.5] = 0
    code = torch.randn(classes, dim, generator=g)
    noise = torch.randn(n, grid, grid, dim, generator=g)
    return signal * code[targets] + noise, noise.flip(0), targets


def test_segmentation_probe_learns_linear_labels_and_not_noise():
    feats, noise, targets = synthetic_segmentation()
    train, test = slice(0, 160), slice(160, 240)
    pixels = targets[test].repeat_interleave(2, 1).repeat_interleave(2, 2)             # [80, 8, 8]
    good = segmentation_probe(feats[train], targets[train], feats[test], targets[test], num_classes=11,
                              steps=50, test_pixel_targets=pixels)
    assert good["miou"] > 0.9 and good["fg_iou"] > 0.95
    assert good["predictions"].shape == (80, 4, 4) and good["per_class_iou"].shape == (11,)
    assert good["pixel_predictions"].shape == (80, 8, 8) and good["pixel_miou"] > 0.5
    assert good["weight"].shape == (11, 16) and good["bias"].shape == (11,)
    logits = feats[test] @ good["weight"].T + good["bias"]
    assert torch.equal(logits.argmax(-1), good["predictions"])
    chance = segmentation_probe(noise[train], targets[train], noise[test], targets[test], num_classes=11, steps=50)
    assert chance["miou"] < 0.25
    again = segmentation_probe(feats[train], targets[train], feats[test], targets[test], num_classes=11,
                               steps=50, test_pixel_targets=pixels)
    assert torch.equal(again["weight"], good["weight"]) and torch.equal(again["predictions"], good["predictions"])


def test_segmentation_probe_subsample_and_errors():
    feats, _, targets = synthetic_segmentation(n=60)
    sub = segmentation_probe(feats[:40], targets[:40], feats[40:], targets[40:], num_classes=11, steps=20,
                             max_train_patches=300)
    assert sub["miou"] > 0.5
    with pytest.raises(ValueError, match="targets must be"):
        segmentation_probe(feats[:40], targets[:39], feats[40:], targets[40:])
    with pytest.raises(ValueError, match=r"train_targets must be in \[0, 4\], got \[0, 10\]"):
        segmentation_probe(feats[:40], targets[:40], feats[40:], targets[40:], num_classes=5)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        segmentation_probe(feats[:40], targets[:40], feats[40:], targets[40:], steps=0)
    with pytest.raises(ValueError, match=r"patch features \[N, gh, gw, F\]"):
        segmentation_probe(feats[:40].flatten(1, 2), targets[:40], feats[40:], targets[40:])


# ---------------------------------------------------------------------------------------------
# PCA picture

def test_pca_rgb_range_shape_and_first_component():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 4, 4, 10, generator=g)
    feats[..., 3] *= 30.0                                   # the dominant direction is channel 3
    rgb = pca_rgb(feats)
    assert rgb.shape == (5, 4, 4, 3)
    flat = rgb.reshape(-1, 3)
    assert torch.allclose(flat.min(0).values, torch.zeros(3)) and torch.allclose(flat.max(0).values, torch.ones(3))
    # component 0 is channel 3, min-max scaled (sign fixed so the loading is positive)
    c3 = feats[..., 3]
    assert torch.allclose(rgb[..., 0], (c3 - c3.min()) / (c3.max() - c3.min()), atol=0.02)
    assert torch.equal(pca_rgb(feats), rgb)                                       # deterministic
    assert torch.allclose(pca_rgb(-feats), 1 - rgb, atol=1e-5)                    # same axes, coordinates negated
    with pytest.raises(ValueError, match=r"num_components must be in \[1, 10\]"):
        pca_rgb(feats, num_components=11)


def test_dense_pipeline_on_shapes_end_to_end():
    data = make_shapes(48, image_size=16)
    encoder = small_encoder(depth=2)
    feats = extract_patch_features(encoder, data.images, layers=2)            # [48, 4, 4, 64]
    targets = patch_labels(data.masks, data.labels, 4)
    seg = segmentation_probe(feats[:32], targets[:32], feats[32:], targets[32:], num_classes=11, steps=10,
                             test_pixel_targets=pixel_labels(data.masks[32:], data.labels[32:]))
    assert 0.0 <= seg["miou"] <= 1.0 and seg["pixel_predictions"].shape == (16, 16, 16)
    det = box_probe(feats[:32], data.boxes[:32], feats[32:], data.boxes[32:], image_size=16, steps=5)
    assert 0.0 <= det["mean_iou"] <= 1.0 and det["predictions"].shape == (16, 4)
    assert pca_rgb(feats).shape == (48, 4, 4, 3)
    assert not math.isnan(seg["fg_iou"])
