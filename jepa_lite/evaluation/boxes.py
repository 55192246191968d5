"""Boxes: IoU, average precision, and a box probe on frozen patch features (detection, notebook 07).

    ious = box_iou(predicted, true)                     # paired boxes [..., 4] -> [...]
    ap = average_precision(ious, scores, threshold=0.5)
    det = box_probe(train_feats, train_boxes, test_feats, test_boxes, image_size)   # a small pooling head

Boxes are (x0, y0, x1, y1) with x1/y1 exclusive (width = x1 - x0), in pixels unless a function
says "normalised" (divided by the image size). The paired IoU and AP are what notebook 07 builds;
format changes and the GIoU loss come from torchvision.ops. Deterministic on the CPU for a seed.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss

from jepa_lite.errors import BadValue
from jepa_lite.evaluation.dense import check_patch_features, feature_stats


def _check_boxes(boxes: Tensor, what: str) -> None:
    if boxes.shape[-1:] != (4,):
        raise BadValue(f"{what} must be [..., 4] (x0, y0, x1, y1), got {tuple(boxes.shape)}")


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of PAIRED boxes (x0, y0, x1, y1): a [..., 4], b [..., 4] (broadcast) -> [...] in [0, 1].

    Box i of `a` is compared with box i of `b`, not every pair (torchvision.ops.box_iou compares
    every pair: its diagonal is this, at N x N the cost). Width = x1 - x0, so pixel boxes with
    exclusive x1/y1 and normalised boxes both work. Two empty boxes have IoU 0."""
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    intersection = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    area_a, area_b = ((boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1) for boxes in (a, b))
    union = area_a + area_b - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


def average_precision(ious: Tensor, scores: Tensor, threshold: float = 0.5, num_objects: int | None = None) -> float:
    """AP at an IoU threshold for one detection per ground-truth object (one object per image here).

    ious, scores: [M] (the IoU of each detection with its image's object, and its confidence).
    A detection is a true positive when iou >= threshold. Detections are ranked by score; tied
    scores form one operating point (so a detector without a ranking, e.g. a constant score, gets
    precision x recall = hit_rate ** 2). AP is the area under the precision envelope (precision
    made non-increasing in recall, as in PASCAL VOC 2010+ / COCO), with recall out of
    `num_objects` (default M)."""
    if ious.ndim != 1 or scores.shape != ious.shape:
        raise BadValue(f"ious and scores must both be [M], got {tuple(ious.shape)} and {tuple(scores.shape)}")
    if not 0.0 < threshold <= 1.0:
        raise BadValue(f"threshold must be in (0, 1], got {threshold}")
    num_objects = ious.numel() if num_objects is None else num_objects
    if num_objects < 1:
        raise BadValue(f"num_objects must be >= 1, got {num_objects}")
    order = torch.argsort(scores.double().cpu(), descending=True, stable=True)
    s = scores.double().cpu()[order]
    hit = (ious.double().cpu()[order] >= threshold).double()
    tp = hit.cumsum(0)
    count = torch.arange(1, len(s) + 1, dtype=torch.float64)
    last_of_tie = torch.ones(len(s), dtype=torch.bool)
    last_of_tie[:-1] = s[1:] != s[:-1]                # evaluate only after a whole group of tied scores
    recall = torch.cat([torch.zeros(1, dtype=torch.float64), tp[last_of_tie] / num_objects])
    precision = torch.cat([torch.ones(1, dtype=torch.float64), tp[last_of_tie] / count[last_of_tie]])
    envelope = precision.flip(0).cummax(0).values.flip(0)            # best precision at any recall >= r
    return float(((recall[1:] - recall[:-1]) * envelope[1:]).sum())


