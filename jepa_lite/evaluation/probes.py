"""What the representation learned: frozen features, linear and kNN probes, baselines, UMAP.

The paper's protocol: freeze the target encoder, average-pool its patch tokens (there is no
[CLS] token) and fit a linear classifier. Because a random network's features are a strong
baseline on small images, every table here also has a random-init row and a raw-pixel row.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.data.datasets import normalize
from jepa_lite.data.images import ImageDataset
from jepa_lite.engine.device import autocast_context
from jepa_lite.engine.progress import progress_bar
from jepa_lite.errors import BadValue


def last_layer_outputs(encoder: nn.Module, x: torch.Tensor, layers: int = 1) -> list[torch.Tensor]:
    """The token outputs of the encoder's last `layers` blocks on normalised images x [B, C, H, W]:
    a list of `layers` tensors [B, N, D], the last block last. layers=1 is the encoder's final output
    (any encoder); more need `encoder.layer_outputs` (the encoder contract in models.py)."""
    if layers < 1:
        raise BadValue(f"layers must be >= 1, got {layers}")
    if layers == 1:
        return [encoder(x)]
    if not hasattr(encoder, "layer_outputs"):
        raise BadValue(f"this encoder ({type(encoder).__name__}) has no layer_outputs(); use layers=1")
    outputs = encoder.layer_outputs(x)
    if layers > len(outputs):
        raise BadValue(f"layers={layers} but the encoder has only {len(outputs)} blocks; valid: 1..{len(outputs)}")
    return outputs[-layers:]


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 128, layers: int = 1,
                     device: torch.device | str | None = None, progress: str | None = None) -> torch.Tensor:
    """Frozen features of uint8 images [N, 3, H, W] -> float32 [N, layers * D] on the CPU.

    Each of the last `layers` blocks' outputs is average-pooled over tokens (not over channels)
    and layer-normed, then concatenated; layers=1 reads the encoder's final output.
    Encoders without `layer_outputs` (see the encoder contract in models.py) support layers=1.
    On a GPU the forward pass runs in the precision device.choose_precision picks for it; batches
    of 128 keep the peak memory of a notebook kernel low. `progress`: a label for a progress bar
    over the images (none by default)."""
    if layers < 1:
        raise BadValue(f"layers must be >= 1, got {layers}")
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    chunks = []
    bar = progress_bar(images.shape[0], desc=progress) if progress else None
    for start in range(0, images.shape[0], batch_size):
        with autocast_context(device):
            outputs = last_layer_outputs(encoder, normalize(images[start:start + batch_size].to(device)), layers)
        pooled = [F.layer_norm(o.float().mean(dim=1), (o.shape[-1],)) for o in outputs]
        chunks.append(torch.cat(pooled, dim=1).cpu())
        if bar is not None:
            bar.update(min(batch_size, images.shape[0] - start))
    if bar is not None:
        bar.close()
    encoder.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def clip_features(encoder: nn.Module, clips: torch.Tensor, in_order: bool = True, batch_size: int = 128,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Frozen features of uint8 clips [N, T, 3, H, W] -> float32 [N, S * D] (in_order) or [N, D] (not), on the
    CPU, from one D-vector per time step: for a video encoder (grid_size (T', H', W')) the mean of each time
    step's H' * W' tokens, for an image encoder the mean of each frame's tokens (the encoder applied frame by
    frame), each layer-normed as in extract_features. in_order=True concatenates the S time steps in order
    (S = T' or T); in_order=False averages them: what is left of a clip without the order of its frames."""
    if clips.ndim != 5:
        raise BadValue(f"clips must be [N, T, 3, H, W], got shape {tuple(clips.shape)}")
    N, T = clips.shape[:2]
    grid = tuple(encoder.grid_size)
    if len(grid) == 3:                              # a video encoder: T' time steps of H' x W' tokens
        device = torch.device(device) if device is not None else next(encoder.parameters()).device
        was_training = encoder.training
        encoder.eval()
        chunks = []
        for start in range(0, N, batch_size):
            with autocast_context(device):
                tokens = encoder(normalize(clips[start:start + batch_size].to(device))).float()   # [B, T'H'W', D]
            steps = tokens.view(tokens.shape[0], grid[0], grid[1] * grid[2], -1).mean(dim=2)     # [B, T', D]
            chunks.append(F.layer_norm(steps, steps.shape[-1:]).cpu())
        encoder.train(was_training)
        per_step = torch.cat(chunks)
    else:                                           # an image encoder, frame by frame: N * T images
        per_step = extract_features(encoder, clips.flatten(0, 1), batch_size=batch_size, device=device).view(N, T, -1)
    return per_step.flatten(1) if in_order else per_step.mean(dim=1)


