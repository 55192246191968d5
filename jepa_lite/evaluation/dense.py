"""Dense read-outs of frozen encoders: per-patch features, patch labels, a segmentation probe, PCA pictures.

The I-JEPA paper names object detection and semantic segmentation as downstream uses of the
target encoder. On the procedural "shapes" set (masks and boxes come free with every image) both
can be measured without a download, with read-outs small enough that the encoder does the work:

    feats = extract_patch_features(encoder, images, layers=4)      # [N, gh, gw, F], frozen
    targets = patch_labels(masks, labels, patch_size)              # [N, gh, gw] 0 = background, 1 + class
    seg = segmentation_probe(train_feats, train_targets, test_feats, test_targets)   # linear per patch
    det = box_probe(train_feats, train_boxes, test_feats, test_boxes, image_size)    # jepa_lite.evaluation.boxes
    rgb = pca_rgb(feats)                                           # [N, gh, gw, 3] in [0, 1]

Everything is deterministic on the CPU for a seed. Boxes (IoU, AP, the box probe) are in jepa_lite.evaluation.boxes.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from jepa_lite.data.datasets import normalize
from jepa_lite.engine.device import autocast_context  # bf16/fp16 autocast by the GPU's capability, a no-op on the CPU
from jepa_lite.errors import BadValue
from jepa_lite.evaluation.probes import last_layer_outputs


def check_patch_features(feats: Tensor, what: str) -> None:
    if not isinstance(feats, Tensor) or feats.ndim != 4 or not feats.is_floating_point():
        shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise BadValue(f"{what} must be float patch features [N, gh, gw, F], got {shape}")
    if feats.shape[0] < 1:
        raise BadValue(f"{what} must hold at least 1 image, got N={feats.shape[0]}")


# ---------------------------------------------------------------------------------------------
# features

@torch.no_grad()
def extract_patch_features(encoder: nn.Module, images: Tensor, layers: int = 1, batch_size: int = 256,
                           device: torch.device | str | None = None) -> Tensor:
    """Frozen per-patch features: uint8 images [N, 3, H, W] -> float32 [N, gh, gw, layers * D] on the CPU.

    Runs the encoder on the full image (no mask) in batches of `batch_size`, on `device` (default:
    the encoder's device), without gradients and in eval mode (its mode is restored afterwards).
    Like `probes.extract_features` but without pooling: each of the last `layers` blocks' token
    outputs [N, gh * gw, D] is layer-normed over channels, the blocks are concatenated along
    channels, and the row-major tokens are laid out on the (gh, gw) grid (`encoder.grid_size`).
    Encoders without `layer_outputs` support layers=1."""
    if layers < 1:
        raise BadValue(f"layers must be >= 1, got {layers}")
    if batch_size < 1:
        raise BadValue(f"batch_size must be >= 1, got {batch_size}")
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise BadValue(f"images must be uint8 [N, 3, H, W], got {tuple(images.shape)} {images.dtype}")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    rows, cols = encoder.grid_size
    was_training = encoder.training
    encoder.eval()
    out = None                                   # filled in place: no second copy from a torch.cat
    try:
        for start in range(0, images.shape[0], batch_size):
            x = normalize(images[start:start + batch_size].to(device))
            with autocast_context(device):
                outputs = last_layer_outputs(encoder, x, layers)
            normed = [F.layer_norm(o.float(), (o.shape[-1],)) for o in outputs]          # each [B, N, D]
            tokens = torch.cat(normed, dim=-1)                                            # [B, N, layers * D]
            if out is None:
                out = torch.empty(images.shape[0], rows, cols, tokens.shape[-1])
            out[start:start + tokens.shape[0]] = tokens.reshape(tokens.shape[0], rows, cols, -1).cpu()
    finally:
        encoder.train(was_training)
    if out is None:
        raise BadValue("images must hold at least 1 image, got N=0")
    return out


def raw_patch_features(images: Tensor, patch_size: int) -> Tensor:
    """The no-learning baseline: uint8 images [N, 3, H, W] -> normalised pixels of each patch,
    float32 [N, H / p, W / p, 3 * p * p] (channel-major within a patch, like a patch embedding's input)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise BadValue(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    _check_patch_size(patch_size, images.shape[-2:])
    x = normalize(images).cpu()                                                   # [N, 3, H, W]
    n, c, h, w = x.shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)          # [N, gh, gw, 3, p, p]
    return x.reshape(n, h // p, w // p, c * p * p).contiguous()


def _check_patch_size(patch_size: int, hw) -> None:
    h, w = int(hw[0]), int(hw[1])
    if patch_size < 1 or h % patch_size or w % patch_size:
        valid = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
        raise BadValue(f"patch_size {patch_size} must divide the image size {h}x{w}; valid: {valid}")


# ---------------------------------------------------------------------------------------------
# segmentation targets and scores

def patch_fractions(masks: Tensor, patch_size: int) -> Tensor:
    """Fraction of each patch covered by the mask: bool [N, H, W] -> float32 [N, H / p, W / p] in [0, 1]."""
    if masks.ndim != 3:
        raise BadValue(f"masks must be [N, H, W], got {tuple(masks.shape)}")
    _check_patch_size(patch_size, masks.shape[-2:])
    return F.avg_pool2d(masks.float().unsqueeze(1), patch_size).squeeze(1)


def pixel_labels(masks: Tensor, labels: Tensor) -> Tensor:
    """Per-pixel semantic labels: masks bool [N, H, W], labels [N] -> int64 [N, H, W],
    0 for background and 1 + labels[i] on image i's object."""
    if masks.ndim != 3 or labels.shape != (masks.shape[0],):
        raise BadValue(f"masks must be [N, H, W] and labels [N], got {tuple(masks.shape)} and "
                         f"{tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise BadValue(f"labels must be >= 0, got min {int(labels.min())}")
    return masks.long() * (labels.long() + 1).view(-1, 1, 1)


def patch_labels(masks: Tensor, labels: Tensor, patch_size: int, min_fraction: float = 0.5) -> Tensor:
    """Per-patch semantic labels: masks bool [N, H, W], labels [N] -> int64 [N, H / p, W / p].

    A patch is labelled 1 + labels[i] (the object's class) when at least `min_fraction` of its
    pixels lie on the object, else 0 (background): with one object per image and 0.5 this is
    the majority vote of the patch's pixel labels (ties go to the object)."""
    if not 0.0 < min_fraction <= 1.0:
        raise BadValue(f"min_fraction must be in (0, 1], got {min_fraction}")
    fractions = patch_fractions(masks, patch_size)                                # [N, gh, gw]
    if labels.shape != (masks.shape[0],):
        raise BadValue(f"labels must be [N={masks.shape[0]}], got {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise BadValue(f"labels must be >= 0, got min {int(labels.min())}")
    return (fractions >= min_fraction).long() * (labels.long().cpu() + 1).view(-1, 1, 1).to(fractions.device)


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """int64 [C, C] counts, row = target class, column = predicted class (any equal shapes)."""
    if predictions.shape != targets.shape:
        raise BadValue(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in shape")
    p, t = predictions.reshape(-1).long().cpu(), targets.reshape(-1).long().cpu()
    for name, v in (("predictions", p), ("targets", t)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            raise BadValue(f"{name} must be in [0, {num_classes - 1}], got [{int(v.min())}, {int(v.max())}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).view(num_classes, num_classes)


def segmentation_iou(predictions: Tensor, targets: Tensor, num_classes: int) -> dict:
    """Intersection over union, accumulated over the whole set (not averaged per image).

    predictions, targets: int [...] with values in [0, num_classes), class 0 = background.
    Returns dict(miou: the mean of per_class_iou over classes present in targets or predictions,
    per_class_iou: float64 [C] (nan where a class is in neither), fg_iou: IoU of "not background")."""
    cm = confusion_matrix(predictions, targets, num_classes).double()
    intersection = cm.diag()
    union = cm.sum(0) + cm.sum(1) - intersection
    per_class = torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))
    fg_inter = cm[1:, 1:].sum()
    fg_union = cm.sum() - cm[0, 0]
    fg_iou = float(fg_inter / fg_union) if fg_union > 0 else float("nan")
    return {"miou": float(per_class.nanmean()), "per_class_iou": per_class, "fg_iou": fg_iou}


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Per-patch logits [N, gh, gw, C] -> per-pixel logits [N, C, H, W] (bilinear, align_corners=False)."""
    return F.interpolate(logits.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# the segmentation probe: softmax regression on each patch's features

def feature_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (+1e-6) of x [M, F], float32 [F] each."""
    var, mean = torch.var_mean(x.float(), dim=0, correction=0)
    return mean, var.sqrt() + 1e-6


def segmentation_probe(train_feats: Tensor, train_targets: Tensor, test_feats: Tensor, test_targets: Tensor,
                       num_classes: int | None = None, steps: int = 100, weight_decay: float = 1e-4,
                       max_train_patches: int | None = None, test_pixel_targets: Tensor | None = None,
                       seed: int = 0, device: torch.device | str | None = None, chunk: int = 256) -> dict:
    """A linear classifier per patch (shared over positions) on frozen features.

    train_feats [N, gh, gw, F], train_targets int [N, gh, gw]; test_feats [M, gh, gw, F], test_targets
    int [M, gh, gw]; labels in [0, num_classes) (default: 1 + the largest label seen), 0 = background.
    The features are standardised with the training patches' per-channel mean and std (folded into
    the weights, so no copy of the features is made) and a softmax regression with L2 penalty
    `weight_decay` is fitted full-batch by L-BFGS for at most `steps` iterations from zero weights
    (deterministic on the CPU). `max_train_patches` fits on a seeded random subset of the patches.
    On `device` (default: the features' device).

    Returns dict(miou, per_class_iou [C], fg_iou, predictions int64 [M, gh, gw], weight [C, F] and
    bias [C] acting on the raw features (logits = feats @ weight.T + bias), seconds) and, when
    `test_pixel_targets` int [M, H, W] is given, the same scores at pixel resolution with the
    logits upsampled bilinearly: pixel_miou, pixel_per_class_iou, pixel_fg_iou, pixel_predictions
    int64 [M, H, W]."""
    check_patch_features(train_feats, "train_feats")
    check_patch_features(test_feats, "test_feats")
    if train_targets.shape != train_feats.shape[:3] or test_targets.shape != test_feats.shape[:3]:
        raise BadValue(f"targets must be [N, gh, gw] matching the features: train {tuple(train_targets.shape)} "
                         f"vs {tuple(train_feats.shape[:3])}, test {tuple(test_targets.shape)} vs "
                         f"{tuple(test_feats.shape[:3])}")
    if train_feats.shape[1:] != test_feats.shape[1:]:
        raise BadValue(f"train and test features differ in [gh, gw, F]: {tuple(train_feats.shape[1:])} vs "
                         f"{tuple(test_feats.shape[1:])}")
    if steps < 1:
        raise BadValue(f"steps must be >= 1, got {steps}")
    if weight_decay < 0:
        raise BadValue(f"weight_decay must be >= 0, got {weight_decay}")
    if num_classes is None:
        num_classes = int(max(train_targets.max(), test_targets.max())) + 1
    if num_classes < 2:
        raise BadValue(f"num_classes must be >= 2, got {num_classes}")
    for name, t in (("train_targets", train_targets), ("test_targets", test_targets)):
        if int(t.min()) < 0 or int(t.max()) >= num_classes:
            raise BadValue(f"{name} must be in [0, {num_classes - 1}], got [{int(t.min())}, {int(t.max())}]")
    if max_train_patches is not None and max_train_patches < 1:
        raise BadValue(f"max_train_patches must be >= 1 or None, got {max_train_patches}")

    start = time.perf_counter()
    device = torch.device(device) if device is not None else train_feats.device
    dim = train_feats.shape[-1]
    x = train_feats.reshape(-1, dim)                                              # [N * gh * gw, F] (a view)
    y = train_targets.reshape(-1).long()
    if max_train_patches is not None and max_train_patches < x.shape[0]:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_train_patches]
        x, y = x[keep], y[keep]
    x, y = x.to(device, torch.float32), y.to(device)
    mean, std = feature_stats(x)

    # logits = ((x - mean) / std) @ w.T + b  ==  x @ (w / std).T + (b - (w / std) @ mean)
    w = torch.zeros(num_classes, dim, device=device, requires_grad=True)
    b = torch.zeros(num_classes, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=10,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        optimizer.zero_grad()
        ws = w / std
        logits = x @ ws.T + (b - ws @ mean)
        loss = F.cross_entropy(logits, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        weight = (w / std).detach()
        bias = (b - weight @ mean).detach()

    result = _score_segmentation(weight, bias, test_feats, test_targets, num_classes, test_pixel_targets,
                                 device, chunk)
    result.update(weight=weight.cpu(), bias=bias.cpu(), seconds=time.perf_counter() - start)
    return result


@torch.no_grad()
def _score_segmentation(weight, bias, feats, targets, num_classes, pixel_targets, device, chunk) -> dict:
    predictions, pixel_predictions = [], []
    for i in range(0, feats.shape[0], chunk):
        logits = feats[i:i + chunk].to(device, torch.float32) @ weight.T + bias   # [c, gh, gw, C]
        predictions.append(logits.argmax(-1).cpu())
        if pixel_targets is not None:
            up = upsample_logits(logits, tuple(pixel_targets.shape[-2:]))          # [c, C, H, W]
            pixel_predictions.append(up.argmax(1).cpu())
    predictions = torch.cat(predictions)
    result = {**segmentation_iou(predictions, targets, num_classes), "predictions": predictions}
    if pixel_targets is not None:
        if pixel_targets.shape[0] != feats.shape[0] or pixel_targets.ndim != 3:
            raise BadValue(f"test_pixel_targets must be [M={feats.shape[0]}, H, W], got {tuple(pixel_targets.shape)}")
        pixel_predictions = torch.cat(pixel_predictions)
        scores = segmentation_iou(pixel_predictions, pixel_targets, num_classes)
        result.update(pixel_miou=scores["miou"], pixel_per_class_iou=scores["per_class_iou"],
                      pixel_fg_iou=scores["fg_iou"], pixel_predictions=pixel_predictions)
    return result


# ---------------------------------------------------------------------------------------------
# a picture of the features

@torch.no_grad()
def pca_rgb(patch_features: Tensor, num_components: int = 3) -> Tensor:
    """PCA of patch features as colours: [N, gh, gw, F] -> float32 [N, gh, gw, num_components] in [0, 1].

    The principal axes are fitted over ALL patches of the given images (centred, not standardised);
    each patch's first `num_components` coordinates are min-max scaled over those patches to [0, 1]
    (component k -> colour channel k). Each axis' sign is fixed so its largest-magnitude loading is
    positive, which makes the colours reproducible."""
    check_patch_features(patch_features, "patch_features")
    n, rows, cols, dim = patch_features.shape
    if not 1 <= num_components <= min(dim, n * rows * cols):
        raise BadValue(f"num_components must be in [1, {min(dim, n * rows * cols)}] for {n * rows * cols} "
                         f"patches of {dim} channels, got {num_components}")
    x = patch_features.reshape(-1, dim).double().cpu()
    x = x - x.mean(0)
    covariance = x.T @ x / max(x.shape[0] - 1, 1)                                  # [F, F]
    values, vectors = torch.linalg.eigh(covariance)                                # ascending
    axes = vectors[:, values.argsort(descending=True)[:num_components]]           # [F, k]
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    coords = x @ axes                                                              # [P, k]
    lo, hi = coords.min(0).values, coords.max(0).values
    scaled = (coords - lo) / (hi - lo).clamp(min=1e-12)
    return scaled.float().reshape(n, rows, cols, num_components)
