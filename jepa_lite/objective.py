"""The I-JEPA objective: predict the target encoder's embeddings of the target blocks from the
context encoder's embedding of the context block.

    z_c     = f_theta(x_c)                      context encoder, context tokens only
    z_t     = layer_norm(g_phi(x))[targets]     target encoder on the full image, then gathered
    z_hat_t = h_psi(z_c, target positions)      predictor
    L       = mean over targets of  d(z_hat_t, z_t)   with d = squared L2 (the seed) or smooth-L1

Two ways to obtain g_phi:
    "ema"   (the paper): phi <- m * phi + (1 - m) * theta after each step; no gradient to phi.
    "joint" (the literal reading "theta, phi, psi learned jointly"): phi trained by gradient
            like the others. The loss can then be driven to zero by mapping every image to
            the same vector: the representation collapses. The course shows this happening.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import gather_tokens

LOSSES = ("l2", "smooth_l1", "l1")
TARGET_MODES = ("ema", "joint")


def embedding_loss(predictions: torch.Tensor, targets: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """predictions, targets: [..., D] -> scalar.
    "l2": mean over tokens of the squared L2 distance ||z_t - z_hat_t||^2 (sum over D), the
    seed's E||z_t - z_hat_t||^2; "smooth_l1" (beta 1) and "l1": mean over all elements, as the
    reference code (smooth-L1) and V-JEPA (L1) do."""
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ")
    if kind == "l2":
        return (predictions - targets).pow(2).sum(-1).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(predictions, targets, beta=1.0)
    if kind == "l1":
        return F.l1_loss(predictions, targets)
    raise ValueError(f"unknown loss {kind!r}; valid: {LOSSES}")


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear momentum schedule start -> end over total_steps (the paper: 0.996 -> 1.0)."""
    if not 0.0 <= start <= 1.0 or not 0.0 <= end <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got start={start}, end={end}")
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * progress


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError("target and online networks have different parameter lists")
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


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


# ---------------------------------------------------------------------------------------------
# the model that trains

class JEPA(nn.Module):
    """Context encoder f_theta, predictor h_psi and target encoder g_phi in one module.

    forward(images, masks) returns the loss and what went into it; `update_target(m)` is the
    EMA step, to call after each optimizer step (a no-op in "joint" mode)."""

    def __init__(self, context_encoder: nn.Module, predictor: nn.Module, target_mode: str = "ema",
                 loss: str = "smooth_l1", target_norm: bool = True):
        super().__init__()
        if target_mode not in TARGET_MODES:
            raise ValueError(f"unknown target_mode {target_mode!r}; valid: {TARGET_MODES}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid: {LOSSES}")
        self.context_encoder = context_encoder
        self.predictor = predictor
        # the target encoder starts as an exact copy of the context encoder
        self.target_encoder = copy.deepcopy(context_encoder)
        self.target_mode = target_mode
        self.loss_kind = loss
        self.target_norm = target_norm
        if target_mode == "ema":
            self.target_encoder.requires_grad_(False)

    def targets(self, images: torch.Tensor, target_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target embeddings z_t: [B, T, K_tgt, D], and the full target-encoder output [B, N, D].
        The target encoder sees the whole image; its output is masked afterwards (the paper's
        Table 11: masking the output beats masking the input)."""
        with torch.set_grad_enabled(self.target_mode == "joint" and torch.is_grad_enabled()):
            full = self.target_encoder(images)                                  # [B, N, D]
            if self.target_norm:
                # parameter-free layer norm over features: targets cannot shrink to zero scale
                full = F.layer_norm(full, full.shape[-1:])
        B, T, K = target_indices.shape
        z_t = gather_tokens(full, target_indices.reshape(B, T * K)).view(B, T, K, -1)
        return z_t, full

    def forward(self, images: torch.Tensor, context_indices: torch.Tensor,
                target_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: [B, C, H, W]; context_indices: [B, K_ctx]; target_indices: [B, T, K_tgt]
        (a `Masks` from jepa_lite.masks holds both).
        Returns dict(loss: scalar, predictions, targets: [B, T, K_tgt, D], target_tokens: [B, N, D])."""
        z_t, full = self.targets(images, target_indices)
        z_c = self.context_encoder(images, context_indices)                   # [B, K_ctx, D]
        z_hat = self.predictor(z_c, context_indices, target_indices)
        loss = embedding_loss(z_hat.float(), z_t.float(), self.loss_kind)
        return {"loss": loss, "predictions": z_hat, "targets": z_t, "target_tokens": full}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        if self.target_mode == "ema":
            ema_update(self.target_encoder, self.context_encoder, momentum)