def raw_pixel_features(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised flattened pixels [N, 3*H*W] (the no-learning baseline)."""
    return normalize(images).flatten(1).float().cpu()


def _standardize(train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    return (train_x - mean) / std, (test_x - mean) / std


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 C: float | None = None, max_iter: int = 300, seed: int = 0) -> dict:
    """Standardised features + multinomial logistic regression (scikit-learn, L-BFGS).
    C=None picks the inverse regularisation from {0.01, 0.1, 1} on a 10% split of the training
    set, then refits on all of it. Returns dict(accuracy, C, seconds)."""
    from threadpoolctl import threadpool_limits

    # torch's OpenMP threads keep spinning after a torch op; a multi-threaded BLAS next to them
    # runs ~40x slower on 2 cores. One BLAS thread is fast and deterministic.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # an unconverged L-BFGS still gives a usable probe; max_iter bounds the time
        warnings.filterwarnings("ignore", message=".*failed to converge.*")
        return _fit_logistic(train_x, train_y, test_x, test_y, C, max_iter, seed)


def _fit_logistic(train_x, train_y, test_x, test_y, C, max_iter, seed) -> dict:
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    xtr, xte = _standardize(train_x.numpy().astype(np.float32), test_x.numpy().astype(np.float32))
    ytr, yte = train_y.numpy(), test_y.numpy()
    if C is None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(xtr))
        n_val = max(len(xtr) // 10, 1)
        val, fit = order[:n_val], order[n_val:]
        scores = {}
        for c in (0.01, 0.1, 1.0):
            clf = LogisticRegression(C=c, max_iter=max_iter // 2)
            clf.fit(xtr[fit], ytr[fit])
            scores[c] = clf.score(xtr[val], ytr[val])
        C = max(scores, key=scores.get)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit(xtr, ytr)
    predictions = clf.predict(xte)
    return {"accuracy": float((predictions == yte).mean()), "C": C, "seconds": time.perf_counter() - start,
            "predictions": predictions}


def knn_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> dict:
    """Weighted kNN on cosine similarity (the DINO-style protocol): each of the k nearest
    training points votes for its label with weight exp(similarity / temperature)."""
    if k < 1:
        raise BadValue(f"k must be >= 1, got {k}")
    start = time.perf_counter()
    k = min(k, train_x.shape[0])
    train_n = F.normalize(train_x.float(), dim=1)
    num_classes = int(max(train_y.max(), test_y.max()).item()) + 1
    predictions = []
    for i in range(0, test_x.shape[0], chunk):
        sims = F.normalize(test_x[i:i + chunk].float(), dim=1) @ train_n.T           # [c, N_train]
        top_sims, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], num_classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sims / temperature).exp())
        predictions.append(votes.argmax(1))
    predictions = torch.cat(predictions)
    return {"accuracy": float((predictions == test_y).float().mean()), "k": k,
            "seconds": time.perf_counter() - start}


def umap_embed(features: torch.Tensor, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """2-D UMAP of standardised features [N, F] -> [N, 2] (deterministic for a seed)."""
    import umap

    x = features.numpy().astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, n_jobs=1)
    return reducer.fit_transform(x)


def object_and_background_colours(data: ImageDataset) -> torch.Tensor:
    """[N, 6] in [0, 1]: each image's mean RGB on its object's mask, then on the rest of the image
    (data with object masks: shapes, shapes-mono)."""
    if data.masks is None:
        raise BadValue("object_and_background_colours needs data with object masks (shapes, shapes-mono)")
    on, x = data.masks.unsqueeze(1).float(), data.images.float() / 255
    return torch.cat([(x * on).sum(dim=(2, 3)) / on.sum(dim=(2, 3)).clamp(min=1),
                      (x * (1 - on)).sum(dim=(2, 3)) / (1 - on).sum(dim=(2, 3)).clamp(min=1)], dim=1)


def variance_shares(train_x: torch.Tensor, test_x: torch.Tensor, train: ImageDataset, test: ImageDataset
                    ) -> tuple[float, float]:
    """Where frozen features' variance goes, on data with object masks (shapes): (the share of the
    test features' total variance that lies between the class means, the share that a quadratic
    function of six numbers, the mean RGB of the shape and of the rest of the image, predicts on the
    test images when fitted by least squares on the training images). Notebook 06, section 6."""
    def quadratic(c: torch.Tensor) -> torch.Tensor:       # a constant, each number, every product of two
        c = c - 0.5
        i, j = torch.triu_indices(c.shape[1], c.shape[1])
        return torch.cat([torch.ones(len(c), 1), c, c[:, i] * c[:, j]], dim=1)

    if train.masks is None or test.masks is None:
        raise BadValue("variance_shares needs data with object masks (shapes, shapes-mono)")
    centred = test_x - test_x.mean(0)
    total = centred.pow(2).sum(1).mean()
    between = sum((test.labels == c).float().mean() * centred[test.labels == c].mean(0).pow(2).sum()
                  for c in test.labels.unique())
    colours = quadratic(object_and_background_colours(train)).double()
    fit = torch.linalg.lstsq(colours, train_x.double()).solution.float()
    residual = (test_x - quadratic(object_and_background_colours(test)) @ fit).pow(2).sum(1).mean()
    return (between / total).item(), (1 - residual / total).item()


# ---------------------------------------------------------------------------------------------
# the probe table

@dataclass
class ProbeRow:
    name: str
    linear: float
    knn: float
    dims: int

    def as_dict(self) -> dict:
        return {"name": self.name, "linear": self.linear, "knn": self.knn, "dims": self.dims}


def probe_encoders(encoders: dict[str, nn.Module], train: ImageDataset, test: ImageDataset, layers: int = 1,
                   include_pixels: bool = True, C: float | None = None, log=None,
                   device: torch.device | str | None = None, progress: bool = False) -> list[ProbeRow]:
    """One row per named encoder (plus raw pixels): linear-probe and kNN test accuracy. `device`: where
    the encoders run (default: where their weights are); `progress`: a bar per feature extraction."""
    rows = []
    feature_sets = {}
    for name, encoder in encoders.items():
        if device is not None:
            encoder.to(device)
        feature_sets[name] = tuple(
            extract_features(encoder, split.images, layers=layers, device=device,
                             progress=f"{name}, {label}" if progress else None)
            for split, label in ((train, "train"), (test, "test")))
    if include_pixels:
        feature_sets["raw pixels"] = (raw_pixel_features(train.images), raw_pixel_features(test.images))
    for name, (train_x, test_x) in feature_sets.items():
        linear = linear_probe(train_x, train.labels.cpu(), test_x, test.labels.cpu(), C=C)
        knn = knn_probe(train_x, train.labels.cpu(), test_x, test.labels.cpu())
        rows.append(ProbeRow(name, linear["accuracy"], knn["accuracy"], train_x.shape[1]))
        if log:
            log(f"  {name}: linear {linear['accuracy']:.3f} (C={linear['C']}, {linear['seconds']:.0f}s), "
                f"kNN {knn['accuracy']:.3f}")
    return rows


def format_table(rows: list[ProbeRow], title: str = "") -> str:
    """A fixed-width text table of probe rows (accuracies in percent)."""
    lines = [title] if title else []
    lines.append(f"{'features':<16}{'dims':>6}{'linear %':>10}{'kNN %':>8}")
    lines.append("-" * 40)
    for row in rows:
        lines.append(f"{row.name:<16}{row.dims:>6}{100 * row.linear:>10.1f}{100 * row.knn:>8.1f}")
    return "\n".join(lines)
