"""Tests of jepa_lite.data.datasets: procedural shapes, image folders, augmentation, batching."""

from __future__ import annotations

import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jepa_lite.data import datasets, shapes
from jepa_lite.data.augment import BatchAugment
from jepa_lite.data.datasets import iterate_batches, load_dataset, make_shapes, normalize
from jepa_lite.data.images import ImageDataset, _balanced_indices

# ---------------------------------------------------------------------------------------------- shapes

def _splitmix64_reference(state: int) -> int:
    """Plain-Python splitmix64 output for a state (uint64 arithmetic)."""
    mask = (1 << 64) - 1
    z = state & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_hash_matches_reference_splitmix64():
    # the int64 tensor version (wrapping multiply, emulated logical shifts) must equal uint64 math
    states = [0, 1, 12345, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15]
    signed = torch.tensor([s - (1 << 64) if s >= 1 << 63 else s for s in states], dtype=torch.int64)
    got = [int(v) & ((1 << 64) - 1) for v in shapes._mix64(signed)]
    assert got == [_splitmix64_reference(s) for s in states]


def test_shapes_types_and_shapes():
    ds = make_shapes(50, image_size=24)
    assert len(ds) == 50 and ds.image_size == 24
    assert ds.images.shape == (50, 3, 24, 24) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (50,) and ds.labels.dtype == torch.int64
    assert ds.masks.shape == (50, 24, 24) and ds.masks.dtype == torch.bool
    assert ds.boxes.shape == (50, 4) and ds.boxes.dtype == torch.float32
    assert ds.classes == shapes.SHAPE_CLASSES and len(ds.classes) == 10
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < 10


def test_shapes_deterministic_by_index():
    whole = make_shapes(64, seed=3)
    tail = make_shapes(32, seed=3, start_index=32)
    assert torch.equal(whole.images[32:], tail.images)
    assert torch.equal(whole.labels[32:], tail.labels)
    assert torch.equal(whole.masks[32:], tail.masks)
    assert torch.equal(whole.boxes[32:], tail.boxes)
    # one image alone, at an odd offset, in a batch of one
    single = make_shapes(1, seed=3, start_index=45)
    assert torch.equal(single.images[0], whole.images[45])
    # across the internal chunk boundary (256 images at 32 px)
    big = make_shapes(300, seed=3)
    assert torch.equal(big.images[250:300], make_shapes(50, seed=3, start_index=250).images)


def test_shapes_seeds_differ():
    a, b = make_shapes(64, seed=0), make_shapes(64, seed=1)
    assert not torch.equal(a.images, b.images)
    assert (a.labels != b.labels).float().mean() > 0.5
    assert (a.images != make_shapes(64, seed=0, start_index=64).images).any()


def test_shapes_labels_roughly_uniform():
    # labels (like every parameter) depend on (seed, index) only, so 8 px renders them 16x cheaper
    assert torch.equal(make_shapes(300, image_size=8).labels, make_shapes(300, image_size=32).labels)
    counts = torch.bincount(make_shapes(10_000, image_size=8).labels, minlength=10).float()
    # 1000 expected per class, binomial std ~30: 5 std either side
    assert counts.min() > 850 and counts.max() < 1150, counts


def test_shapes_masks_nonempty_and_boxes_tight():
    ds = make_shapes(2_000, seed=7)
    area = ds.masks.flatten(1).sum(1)
    assert (area >= 12).all(), "every image must show its shape"
    ys, xs = torch.arange(32).view(1, 32, 1), torch.arange(32).view(1, 1, 32)
    big = 10**6
    x0 = torch.where(ds.masks, xs, big).flatten(1).min(1).values
    y0 = torch.where(ds.masks, ys, big).flatten(1).min(1).values
    x1 = torch.where(ds.masks, xs, -1).flatten(1).max(1).values + 1
    y1 = torch.where(ds.masks, ys, -1).flatten(1).max(1).values + 1
    assert torch.equal(ds.boxes, torch.stack([x0, y0, x1, y1], 1).float())
    # the shape is drawn on top: its pixels are coloured, so the mask shows in the image
    assert (ds.boxes[:, 2] > ds.boxes[:, 0]).all() and (ds.boxes[:, 3] > ds.boxes[:, 1]).all()


def test_mask_boxes_empty_mask_is_zero():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[1, 2:5, 3:4] = True
    assert shapes.mask_boxes(masks).tolist() == [[0, 0, 0, 0], [3, 2, 4, 5]]


