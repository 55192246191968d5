"""The I-JEPA objective: predict the target encoder's embeddings of the target blocks from the
context encoder's embedding of the context block.

    z_c     = f_theta(x_c)                      context encoder, context tokens only
    z_t     = norm(g_phi(x))[targets]           target encoder on the full image, normalised, gathered
    z_hat_t = h_psi(z_c, target positions)      predictor
    L       = mean over targets of  d(z_hat_t, z_t)   with d = squared L2 (the seed) or smooth-L1

The target normalisation `norm` (TARGET_NORMS, normalize_targets):
    "layer"     the paper: a parameter-free layer norm over each token's D features.
    "instance"  (jepa_lite's default) first each feature over the image's N tokens (an instance
                norm, as data2vec's targets), then the layer norm: what all tokens of an image
                share (its background colour, its lighting) is no longer something to predict.

Three ways to obtain g_phi:
    "ema"    (the paper): phi <- m * phi + (1 - m) * theta after each step; no gradient to phi.
    "joint"  (the literal reading "theta, phi, psi learned jointly"): phi trained by gradient
             like the others. The loss can then be driven to zero by mapping every image to
             the same vector: the representation collapses. The course shows this happening.
    "sigreg" (LeJEPA, Balestriero & LeCun 2025): g_phi IS f_theta, one encoder trained by gradient
             through both branches, and collapse is prevented by a regulariser instead of EMA:
             L = (1 - lambda) * prediction loss + lambda * SIGReg(embeddings) (sigreg.py, notebook 09).
             The embeddings SIGReg sees (`sigreg_on`): "pooled", each image's mean target token, or
             "tokens", one target token per image at a random position.

Three objectives on the same context encoder, predictor and masks (notebook 08):
    "jepa"    predict embeddings: the loss above.
    "pixels"  reconstruct pixels, a masked autoencoder (MAE, He et al. 2022) that shares JEPA's
              masks: a linear pixel head maps each predicted token z_hat_t [D] to the pixels of
              its target patch [C * p * p], compared by MSE with the patch's pixels normalised
              per patch (zero mean, unit variance over the patch: MAE's norm_pix_loss).
              The target encoder is still run (no gradient) and EMA-updated, so per-step compute,
              the collapse monitors and the downstream read-out stay the same for all three;
              its output just does not enter the loss.
    "both"    embedding loss + pixel_weight * pixel loss, through the same predicted tokens.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.core.models import gather_tokens
from jepa_lite.core.sigreg import sigreg
from jepa_lite.errors import BadValue

LOSSES = ("l2", "smooth_l1", "l1")
TARGET_NORMS = ("layer", "instance", "none")
TARGET_MODES = ("ema", "joint", "sigreg")
SIGREG_ON = ("pooled", "tokens")
OBJECTIVES = ("jepa", "pixels", "both")


def embedding_loss(predictions: torch.Tensor, targets: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """predictions, targets: [..., D] -> scalar.
    "l2": mean over tokens of the squared L2 distance ||z_t - z_hat_t||^2 (sum over D), the
    seed's E||z_t - z_hat_t||^2; "smooth_l1" (beta 1) and "l1": mean over all elements, as the
    reference code (smooth-L1) and V-JEPA (L1) do."""
    if predictions.shape != targets.shape:
        raise BadValue(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ")
    if kind == "l2":
        return (predictions - targets).pow(2).sum(-1).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(predictions, targets, beta=1.0)
    if kind == "l1":
        return F.l1_loss(predictions, targets)
    raise BadValue(f"unknown loss {kind!r}; valid: {LOSSES}")


def normalize_targets(tokens: torch.Tensor, kind: str = "instance", eps: float = 1e-5) -> torch.Tensor:
    """tokens: [B, N, D] the target encoder's output -> [B, N, D] the regression targets.

    "layer": each token's D features shifted to mean 0 and scaled to variance 1 (no parameters):
        the targets' scale is fixed, so shrinking them cannot lower the loss (notebook 04).
    "instance": before that, each feature d is shifted and scaled over the image's N tokens
        (mean 0, variance 1 per image and feature). Whatever every token of an image has in common,
        such as the background colour of a shapes image or the colour cast of a photo, leaves the
        targets; what is left is how each token differs from the rest of its image: edges, parts,
        where the object is. Predicting the shared part is easy (any context token shows it), and
        with layer-normed targets alone much of a short run goes into encoding it (docs/results.md
        compares the two on shapes and CIFAR-10).
    "none": the raw output (the collapse lesson's counter-example)."""
    if kind == "none":
        return tokens
    if kind == "instance":
        mean = tokens.mean(dim=1, keepdim=True)                                 # [B, 1, D] over tokens
        var = tokens.var(dim=1, keepdim=True, unbiased=False)
        tokens = (tokens - mean) / torch.sqrt(var + eps)
    elif kind != "layer":
        raise BadValue(f"unknown target_norm {kind!r}; valid: {TARGET_NORMS}")
    return F.layer_norm(tokens, tokens.shape[-1:], eps=eps)


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear momentum schedule start -> end over total_steps (the paper: 0.996 -> 1.0)."""
    if not 0.0 <= start <= 1.0 or not 0.0 <= end <= 1.0:
        raise BadValue(f"EMA momentum must be in [0, 1], got start={start}, end={end}")
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * progress


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise BadValue("target and online networks have different parameter lists")
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


# ---------------------------------------------------------------------------------------------
# pixels of patches (the reconstruction objective)

def patchify(images: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """images: [B, C, H, W] -> patches [B, N, ph * pw * C], N = rows * cols row-major (token n is
    grid cell (n // cols, n % cols), as in the encoders); each patch flattened as (y, x, channel)."""
    B, C, H, W = images.shape
    rows, cols = grid_size
    if H % rows or W % cols:
        raise BadValue(f"a {H}x{W} image does not split into a {rows}x{cols} grid of patches")
    ph, pw = H // rows, W // cols
    x = images.reshape(B, C, rows, ph, cols, pw).permute(0, 2, 4, 3, 5, 1)   # [B, rows, cols, ph, pw, C]
    return x.reshape(B, rows * cols, ph * pw * C)


def unpatchify(patches: torch.Tensor, grid_size: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """The inverse of patchify: [B, N, ph * pw * C] -> [B, C, rows * ph, cols * pw] (square patches)."""
    B, N, P = patches.shape
    rows, cols = grid_size
    side = math.isqrt(P // channels)
    if rows * cols != N or side * side * channels != P:
        raise BadValue(f"{N} patches of {P} values do not make a {rows}x{cols} grid of square "
                         f"{channels}-channel patches")
    x = patches.reshape(B, rows, cols, side, side, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, rows * side, cols * side)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[..., P] -> each patch (last axis) shifted and scaled to zero mean, unit variance: MAE's
    norm_pix_loss target. A flat patch (a uniform background) becomes all zeros."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + eps).sqrt()


def pixel_loss(reconstruction: torch.Tensor, target_pixels: torch.Tensor) -> torch.Tensor:
    """reconstruction, target_pixels: [..., P] -> scalar mean squared error over every value
    (MAE: mean over a patch's pixels, then over the masked patches; equal sizes make it one mean)."""
    if reconstruction.shape != target_pixels.shape:
        raise BadValue(f"reconstruction {tuple(reconstruction.shape)} and target pixels "
                         f"{tuple(target_pixels.shape)} differ")
    return F.mse_loss(reconstruction, target_pixels)


# ---------------------------------------------------------------------------------------------
# label-free collapse monitors

@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> float:
    """embeddings: [M, D] (or [..., D]). Mean over dimensions of the per-dimension standard
    deviation of the L2-normalised embeddings. A collapsed representation (every input mapped
    to the same vector) gives 0; embeddings spread uniformly on the sphere give 1/sqrt(D)."""
    z = F.normalize(embeddings.reshape(-1, embeddings.shape[-1]).float(), dim=-1)
    return z.std(dim=0).mean().item()


@torch.no_grad()
def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of
    the embedding matrix [M, D]. Between 1 (collapsed to one direction) and min(M, D)."""
    z = embeddings.reshape(-1, embeddings.shape[-1]).float()
    singular_values = torch.linalg.svdvals(z)
    p = singular_values / (singular_values.sum() + eps) + eps
    return math.exp(-(p * p.log()).sum().item())


@torch.no_grad()
def across_image_share(tokens: torch.Tensor) -> float:
    """tokens: [B, N, D] -> the share of their variance that lies across images at a fixed position:
    mean over (n, d) of the variance over the B images of tokens[:, n, d], divided by the mean over
    d of the variance over all B * N tokens (law of total variance: between 0 and 1).

    Near 1 when every position's token depends on the image. Near 0 in a *positional* collapse,
    where the token depends on its position only (the std and RankMe of the tokens can look healthy
    then: they vary, just not with the image; notebook 04, Exercise 4). 0 when nothing varies."""
    if tokens.dim() != 3 or tokens.shape[0] < 2:
        raise BadValue(f"tokens must be [B, N, D] with B >= 2 images, got shape {tuple(tokens.shape)}")
    z = tokens.float()
    across = z.var(dim=0, unbiased=False).mean()                    # per (position, dim), over images
    total = z.flatten(0, 1).var(dim=0, unbiased=False).mean()       # per dim, over every token
    if total <= 1e-10 * z.square().mean():      # nothing varies (up to rounding): full collapse
        return 0.0
    return (across / total).item()


# ---------------------------------------------------------------------------------------------
# the model that trains

def check_settings(target_mode: str = "ema", loss: str = "smooth_l1", target_norm: str | None = "instance",
                   objective: str = "jepa", pixel_weight: float = 1.0, sigreg_weight: float = 0.02,
                   sigreg_on: str = "pooled") -> None:
    """The rules for a JEPA's settings, in one place (JEPA and engine.config.TrainConfig both call
    this): a bad value or combination is a BadValue naming it and what is valid."""
    for name, value, valid in (("target_mode", target_mode, TARGET_MODES), ("loss", loss, LOSSES),
                               ("objective", objective, OBJECTIVES), ("target_norm", target_norm, TARGET_NORMS),
                               ("sigreg_on", sigreg_on, SIGREG_ON)):
        if value is not None and value not in valid:       # None: not chosen yet (a TrainConfig's recipe decides)
            raise BadValue(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    if not pixel_weight > 0:
        raise BadValue(f"pixel_weight must be > 0, got {pixel_weight}")
    if not 0 < sigreg_weight < 1:
        raise BadValue(f"sigreg_weight must be in (0, 1), got {sigreg_weight}")
    if target_mode == "sigreg" and objective != "jepa":
        raise BadValue(f"target_mode 'sigreg' regularises the embedding objective (objective='jepa'), "
                       f"got objective={objective!r}")
    if target_mode == "joint" and objective == "pixels":
        raise BadValue("target_mode 'joint' trains the target encoder through the embedding loss, which "
                       "objective 'pixels' does not have; use target_mode='ema' (or objective='both')")


class JEPA(nn.Module):
    """Context encoder f_theta, predictor h_psi and target encoder g_phi in one module, plus a
    linear pixel head when the objective reconstructs pixels ("pixels" or "both").

    forward(images, masks) returns the loss and what went into it; `update_target(m)` is the
    EMA step, to call after each optimizer step (a no-op in "joint" and "sigreg" modes).
    `patch_dim` (C * p * p, the values of one patch) is needed only by the pixel objectives."""

    def __init__(self, context_encoder: nn.Module, predictor: nn.Module, target_mode: str = "ema",
                 loss: str = "smooth_l1", target_norm: str = "instance", objective: str = "jepa",
                 patch_dim: int | None = None, pixel_weight: float = 1.0, pixel_norm: bool = True,
                 sigreg_weight: float = 0.02, sigreg_on: str = "pooled"):
        super().__init__()
        check_settings(target_mode=target_mode, loss=loss, target_norm=target_norm, objective=objective,
                       pixel_weight=pixel_weight, sigreg_weight=sigreg_weight, sigreg_on=sigreg_on)
        self.context_encoder = context_encoder
        self.predictor = predictor
        # the target encoder starts as an exact copy of the context encoder; with SIGReg it is the same network
        self.target_encoder = context_encoder if target_mode == "sigreg" else copy.deepcopy(context_encoder)
        self.target_mode = target_mode
        self.loss_kind = loss
        self.target_norm = target_norm
        self.objective = objective
        self.pixel_weight = pixel_weight
        self.pixel_norm = pixel_norm
        self.sigreg_weight, self.sigreg_on = sigreg_weight, sigreg_on
        # SIGReg's random directions (and "tokens"' positions): the trainer seeds this every step
        self.direction_generator = torch.Generator()
        # (rank, processes) when data-parallel (set by the trainer): SIGReg then tests the global batch
        self.data_parallel = (0, 1)
        self.pixel_head = None
        if objective != "jepa":
            if patch_dim is None or patch_dim < 1:
                raise BadValue(f"objective {objective!r} needs patch_dim (channels * patch_size**2), got {patch_dim}")
            # predicted token [D] -> the pixels of its patch [C * p * p]
            self.pixel_head = nn.Linear(context_encoder.embed_dim, patch_dim)
            nn.init.trunc_normal_(self.pixel_head.weight, std=0.02)
            nn.init.zeros_(self.pixel_head.bias)
        if target_mode == "ema":
            self.target_encoder.requires_grad_(False)

    def targets(self, images: torch.Tensor, target_indices: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target embeddings z_t: [B, T, K_tgt, D], the layer-normed target-encoder output on every
        token [B, N, D] (what the collapse monitors watch, whatever `target_norm` is), and that
        output as it is [B, N, D] (what SIGReg regularises). The target encoder sees the whole
        image; its output is masked afterwards (the paper's Table 11: masking the output beats
        masking the input). No gradient flows into it with EMA."""
        with torch.set_grad_enabled(self.target_mode != "ema" and torch.is_grad_enabled()):
            full = self.target_encoder(images)                                  # [B, N, D]
            targets = normalize_targets(full, self.target_norm)
            tokens = targets if self.target_norm == "layer" else F.layer_norm(full, full.shape[-1:])
        B, T, K = target_indices.shape
        z_t = gather_tokens(targets, target_indices.reshape(B, T * K)).view(B, T, K, -1)
        return z_t, tokens, full

    def sigreg_embeddings(self, full: torch.Tensor) -> torch.Tensor:
        """The [B, D] embeddings SIGReg sees: each image's mean token ("pooled"), or one token per
        image at a position drawn from direction_generator ("tokens")."""
        if self.sigreg_on == "pooled":
            return full.mean(dim=1)
        rank, world = self.data_parallel          # draw for the global batch, keep this rank's rows
        B = full.shape[0]
        positions = torch.randint(full.shape[1], (B * world,), generator=self.direction_generator)
        return full[torch.arange(B, device=full.device), positions[rank * B:(rank + 1) * B].to(full.device)]

    def target_pixels(self, images: torch.Tensor, target_indices: torch.Tensor) -> torch.Tensor:
        """The pixels the pixel head must reconstruct: [B, T, K_tgt, C * p * p], normalised per
        patch when pixel_norm is on."""
        B, T, K = target_indices.shape
        patches = patchify(images, self.context_encoder.grid_size)             # [B, N, P]
        pixels = gather_tokens(patches, target_indices.reshape(B, T * K)).view(B, T, K, -1)
        return normalize_patches(pixels) if self.pixel_norm else pixels

    def forward(self, images: torch.Tensor, context_indices: torch.Tensor,
                target_indices: torch.Tensor, target_images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """images: [B, C, H, W]; context_indices: [B, K_ctx]; target_indices: [B, T, K_tgt]
        (a `Masks` from jepa_lite.core.masks holds both); target_images: what the target encoder sees
        (default: `images`; the same pictures in other colours with `colour_views`, train_data.py).
        Returns dict(loss: scalar, predictions, targets: [B, T, K_tgt, D], target_tokens: [B, N, D]);
        target_mode "sigreg" adds embedding_loss and sigreg_loss (scalars), objective "both" adds
        embedding_loss and pixel_loss (scalars), the pixel objectives add
        pixel_loss, reconstruction and target_pixels ([B, T, K_tgt, C * p * p])."""
        target_images = images if target_images is None else target_images
        z_t, full, raw = self.targets(target_images, target_indices)
        z_c = self.context_encoder(images, context_indices)                   # [B, K_ctx, D]
        z_hat = self.predictor(z_c, context_indices, target_indices)          # [B, T, K_tgt, D]
        out = {"predictions": z_hat, "targets": z_t, "target_tokens": full}
        if self.objective == "jepa":
            out["loss"] = embedding_loss(z_hat.float(), z_t.float(), self.loss_kind)
            if self.target_mode == "sigreg":
                out["embedding_loss"] = out["loss"]
                out["sigreg_loss"] = sigreg(self.sigreg_embeddings(raw), generator=self.direction_generator,
                                           across_processes=self.data_parallel[1] > 1)
                out["loss"] = (1 - self.sigreg_weight) * out["embedding_loss"] + self.sigreg_weight * out["sigreg_loss"]
            return out
        reconstruction = self.pixel_head(z_hat)                               # [B, T, K_tgt, P]
        target_pixels = self.target_pixels(target_images, target_indices)
        out["pixel_loss"] = pixel_loss(reconstruction.float(), target_pixels.float())
        out["reconstruction"], out["target_pixels"] = reconstruction, target_pixels
        if self.objective == "pixels":
            out["loss"] = out["pixel_loss"]
        else:
            out["embedding_loss"] = embedding_loss(z_hat.float(), z_t.float(), self.loss_kind)
            out["loss"] = out["embedding_loss"] + self.pixel_weight * out["pixel_loss"]
        return out

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        if self.target_mode == "ema":
            ema_update(self.target_encoder, self.context_encoder, momentum)
