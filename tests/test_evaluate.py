import numpy as np
import pytest
import torch

from jepa_lite.core.models import VisionTransformer, ViTConfig
from jepa_lite.data.datasets import make_shapes
from jepa_lite.evaluation.probes import (
    ProbeRow,
    extract_features,
    format_table,
    knn_probe,
    last_layer_outputs,
    linear_probe,
    probe_encoders,
    raw_pixel_features,
)


def blobs(n=300, d=8, seed=0):
    """Two well separated Gaussian classes: probes must get them right."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g) + 4.0 * y[:, None].float()
    return x, y


def test_linear_probe_separates_separable_data_and_fails_on_noise():
    x, y = blobs()
    assert linear_probe(x[:200], y[:200], x[200:], y[200:], C=1.0)["accuracy"] > 0.97
    noise = torch.randn(300, 8)
    chance = linear_probe(noise[:200], y[:200], noise[200:], y[200:], C=1.0)["accuracy"]
    assert chance < 0.75


def test_linear_probe_picks_C_when_not_given():
    x, y = blobs()
    result = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert result["C"] in (0.01, 0.1, 1.0) and result["accuracy"] > 0.97


def test_knn_probe():
    x, y = blobs()
    assert knn_probe(x[:200], y[:200], x[200:], y[200:], k=5)["accuracy"] > 0.97
    # a test point identical to a training point with k=1 gets that point's label
    assert knn_probe(x[:10], y[:10], x[:10], y[:10], k=1)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_probe(x, y, x, y, k=0)


def test_feature_extraction_shapes_and_layers():
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2))
    images = make_shapes(10, image_size=16).images
    one = extract_features(enc, images, batch_size=4)
    assert one.shape == (10, 32)
    three = extract_features(enc, images, layers=3)
    assert three.shape == (10, 96)
    assert torch.allclose(three[:, -32:], one, atol=1e-5)          # last block = the default readout
    with pytest.raises(ValueError, match=r"only 3 blocks; valid: 1\.\.3"):
        extract_features(enc, images, layers=4)
    assert raw_pixel_features(images).shape == (10, 3 * 16 * 16)


def test_last_layer_outputs_reads_the_last_blocks_in_order():
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)).eval()
    x = torch.randn(2, 3, 16, 16)
    every = enc.layer_outputs(x)
    two = last_layer_outputs(enc, x, layers=2)
    assert len(two) == 2 and all(torch.equal(a, b) for a, b in zip(two, every[1:]))
    assert torch.equal(last_layer_outputs(enc, x)[0], enc(x))                  # layers=1: the final output
    with pytest.raises(ValueError, match="layers must be >= 1, got 0"):
        last_layer_outputs(enc, x, layers=0)
    pooled_only = torch.nn.Sequential(torch.nn.Identity())                     # no layer_outputs()
    with pytest.raises(ValueError, match="Sequential.*has no layer_outputs"):
        last_layer_outputs(pooled_only, x, layers=2)


def test_probe_table():
    torch.manual_seed(0)
    data = make_shapes(120, image_size=16)
    train, test = data.subset(range(80)), data.subset(range(80, 120))
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    rows = probe_encoders({"random init": enc}, train, test, C=1.0)
    assert [r.name for r in rows] == ["random init", "raw pixels"]
    assert all(0.0 <= r.linear <= 1.0 and 0.0 <= r.knn <= 1.0 for r in rows)
    text = format_table([ProbeRow("target encoder", 0.912, 0.85, 128)], "t")
    assert "target encoder" in text and "91.2" in text and "85.0" in text


@pytest.mark.slow                          # umap-learn's first call compiles with numba: ~20 s
def test_umap_embed_is_2d_and_deterministic():
    pytest.importorskip("umap")
    from jepa_lite.evaluation.probes import umap_embed
    x, _ = blobs(60)
    a, b = umap_embed(x, n_neighbors=5), umap_embed(x, n_neighbors=5)
    assert a.shape == (60, 2) and np.allclose(a, b)


def test_object_and_background_colours_average_each_part_of_the_image():
    from jepa_lite.data.images import ImageDataset
    from jepa_lite.evaluation.probes import object_and_background_colours

    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True                                         # a 2 x 2 object in the middle
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[:, 0] = torch.where(masks, 255, 0)                          # a red object on a black ground ...
    images[1, 2] = torch.where(masks[1], 0, 51)                        # ... the second on blue at 51/255
    data = ImageDataset(images, torch.zeros(2, dtype=torch.long), ["c"], masks=masks)
    expected = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0.2]])
    assert torch.allclose(object_and_background_colours(data), expected)
    with pytest.raises(ValueError, match="needs data with object masks"):
        object_and_background_colours(ImageDataset(images, torch.zeros(2, dtype=torch.long), ["c"]))


def test_variance_shares_tell_class_from_colour():
    from jepa_lite.data.datasets import make_shapes
    from jepa_lite.evaluation.probes import variance_shares

    train, test = make_shapes(400, seed=1), make_shapes(300, seed=1, start_index=10_000)

    def colours(data):            # features that are the object's mean colour, nothing else
        on = data.masks.unsqueeze(1).float()
        return (data.images.float() * on).sum(dim=(2, 3)) / on.sum(dim=(2, 3)) / 255

    class_share, colour_share = variance_shares(colours(train), colours(test), train, test)
    assert colour_share > 0.99 and class_share < 0.1
    one_hot = lambda data: torch.nn.functional.one_hot(data.labels, 10).float()  # noqa: E731
    class_share, colour_share = variance_shares(one_hot(train), one_hot(test), train, test)
    assert class_share > 0.99 and colour_share < 0.2