def test_shape_pixels_differ_from_background():
    # the shape must be visible: its mean colour differs from the mean colour around it
    ds = make_shapes(500, seed=2)
    x = ds.images.float()
    m = ds.masks.unsqueeze(1).float()
    inside = (x * m).sum((2, 3)) / m.sum((2, 3))
    outside = (x * (1 - m)).sum((2, 3)) / (1 - m).sum((2, 3))
    assert ((inside - outside).abs().max(1).values > 40).float().mean() > 0.95


def test_load_dataset_shapes_splits_are_disjoint_and_sized():
    train = load_dataset("shapes", "train", max_images=40)
    test = load_dataset("shapes", "test", max_images=40)
    assert len(train) == 40 and len(test) == 40 and train.image_size == 32
    assert torch.equal(train.images, make_shapes(40, seed=0).images)
    assert torch.equal(test.images, make_shapes(40, seed=0, start_index=1_000_000).images)
    assert load_dataset("shapes", "test", image_size=16, max_images=3).image_size == 16


def test_mono_palette_is_the_same_images_in_grey():
    colour, mono = make_shapes(300, seed=3), make_shapes(300, seed=3, palette="mono")
    # the palette changes colours only: same classes, same object pixels, same boxes
    assert torch.equal(colour.labels, mono.labels) and torch.equal(colour.masks, mono.masks)
    assert torch.equal(colour.boxes, mono.boxes)
    x = mono.images.float()
    # grey: the channels differ only by the per-channel pixel noise (std <= 10 grey levels)
    assert (x - x.mean(1, keepdim=True)).abs().mean() < 4
    assert (colour.images.float() - colour.images.float().mean(1, keepdim=True)).abs().mean() > 20
    # a dark shape on a light background, in every image
    m = mono.masks.unsqueeze(1).float()
    inside = (x * m).sum((1, 2, 3)) / m.sum((1, 2, 3))
    outside = (x * (1 - m)).sum((1, 2, 3)) / (1 - m).sum((1, 2, 3))
    assert (outside - inside).min() > 80
    assert torch.equal(load_dataset("shapes-mono", "test", max_images=20).images,
                       make_shapes(20, start_index=1_000_000, palette="mono").images)
    assert load_dataset("shapes-mono", "train", max_images=5).name == "shapes-mono[train]"


def test_unknown_palette_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"palette must be one of \('colour', 'mono'\), got 'gray'"):
        make_shapes(4, palette="gray")


# ---------------------------------------------------------------------------------------------- specs

