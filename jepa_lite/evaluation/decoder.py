"""A patch decoder: frozen tokens back to pixels, to see what a representation (or a predictor) holds.

    decoder = PatchDecoder(embed_dim=D, grid_size=(8, 8), patch_dim=3 * 4 * 4)
    losses = train_decoder(decoder, tokens, patches, steps=300)    # tokens [M, N, D], patches [M, N, P]
    pixels = decode(decoder, predictions, target_indices)          # [B, K, D] + [B, K] -> [B, K, P]

The I-JEPA paper (Sec. 8 and its appendix) trains a generative decoder (RCDM) from frozen
representations to pixels and feeds it the predictor's outputs at the masked blocks. At course scale
a deterministic decoder is enough: one small MLP applied to each token with its position added, trained
with a squared error, outputs the *mean* of the patches a token allows: what the token pins down comes
out sharp, what it leaves open comes out blurred. Notebook 10 builds it. Deterministic on the CPU for a
seed.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from jepa_lite.errors import BadValue


class PatchDecoder(nn.Module):
    """Each token [D] plus a learned embedding of its grid position -> the pixels of its own patch [P].

    A per-token MLP (no attention: a token is decoded from itself alone, so its picture shows what that
    one token holds): LayerNorm, Linear D -> hidden, GELU, Linear hidden -> hidden, GELU, Linear -> P."""

    def __init__(self, embed_dim: int, grid_size: tuple[int, int], patch_dim: int, hidden: int = 256):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("patch_dim", patch_dim), ("hidden", hidden)):
            if int(value) < 1:
                raise BadValue(f"{name} must be a positive integer, got {value}")
        rows, cols = grid_size
        if rows < 1 or cols < 1:
            raise BadValue(f"grid_size must be two positive integers, got {tuple(grid_size)}")
        self.embed_dim, self.grid_size, self.patch_dim = embed_dim, (rows, cols), patch_dim
        self.norm = nn.LayerNorm(embed_dim)
        self.position = nn.Embedding(rows * cols, hidden)
        self.inp = nn.Linear(embed_dim, hidden)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, patch_dim))
        nn.init.normal_(self.position.weight, std=0.02)

    def forward(self, tokens: Tensor, indices: Tensor) -> Tensor:
        """tokens: [B, K, D]; indices: [B, K] int64 grid positions (row-major) -> pixels [B, K, P]."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.embed_dim:
            raise BadValue(f"tokens must be [B, K, {self.embed_dim}], got {tuple(tokens.shape)}")
        if tuple(indices.shape) != tuple(tokens.shape[:2]):
            raise BadValue(f"indices must be [B, K] = {tuple(tokens.shape[:2])}, got {tuple(indices.shape)}")
        n = self.grid_size[0] * self.grid_size[1]
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
            raise BadValue(f"indices must lie in [0, {n - 1}] (a {self.grid_size[0]}x{self.grid_size[1]} grid), "
                           f"got values from {int(indices.min())} to {int(indices.max())}")
        return self.mlp(self.inp(self.norm(tokens.float())) + self.position(indices))


def train_decoder(decoder: PatchDecoder, tokens: Tensor, patches: Tensor, steps: int = 300, batch_size: int = 64,
                  lr: float = 2e-3, seed: int = 0) -> list[float]:
    """Fit the decoder with a mean squared error, every token of every image to its own patch.

    tokens: [M, N, D] frozen tokens of M whole images (N = the decoder's grid); patches: [M, N, P] the
    true pixels (e.g. `patchify` of the normalised images). Each step draws `batch_size` distinct images
    (all of them if there are fewer) with a generator seeded by `seed`; AdamW at `lr`, cosine-decayed.
    Trains on the decoder's device (the inputs move there a batch at a time). Returns the loss of every
    step; the decoder is left in eval mode."""
    if steps < 1 or batch_size < 1:
        raise BadValue(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if not lr > 0:
        raise BadValue(f"lr must be > 0, got {lr}")
    n = decoder.grid_size[0] * decoder.grid_size[1]
    if tokens.dim() != 3 or tokens.shape[1:] != (n, decoder.embed_dim):
        raise BadValue(f"tokens must be [M, {n}, {decoder.embed_dim}] (every token of each image), "
                       f"got {tuple(tokens.shape)}")
    if tuple(patches.shape) != (tokens.shape[0], n, decoder.patch_dim):
        raise BadValue(f"patches must be [{tokens.shape[0]}, {n}, {decoder.patch_dim}], got {tuple(patches.shape)}")
    device = next(decoder.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    positions = torch.arange(n, device=device).expand(min(batch_size, len(tokens)), n)
    decoder.train()
    losses = []
    for _ in range(steps):
        rows = torch.randperm(len(tokens), generator=generator)[:batch_size]        # distinct images
        x, y = tokens[rows].to(device).float(), patches[rows].to(device).float()
        loss = (decoder(x, positions) - y).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    decoder.eval()
    return losses


@torch.no_grad()
def decode(decoder: PatchDecoder, tokens: Tensor, indices: Tensor | None = None, batch: int = 256) -> Tensor:
    """Pixels of the given tokens, on the CPU: tokens [B, K, D] at grid positions indices [B, K]
    (default: every position in order, K = N) -> [B, K, P], in `batch` images at a time."""
    device = next(decoder.parameters()).device
    if indices is None:
        n = decoder.grid_size[0] * decoder.grid_size[1]
        if tokens.dim() != 3 or tokens.shape[1] != n:
            raise BadValue(f"without indices, tokens must hold every position: [B, {n}, D], got {tuple(tokens.shape)}")
        indices = torch.arange(n).expand(tokens.shape[0], n)
    decoder.eval()
    out = [decoder(tokens[i:i + batch].to(device), indices[i:i + batch].to(device)).float().cpu()
           for i in range(0, len(tokens), batch)]
    return torch.cat(out) if out else torch.empty(0, tokens.shape[1], decoder.patch_dim)