class BoxHead(nn.Module):
    """A small box head on frozen patch features [B, gh, gw, F] -> (boxes [B, 4], confidence logits [B]).

    Each patch feature (standardised with fixed training statistics) goes through Linear + GELU to
    `hidden` channels; one linear score per patch, softmaxed over the grid, is an "objectness"
    map a [B, gh * gw]. The box centre is the soft-argmax of that map (the a-weighted mean of the
    patch centres) plus a small learned offset; width, height and a confidence logit come from the
    a-weighted mean of the hidden features. Boxes are normalised (cx, cy, w, h) in [0, 1] units."""

    def __init__(self, dim: int, grid_size: tuple[int, int], hidden: int = 32,
                 mean: Tensor | None = None, std: Tensor | None = None):
        super().__init__()
        rows, cols = grid_size
        self.grid_size = (rows, cols)
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.detach().clone().float())
        self.register_buffer("std", torch.ones(dim) if std is None else std.detach().clone().float())
        ys, xs = torch.meshgrid((torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij")
        self.register_buffer("centres", torch.stack([xs, ys], dim=-1).reshape(-1, 2))      # [P, 2] (x, y)
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden, 5)             # centre offset (2), size logits (2), confidence (1)
        nn.init.zeros_(self.score.weight)           # start from a uniform map: centre (0.5, 0.5)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """feats [B, gh, gw, F] -> boxes (cx, cy, w, h) [B, 4], confidence logits [B], attention [B, gh, gw]."""
        h = F.gelu(self.proj((feats.flatten(1, 2) - self.mean) / self.std))       # [B, P, hidden]
        attention = self.score(h).squeeze(-1).softmax(dim=1)                      # [B, P]
        pooled = torch.einsum("bp,bph->bh", attention, h)                         # [B, hidden]
        o = self.out(pooled)                                                      # [B, 5]
        centre = attention @ self.centres + 0.25 * torch.tanh(o[:, :2])         # [B, 2]
        size = torch.sigmoid(o[:, 2:4])                                           # [B, 2], starts at 0.5
        return torch.cat([centre, size], dim=1), o[:, 4], attention.view(-1, *self.grid_size)


def box_probe(train_feats: Tensor, train_boxes: Tensor, test_feats: Tensor, test_boxes: Tensor, image_size: int,
              steps: int = 150, batch_size: int = 64, hidden: int = 32, lr: float = 1e-2,
              weight_decay: float = 1e-4, seed: int = 0, device: torch.device | str | None = None) -> dict:
    """Fit a BoxHead on frozen patch features and measure it on the test set.

    train_feats [N, gh, gw, F] with train_boxes [N, 4] (x0, y0, x1, y1) in pixels of an
    image_size x image_size image; test_feats [M, gh, gw, F], test_boxes [M, 4]. AdamW (lr, with
    cosine decay) for `steps` minibatches of `batch_size`, loss = 5 * smooth-L1 on normalised
    (cx, cy, w, h) + 2 * (1 - GIoU) + BCE(confidence, IoU of the predicted box) (the confidence
    learns to predict its own box's IoU, which ranks detections for AP). Deterministic on the CPU
    for a seed (the caller's global RNG is left untouched).

    Returns dict(mean_iou; ap50, ap75: average_precision at IoU 0.5 / 0.75; hit_rate: the fraction
    with IoU >= 0.5; predictions [M, 4] pixel (x0, y0, x1, y1); scores [M] in (0, 1); ious [M];
    attention [M, gh, gw]; head: the trained BoxHead, on the CPU; seconds)."""
    check_patch_features(train_feats, "train_feats")
    check_patch_features(test_feats, "test_feats")
    if train_boxes.shape != (train_feats.shape[0], 4) or test_boxes.shape != (test_feats.shape[0], 4):
        raise BadValue(f"boxes must be [N, 4] matching the features: train {tuple(train_boxes.shape)} for "
                         f"N={train_feats.shape[0]}, test {tuple(test_boxes.shape)} for M={test_feats.shape[0]}")
    if train_feats.shape[1:] != test_feats.shape[1:]:
        raise BadValue(f"train and test features differ in [gh, gw, F]: {tuple(train_feats.shape[1:])} vs "
                         f"{tuple(test_feats.shape[1:])}")
    for name, value in (("image_size", image_size), ("steps", steps), ("batch_size", batch_size), ("hidden", hidden)):
        if value < 1:
            raise BadValue(f"{name} must be >= 1, got {value}")
    if lr <= 0:
        raise BadValue(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise BadValue(f"weight_decay must be >= 0, got {weight_decay}")

    start = time.perf_counter()
    device = torch.device(device) if device is not None else train_feats.device
    dim = train_feats.shape[-1]
    mean, std = feature_stats(train_feats.reshape(-1, dim).float())
    target = box_convert(train_boxes.float().cpu() / image_size, "xyxy", "cxcywh")              # [N, 4] normalised
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = BoxHead(dim, tuple(train_feats.shape[1:3]), hidden, mean, std).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    n = train_feats.shape[0]
    batch_size = min(batch_size, n)
    order, position = torch.randperm(n, generator=generator), 0
    with torch.enable_grad():
        head.train()
        for _ in range(steps):
            if position + batch_size > n:
                order, position = torch.randperm(n, generator=generator), 0
            idx = order[position:position + batch_size]
            position += batch_size
            x = train_feats[idx].to(device, torch.float32)
            t = target[idx].to(device)
            boxes, confidence, _ = head(x)
            predicted, true = box_convert(boxes, "cxcywh", "xyxy"), box_convert(t, "cxcywh", "xyxy")
            iou = box_iou(predicted, true).detach()
            loss = (5.0 * F.smooth_l1_loss(boxes, t, beta=0.02)
                    + 2.0 * generalized_box_iou_loss(predicted, true, reduction="mean")     # 1 - GIoU
                    + F.binary_cross_entropy_with_logits(confidence, iou))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    with torch.no_grad():
        outputs = [head(test_feats[i:i + 512].to(device, torch.float32)) for i in range(0, test_feats.shape[0], 512)]
        boxes = torch.cat([o[0] for o in outputs]).float().cpu()
        scores = torch.cat([o[1] for o in outputs]).float().sigmoid().cpu()
        attention = torch.cat([o[2] for o in outputs]).float().cpu()
    predictions = box_convert(boxes, "cxcywh", "xyxy") * image_size
    ious = box_iou(predictions, test_boxes.float().cpu())
    return {"mean_iou": float(ious.mean()), "ap50": average_precision(ious, scores, 0.5),
            "ap75": average_precision(ious, scores, 0.75),
            "hit_rate": float((ious >= 0.5).float().mean()), "predictions": predictions, "scores": scores,
            "ious": ious, "attention": attention, "head": head.cpu(), "seconds": time.perf_counter() - start}