def test_unknown_spec_and_split_errors():
    with pytest.raises(ValueError, match="valid specs.*shapes.*shapes-mono.*cifar10.*stl10.*imagefolder"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_dataset("shapes", "validation")
    with pytest.raises(ValueError, match="unlabeled"):
        load_dataset("cifar10", "unlabeled")
    assert "imagefolder:PATH" in datasets.DATASET_SPECS


def test_cifar_missing_offline_raises_clear_error(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(RuntimeError, match=r"(?s)could not load cifar10.*--data shapes.*imagefolder"):
        load_dataset("cifar10", "train", root=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------- image folders

def _write(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 12), fmt: str | None = None,
           color=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if color is not None:
        arr[:] = color
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path, fmt)


def _make_folder(root: Path, per_class: int = 3) -> None:
    for c, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            _write(root / name / f"{i}.png", color=(100 * c, 50, 200))


def test_imagefolder_basic_and_modes(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root)
    _write(root / "cat" / "gray.png", mode="L", color=77)
    _write(root / "dog" / "alpha.png", mode="RGBA", color=(10, 20, 30, 128))
    _write(root / "dog" / "photo.jpg", size=(16, 20), fmt="JPEG")         # non-square: center crop
    ds = load_dataset(f"imagefolder:{root}", "train", root=None, image_size=8)
    assert ds.classes == ["cat", "dog"]
    assert ds.images.shape == (9, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0] * 4 + [1] * 5
    files = ["0.png", "1.png", "2.png", "gray.png", "0.png", "1.png", "2.png", "alpha.png", "photo.jpg"]
    gray = ds.images[files.index("gray.png")]
    assert (gray == 77).all()                                   # L -> 3 equal channels
    alpha = ds.images[7]
    assert alpha[:, 0, 0].tolist() == [10, 20, 30]              # RGBA -> RGB (alpha dropped)
    assert ds.images[0][:, 0, 0].tolist() == [0, 50, 200]


def test_imagefolder_default_size_is_first_image(tmp_path):
    _write(tmp_path / "a" / "0.png", size=(10, 14))
    _write(tmp_path / "a" / "1.png", size=(30, 30))
    ds = load_dataset(f"imagefolder:{tmp_path}", root=None)
    assert ds.image_size == 10 and len(ds) == 2


def test_imagefolder_flat_folder_is_one_class(tmp_path):
    for i in range(3):
        _write(tmp_path / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path}", root=None)
    assert len(ds) == 3 and ds.classes == [tmp_path.name] and ds.labels.tolist() == [0, 0, 0]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", root=None)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no image files.*empty"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", root=None)
    bad = tmp_path / "bad" / "cls"
    bad.mkdir(parents=True)
    (bad / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could be read"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}", root=None)
    _make_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match="--test-data"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", "test", root=None)


def test_imagefolder_corrupt_file_is_skipped_with_warning(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = load_dataset(f"imagefolder:{tmp_path}", root=None)
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_imagefolder_train_test_layout(tmp_path):
    _make_folder(tmp_path / "train", per_class=3)
    _make_folder(tmp_path / "val", per_class=2)
    train = load_dataset(f"imagefolder:{tmp_path}", "train", root=None)
    test = load_dataset(f"imagefolder:{tmp_path}", "test", root=None)
    assert (len(train), len(test)) == (6, 4)
    assert train.classes == test.classes == ["cat", "dog"]


def test_imagefolder_max_images_balanced_and_deterministic(tmp_path):
    for name in ("a", "b", "c"):
        for i in range(10):
            _write(tmp_path / name / f"{i:02d}.png", size=(4, 4))
    spec = f"imagefolder:{tmp_path}"
    ds = load_dataset(spec, root=None, max_images=9)
    assert torch.bincount(ds.labels).tolist() == [3, 3, 3]
    assert torch.equal(ds.images, load_dataset(spec, root=None, max_images=9).images)


def test_imagefolder_disk_cache_roundtrip(tmp_path):
    _make_folder(tmp_path / "imgs")
    spec = f"imagefolder:{tmp_path / 'imgs'}"
    first = load_dataset(spec, root=tmp_path / "root")
    cached = list((tmp_path / "root" / "cache").glob("*.pt"))
    assert len(cached) == 1
    second = load_dataset(spec, root=tmp_path / "root")
    assert torch.equal(first.images, second.images) and first.classes == second.classes
    # a changed file changes the key: a new cache entry, and the new pixels
    changed = tmp_path / "imgs" / "cat" / "0.png"
    _write(changed, color=(1, 2, 3))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**10))  # a later mtime
    third = load_dataset(spec, root=tmp_path / "root")
    assert third.images[0][:, 0, 0].tolist() == [1, 2, 3]


def test_resize_uint8():
    images = torch.full((3, 3, 40, 40), 90, dtype=torch.uint8)
    images[:, 1] = 200
    out = datasets._resize_uint8(images, 16, chunk=2)              # several chunks
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.uint8
    assert (out[:, 0] == 90).all() and (out[:, 1] == 200).all()
    assert datasets._resize_uint8(images, 40) is images


def test_balanced_indices():
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 10)
    idx = _balanced_indices(labels, 8)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [3, 2, 3]
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 8


# ---------------------------------------------------------------------------------------------- dataset object

def test_dataset_subset_and_to():
    ds = make_shapes(10)
    sub = ds.subset([3, 1])
    assert torch.equal(sub.images[0], ds.images[3]) and torch.equal(sub.masks[1], ds.masks[1])
    assert torch.equal(sub.boxes, ds.boxes[[3, 1]]) and sub.classes == ds.classes
    assert len(ds.subset(slice(2, 5))) == 3
    assert len(ds.subset(ds.labels == ds.labels[0])) == int((ds.labels == ds.labels[0]).sum())
    moved = ds.to("cpu")
    assert torch.equal(moved.images, ds.images) and moved.masks is not None
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), ["x"])   # not uint8


# ---------------------------------------------------------------------------------------------- augmentation

def test_normalize_constants():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    y = normalize(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.flatten(), (torch.tensor([0, 128, 255]) / 255 - 0.5) / 0.25)


def test_augment_identity_case():
    images = make_shapes(16).images
    aug = BatchAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False)
    out = aug(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, normalize(images), atol=1e-5, rtol=0)


def test_augment_deterministic_given_seed_and_random_otherwise():
    images = make_shapes(16).images
    aug = BatchAugment(output_size=24)
    a = aug(images, torch.Generator().manual_seed(5))
    b = aug(images, torch.Generator().manual_seed(5))
    c = aug(images, torch.Generator().manual_seed(6))
    assert a.shape == (16, 3, 24, 24)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_augment_flips_actually_flip():
    images = make_shapes(64).images
    aug = BatchAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=True)
    out = aug(images, torch.Generator().manual_seed(0))
    ref = normalize(images)
    same = (out - ref).abs().flatten(1).amax(1) < 1e-4
    flipped = (out - ref.flip(-1)).abs().flatten(1).amax(1) < 1e-4
    assert (same ^ flipped).all()                       # each image exactly one of the two
    assert 10 < int(flipped.sum()) < 54                 # ~half are flipped


