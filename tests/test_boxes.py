import pytest
import torch
import torchvision

from jepa_lite.evaluation.boxes import BoxHead, average_precision, box_iou, box_probe


def test_box_iou_by_hand():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert box_iou(a, a).item() == 1.0
    assert box_iou(a, torch.tensor([5.0, 5.0, 6.0, 6.0])).item() == 0.0
    assert box_iou(a, torch.tensor([2.0, 0.0, 4.0, 2.0])).item() == 0.0          # touching edges: exclusive x1
    assert box_iou(a, torch.tensor([1.0, 1.0, 3.0, 3.0])).item() == pytest.approx(1 / 7)
    assert box_iou(a, torch.tensor([0.0, 0.0, 4.0, 2.0])).item() == pytest.approx(0.5)
    assert box_iou(torch.zeros(4), torch.zeros(4)).item() == 0.0                  # empty boxes
    assert box_iou(torch.rand(5, 1, 4), torch.rand(3, 4)).shape == (5, 3)        # broadcast, paired
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        box_iou(torch.zeros(3), torch.zeros(3))


def test_box_iou_is_the_diagonal_of_torchvisions_all_pairs_iou():
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 64, 2, generator=g) * 32                               # top-left corners
    a, b = (torch.cat([c, c + 1 + torch.rand(64, 2, generator=g) * 16], dim=1) for c in corners)   # [64, 4]
    b[:8] = a[:8]                                                                  # some identical pairs
    expected = torchvision.ops.box_iou(a, b).diagonal()
    assert (expected > 0).any() and (expected == 0).any()                          # overlapping and apart pairs
    assert torch.allclose(box_iou(a, b), expected, atol=1e-6)


def test_average_precision_by_hand():
    ious = torch.tensor([0.9, 0.1, 0.6, 0.2])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # ranked: hit, miss, hit, miss -> precision envelope 1 up to recall 1/4, 2/3 up to 2/4
    assert average_precision(ious, scores) == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    assert average_precision(torch.ones(5), torch.rand(5)) == pytest.approx(1.0)
    assert average_precision(torch.zeros(5), torch.rand(5)) == 0.0
    # no ranking (a constant score): one operating point, AP = hit rate ** 2
    assert average_precision(torch.tensor([0.9, 0.9, 0.1, 0.1]), torch.zeros(4)) == pytest.approx(0.25)
    assert average_precision(ious, scores, threshold=0.75) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        average_precision(ious, scores, threshold=1.5)


def synthetic_boxes(n, grid=8, image_size=32, signal=True, seed=0):
    """Random boxes; the features say which patches are inside and (in every patch) the box size."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.randint(8, 20, (n, 2), generator=g).float()
    x0y0 = (torch.rand(n, 2, generator=g) * (image_size - wh)).floor()
    boxes = torch.cat([x0y0, x0y0 + wh], dim=1)
    centres = (torch.arange(grid) + 0.5) * image_size / grid
    inside_x = (centres[None, :] >= boxes[:, 0:1]) & (centres[None, :] < boxes[:, 2:3])      # [n, grid]
    inside_y = (centres[None, :] >= boxes[:, 1:2]) & (centres[None, :] < boxes[:, 3:4])
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).float()                           # [n, gy, gx]
    feats = torch.randn(n, grid, grid, 6, generator=g)
    if signal:
        feats[..., 0] += 3 * inside
        feats[..., 1] += 3 * (wh[:, 0] / image_size)[:, None, None]
        feats[..., 2] += 3 * (wh[:, 1] / image_size)[:, None, None]
    return feats, boxes


def test_box_probe_learns_a_synthetic_task():
    feats, boxes = synthetic_boxes(320)
    result = box_probe(feats[:256], boxes[:256], feats[256:], boxes[256:], image_size=32, steps=150, batch_size=64)
    assert result["predictions"].shape == (64, 4) and result["scores"].shape == (64,)
    assert result["ious"].shape == (64,) and result["attention"].shape == (64, 8, 8)
    assert isinstance(result["head"], BoxHead)
    assert result["mean_iou"] > 0.55 and result["ap50"] > 0.6        # (a constant box would score ~0.25)
    noise, _ = synthetic_boxes(320, signal=False)
    blind = box_probe(noise[:256], boxes[:256], noise[256:], boxes[256:], image_size=32, steps=150, batch_size=64)
    assert blind["mean_iou"] < result["mean_iou"] - 0.2
    state = torch.get_rng_state()
    again = box_probe(feats[:256], boxes[:256], feats[256:], boxes[256:], image_size=32, steps=150, batch_size=64)
    assert torch.equal(again["predictions"], result["predictions"])            # deterministic on the CPU
    assert torch.equal(torch.get_rng_state(), state)                            # global RNG untouched
    with pytest.raises(ValueError, match="boxes must be"):
        box_probe(feats[:256], boxes[:255], feats[256:], boxes[256:], image_size=32)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        box_probe(feats[:256], boxes[:256], feats[256:], boxes[256:], image_size=32, steps=0)


def test_box_head_starts_at_the_centre():
    head = BoxHead(6, (8, 8))
    boxes, confidence, attention = head(torch.randn(3, 8, 8, 6))
    assert torch.allclose(boxes, torch.tensor([0.5, 0.5, 0.5, 0.5]).expand(3, 4), atol=1e-6)
    assert confidence.shape == (3,) and torch.allclose(attention.sum(dim=(1, 2)), torch.ones(3))
