"""A training step written the way the I-JEPA reference code does it, as a speed baseline.

Written for this benchmark from the reference's published structure (not copied): attention
as explicit q @ k^T -> softmax -> @ v, targets gathered by a Python loop over target blocks,
one predictor pass per block with the context repeated along the batch axis, an EMA loop over
parameters, fp32 throughout. Same sizes and same math as jepa_lite, so the two can be timed
side by side on the same masks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.core.models import sincos_pos_embed_2d


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class RefBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RefAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def apply_masks(x, masks):
    """x: [B, N, D], masks: list of [B, K] -> [len(masks) * B, K, D] (Python loop, as the reference)."""
    all_x = []
    for m in masks:
        all_x.append(torch.gather(x, 1, m.unsqueeze(-1).repeat(1, 1, x.size(-1))))
    return torch.cat(all_x, dim=0)


class RefEncoder(nn.Module):
    def __init__(self, img=32, patch=4, dim=128, depth=4, heads=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        grid = img // patch
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(dim, (grid, grid)).unsqueeze(0), requires_grad=False)
        self.blocks = nn.ModuleList(RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, masks=None):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        if masks is not None:
            x = apply_masks(x, masks)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class RefPredictor(nn.Module):
    def __init__(self, grid=8, enc_dim=128, dim=64, depth=3, heads=4):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(dim, (grid, grid)).unsqueeze(0), requires_grad=False)
        self.blocks = nn.ModuleList(RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, enc_dim)

    def forward(self, x, masks_x, masks):
        B = len(x) // len(masks_x)
        x = self.embed(x)
        x = x + apply_masks(self.pos_embed.repeat(B, 1, 1), masks_x)
        _, N_ctxt, D = x.shape
        pos = apply_masks(self.pos_embed.repeat(B, 1, 1), masks)
        pred_tokens = self.mask_token.repeat(pos.size(0), pos.size(1), 1) + pos
        x = x.repeat(len(masks), 1, 1)
        x = torch.cat([x, pred_tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)[:, N_ctxt:]
        return self.proj(x)


class ReferenceStyleStep:
    """One I-JEPA step in the reference's style: call step(images, context_idx, target_idx)."""

    def __init__(self, dim=128, depth=4, heads=4, pred_dim=64, pred_depth=3, img=32, patch=4,
                 encoder=None, predictor=None, masks_of=None):
        """Stand-in networks by default; `encoder`, `predictor` and `masks_of` (apply_masks) let the
        reference code's own modules run the same step (bench_train_step.py --reference)."""
        import copy
        torch.manual_seed(0)
        self.encoder = encoder or RefEncoder(img, patch, dim, depth, heads)
        self.predictor = predictor or RefPredictor(img // patch, dim, pred_dim, pred_depth, heads)
        self.apply_masks = masks_of or apply_masks
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad = False
        params = list(self.encoder.parameters()) + list(self.predictor.parameters())
        self.optimizer = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-3)

    def step(self, images, context_indices, target_indices, momentum=0.996):
        masks_enc = [context_indices]
        masks_pred = [target_indices[:, t] for t in range(target_indices.shape[1])]
        with torch.no_grad():
            h = self.target_encoder(images)
            h = F.layer_norm(h, (h.size(-1),))
            h = self.apply_masks(h, masks_pred)     # one context mask: the reference's repeat is a no-op
        z = self.encoder(images, masks_enc)
        z = self.predictor(z, masks_enc, masks_pred)
        loss = F.smooth_l1_loss(z, h)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for param_q, param_k in zip(self.encoder.parameters(), self.target_encoder.parameters()):
                param_k.data.mul_(momentum).add_((1.0 - momentum) * param_q.detach().data)
        return float(loss.detach())