def test_augment_crop_is_a_zoom_of_the_image():
    # an image dark on the left, bright on the right; 8x8 px crops (1/16 of the area) are zoomed to
    # 32 px: about a third lie fully in the dark half, a third fully in the bright half
    images = torch.zeros(32, 3, 32, 32, dtype=torch.uint8)
    images[..., 16:] = 255
    aug = BatchAugment(crop_scale=(1 / 16, 1 / 16), crop_ratio=(1.0, 1.0), hflip=False)
    out = aug(images, torch.Generator().manual_seed(1))
    means = out.mean((1, 2, 3))
    assert means.min() < -1.9 and means.max() > 1.9 and out.shape == images.shape


def test_augment_fallback_when_no_crop_fits():
    # ratio far from the image's: torchvision-style fallback to the largest centred crop, no error
    images = make_shapes(4).images
    out = BatchAugment(crop_scale=(1.0, 1.0), crop_ratio=(3.0, 4.0), hflip=False)(images, torch.Generator())
    assert out.shape == images.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------- batching

def test_iterate_batches_covers_each_index_once():
    ds = make_shapes(10)
    ds.labels = torch.arange(10)                        # labels as ids, to recover the order
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(ds, 4, g, drop_last=False))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))             # shuffled
    for x, y in batches:
        assert torch.equal(x, ds.images[y])
    assert [len(y) for _, y in iterate_batches(ds, 4, g)] == [4, 4]          # drop_last
    again = torch.cat([y for _, y in iterate_batches(ds, 4, torch.Generator().manual_seed(0), drop_last=False)])
    assert torch.equal(seen, again)


def test_no_warnings_on_clean_paths(tmp_path):
    _make_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(f"imagefolder:{tmp_path}", root=None)
        make_shapes(10)


def test_scramble_colours_permutes_and_inverts_channels_only():
    """Each output channel is one input channel, possibly inverted (in [0, 1] pixel values), the three
    are a permutation, the draw depends only on the generator, and shapes are untouched."""
    from jepa_lite.data.augment import scramble_colours
    from jepa_lite.data.datasets import NORM_MEAN, NORM_STD, normalize

    images = make_shapes(16, seed=3).images
    x = normalize(images)
    out = scramble_colours(x, torch.Generator().manual_seed(0))
    again = scramble_colours(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out, again)
    mean, std = torch.tensor(NORM_MEAN).view(1, 3, 1, 1), torch.tensor(NORM_STD).view(1, 3, 1, 1)
    pixels_in, pixels_out = x * std + mean, out * std + mean
    changed = 0
    for b in range(len(images)):
        sources = []
        for c in range(3):
            matches = [(s, inv) for s in range(3) for inv in (False, True)
                       if torch.allclose(pixels_out[b, c], 1 - pixels_in[b, s] if inv else pixels_in[b, s], atol=1e-5)]
            assert matches, (b, c)
            sources.append(matches[0][0])
        assert sorted(sources) == [0, 1, 2]
        changed += not torch.allclose(pixels_out[b], pixels_in[b], atol=1e-5)
    assert changed >= 12                            # 47 of the 48 colourings change the image


def test_colour_views_feed_the_encoders_other_colours(tmp_path):
    """"same" gives both encoders one picture; "target" gives the target encoder a recoloured copy and the
    context encoder the picture "same" gives it; "both" recolours each view."""
    from jepa_lite.engine.config import TrainConfig
    from jepa_lite.engine.train import Trainer

    data = make_shapes(32, seed=0, image_size=16)
    seen = {}
    for views in ("same", "target", "both"):
        config = TrainConfig(steps=1, colour_views=views, model="micro", batch_size=8, image_size=16, patch_size=2,
                             device="cpu")
        trainer = Trainer(config, tmp_path / views, dataset=data, progress=False, log=lambda *a: None)
        calls = []
        model = trainer.forward

        def spy(images, context_indices, target_indices, target_images=None, model=model, calls=calls):
            calls.append((images.clone(), None if target_images is None else target_images.clone()))
            return model(images, context_indices, target_indices, target_images)
        trainer.forward = spy
        trainer.train_step(0, 1)
        seen[views] = calls[0]
    assert seen["same"][1] is None
    assert torch.equal(seen["target"][0], seen["same"][0]) and not torch.equal(seen["target"][1], seen["same"][0])
    assert not torch.equal(seen["both"][0], seen["same"][0]) and not torch.equal(seen["both"][1], seen["both"][0])
    with pytest.raises(ValueError, match="unknown colour_views 'grey'"):
        TrainConfig(colour_views="grey")
