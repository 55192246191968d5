"""Every exercise's check (jepa_lite.course.checks) passes on the solution and fails on wrong answers.

Each case below builds, from small synthetic inputs (no notebook runs, no data set, no training), the
arguments a notebook's check cell passes to its `check_NN_M` function: once as the solution computes
them, then once per plausible wrong answer, listed by name beside the exercise. Every wrong answer must
raise the exercise's own AssertionError ("Exercise M: ..."); the solution must pass. A last test reads
the notebooks: every check cell calls its function, and every exercise has a case here with at least
two wrong answers. (test_student.py checks the other direction: a stub cannot pass a check's guard.)
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.course import checks

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
CASES = {}


def case(exercise: str):
    """Register a builder: () -> (arguments of the solution, {wrong answer: arguments})."""
    def register(builder):
        CASES[exercise] = builder
        return builder
    return register


def with_(right: dict, **changes) -> dict:
    return {**right, **changes}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# notebook 00


@case("00_1")
def _():
    from jepa_lite.data.datasets import make_shapes

    small, large = make_shapes(1, start_index=7), make_shapes(1, image_size=64, start_index=7)
    right = dict(small=small, large=large)
    return right, {
        "off by one: image 6": dict(small=make_shapes(1, start_index=6), large=make_shapes(1, image_size=64,
                                                                                           start_index=6)),
        "swapped: small at 64 px": dict(small=large, large=small),
        "large is the next image": with_(right, large=make_shapes(1, image_size=64, start_index=8)),
        "both at the default size": with_(right, large=make_shapes(1, start_index=7)),
    }


@case("00_2")
def _():
    g = _gen()
    masks = torch.rand(300, 8, 8, generator=g) < torch.rand(300, 1, 1, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    area = masks.float().mean(dim=(1, 2))
    per_class = torch.stack([area[labels == c].mean() for c in range(4)])
    right = dict(per_class=per_class, masks=masks, labels=labels, num_classes=4)
    return right, {
        "percent, not a fraction": with_(right, per_class=100 * per_class),
        "a constant: the mean over all classes": with_(right, per_class=area.mean().expand(4).clone()),
        "classes shifted by one": with_(right, per_class=per_class.roll(1)),
        "object pixels counted, not averaged": with_(right, per_class=torch.stack(
            [masks[labels == c].float().sum(dim=(1, 2)).mean() for c in range(4)])),
        "one value per image": with_(right, per_class=area),
    }


@case("00_3")
def _():
    from jepa_lite.course.profiles import active_profile

    try:
        active_profile("huge")
    except ValueError as err:
        refusal = err
    right = dict(summary_text=active_profile("test").summary(), refusal=refusal)
    return right, {
        "the cpu profile's summary": with_(right, summary_text=active_profile("cpu").summary()),
        "the profile, not its summary": with_(right, summary_text=active_profile("test")),
        "no error kept": with_(right, refusal=None),
        "the error's text, not the error": with_(right, refusal=str(refusal)),
    }


# ---------------------------------------------------------------------------------------------
# notebook 01


def _patchify(x, p):                                     # notebook 01's
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


@case("01_1")
def _():
    from jepa_lite.core.models import PatchEmbed

    images = torch.randint(0, 256, (2, 3, 32, 32), generator=_gen(), dtype=torch.uint8)
    right = dict(t8=_patchify(images, 8), embed8=PatchEmbed(8, 3, 32), images=images)
    channels_last = images.reshape(2, 3, 4, 8, 4, 8).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 192)
    return right, {
        "4 px patches": with_(right, t8=_patchify(images, 4)),
        "each patch flattened channels-last": with_(right, t8=channels_last),
        "transposed: [B, 3*8*8, N]": with_(right, t8=_patchify(images, 8).transpose(1, 2)),
        "PatchEmbed with 4 px patches": with_(right, embed8=PatchEmbed(4, 3, 32)),
        "PatchEmbed of width 64": with_(right, embed8=PatchEmbed(8, 3, 64)),
    }


@case("01_2")
def _():
    from jepa_lite.core.masks import MaskSampler, default_mask_config

    config = default_mask_config((8, 8))
    largest, refused = None, None
    for hundredths in range(20, 101):
        try:
            MaskSampler(replace(config, target_scale=(0.1, hundredths / 100)))
            largest = hundredths / 100
        except ValueError:
            refused = hundredths / 100
            break
    assert largest is not None and refused is not None
    right = dict(largest=largest, config=config)
    return right, {
        "the first refused value": with_(right, largest=refused),
        "one step too small": with_(right, largest=round(largest - 0.01, 2)),
        "in hundredths": with_(right, largest=int(round(100 * largest))),
        "never set": with_(right, largest=None),
    }


@case("01_3")
def _():
    from jepa_lite.core.masks import MaskSampler, default_mask_config

    config = default_mask_config((8, 8))
    N, batches, B = 64, 32, 64
    inside, torus = MaskSampler(config), MaskSampler(replace(config, placement="torus"))

    def coverage(sampler, which, seed):
        g, total = _gen(seed), torch.zeros(N)
        for _ in range(batches):
            m = sampler(B, g)
            if which == "target":
                total += torch.zeros(B, m.target_indices.shape[1], N).scatter_(2, m.target_indices, 1.0).mean(
                    dim=(0, 1)) / batches
            else:
                total += torch.zeros(B, N).scatter_(1, m.context_indices, 1.0).mean(0) / batches
        return total

    per_block, flat = coverage(inside, "target", 5), coverage(torus, "target", 7)
    assert abs(per_block.sum() / torus.target_sizes.double().prod(-1).mean() - 1) < 0.05   # sizes drawn uniformly
    right = dict(flat=flat, target_sizes=torus.target_sizes)
    return right, {
        "the inside placement's coverage": with_(right, flat=coverage(inside, "target", 7)),
        "a constant: ones": with_(right, flat=torch.ones(N)),
        "not divided by the number of batches": with_(right, flat=flat * batches),
        "the torus sampler's context": with_(right, flat=coverage(torus, "context", 7)),
        "a grid, not [N]": with_(right, flat=flat.view(8, 8)),
    }


# ---------------------------------------------------------------------------------------------
# notebook 02


def _vit_params(cfg, final_norm=True, qkv_bias=True, hidden=None, extra_blocks=0):
    D = cfg.embed_dim
    hidden = int(D * cfg.mlp_ratio) if hidden is None else hidden
    patch = cfg.in_channels * cfg.patch_size ** 2 * D + D
    block = (3 * D * D + (3 * D if qkv_bias else 0)) + (D * D + D) + (D * hidden + hidden) + (hidden * D + D) + 4 * D
    return patch + (cfg.depth + extra_blocks) * block + (2 * D if final_norm else 0)


@case("02_1")
def _():
    from jepa_lite.core.model_sizes import model_configs
    from jepa_lite.core.models import VisionTransformer

    configs = {name: model_configs(name)[0] for name in ("micro", "tiny")}
    counted = {name: sum(t.numel() for t in VisionTransformer(cfg).parameters()) for name, cfg in configs.items()}
    right = dict(vit_params=_vit_params, configs=configs, counted=counted)
    return right, {
        "no final LayerNorm": with_(right, vit_params=lambda cfg: _vit_params(cfg, final_norm=False)),
        "no bias in W_qkv": with_(right, vit_params=lambda cfg: _vit_params(cfg, qkv_bias=False)),
        "MLP hidden width D, not rD": with_(right, vit_params=lambda cfg: _vit_params(cfg, hidden=cfg.embed_dim)),
        "one block too many": with_(right, vit_params=lambda cfg: _vit_params(cfg, extra_blocks=1)),
    }


def _pe_1d(dim, positions):                              # notebook 02's
    i = torch.arange(dim // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (i / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def _cosines(offset_sign=-1, frequencies=16):
    positions = torch.arange(64)
    offset = positions[:, None] + offset_sign * positions[None, :]
    omega = 1.0 / 10000 ** (torch.arange(16, dtype=torch.float64) / frequencies)
    return torch.cos(offset[..., None].double() * omega).sum(-1).float()


@case("02_2")
def _():
    pe = _pe_1d(32, torch.arange(64))
    right = dict(gram=pe @ pe.T, formula=_cosines(), pe_1d=_pe_1d)
    normed = F.normalize(pe, dim=1)
    return right, {
        "cosine similarities, not dot products": with_(right, gram=normed @ normed.T),
        "transposed product: pe.T @ pe": with_(right, gram=pe.T @ pe),
        "frequencies with i / 32": with_(right, formula=_cosines(frequencies=32)),
        "s + t instead of s - t": with_(right, formula=_cosines(offset_sign=1)),
        "a constant of the right shape": with_(right, formula=torch.full((64, 64), 16.0)),
    }


class _CNN(nn.Module):                                   # notebook 02's solution, with the bugs to list
    def __init__(self, bug=None, dim=32, image_size=32, patch_size=4):
        super().__init__()
        torch.manual_seed(0)
        self.bug, self.embed_dim = bug, dim
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        self.net = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(dim, dim, patch_size, stride=patch_size))

    def forward(self, images, token_indices=None):
        maps = self.net(images)                                              # [B, D, gh, gw]
        if self.bug == "reshape":
            tokens = maps.reshape(maps.shape[0], -1, self.embed_dim)
        elif self.bug == "column-major":
            tokens = maps.transpose(2, 3).flatten(2).transpose(1, 2)
        else:
            tokens = maps.flatten(2).transpose(1, 2)
        if token_indices is None or self.bug == "ignores indices":
            return tokens
        if self.bug == "first K":
            return tokens[:, :token_indices.shape[1]]
        return torch.gather(tokens, 1, token_indices[..., None].expand(-1, -1, tokens.shape[-1]))


@case("02_3")
def _():
    g = _gen()
    x = torch.randn(2, 3, 32, 32, generator=g)
    context = torch.stack([torch.randperm(64, generator=g)[:20].sort().values for _ in range(2)])
    out = {"predictions": torch.zeros(2, 12, 32), "targets": torch.ones(2, 12, 32), "loss": torch.tensor(1.0)}
    right = dict(cnn=_CNN(), x=x, context_indices=context, out=out)
    return right, {
        "cnn(x, indices) ignores the indices": with_(right, cnn=_CNN("ignores indices")),
        "the first K tokens, not the asked ones": with_(right, cnn=_CNN("first K")),
        "reshape instead of transpose: tokens mix positions": with_(right, cnn=_CNN("reshape")),
        "tokens in column-major order": with_(right, cnn=_CNN("column-major")),
        "a loss that is not finite": with_(right, out={**out, "loss": torch.tensor(float("nan"))}),
    }


# ---------------------------------------------------------------------------------------------
# notebook 03


def _scramble_(module, std=0.2, seed=0):                 # notebook 03's
    g = _gen(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * std)
    return module


def _predictor_inputs(depth=2):
    from jepa_lite.core.model_sizes import model_configs
    from jepa_lite.core.models import Predictor

    enc_cfg, pred_cfg = model_configs("micro")
    pred_cfg = replace(pred_cfg, depth=depth, shared_context=False)
    model = _scramble_(Predictor(pred_cfg, enc_cfg.embed_dim, enc_cfg.grid_size)).eval()
    g = _gen(1)
    order = torch.stack([torch.randperm(64, generator=g) for _ in range(2)])
    context, targets = order[:, :20].sort(1).values, order[:, 20:32].reshape(2, 3, 4)
    z_c = torch.randn(2, 20, enc_cfg.embed_dim, generator=g)
    return model, z_c, context, targets


@case("03_1")
def _():
    model, z_c, context, targets = _predictor_inputs()
    K_tgt = targets.shape[2]

    def without_positions(pos=None):
        u = model.embed(z_c) + model.pos_embed[context]
        q = model.mask_token.expand(2, K_tgt, -1) + (0 if pos is None else model.pos_embed[pos])
        seq = torch.cat([u, q], dim=1)
        for block in model.blocks:
            seq = block(seq)
        return model.proj(model.norm(seq[:, u.shape[1]:]))

    with torch.no_grad():
        out = without_positions()
        with_positions = without_positions(targets[:, 0])
        block_0 = model(z_c, context, targets)[:, 0]
    right = dict(identical=torch.allclose(out, out[:, :1].expand_as(out), atol=1e-5), out=out, model=model,
                 z_c=z_c, context_indices=context, K_tgt=K_tgt)
    return right, {
        "identical = True beside the usual predictions": with_(right, identical=True, out=block_0),
        "identical = True beside a constant": with_(right, identical=True, out=torch.zeros_like(out)),
        "mask tokens with their positions": with_(right, identical=True, out=with_positions),
        "identical = False": with_(right, identical=False),
    }


@case("03_2")
def _():
    model, z_c, context, targets = _predictor_inputs()
    perm = torch.randperm(20, generator=_gen())
    with torch.no_grad():
        base = model(z_c, context, targets)
        both = model(z_c[:, perm], context[:, perm], targets)
        tokens_only = model(z_c[:, perm], context, targets)
        indices_only = model(z_c, context[:, perm], targets)
    right = dict(base=base, both=both, tokens_only=tokens_only, perm=perm, predictor=model, z_c=z_c,
                 context_indices=context, target_indices=targets)
    return right, {
        "the identity: nothing permuted": with_(right, perm=torch.arange(20), both=base, tokens_only=base),
        "`both` with only the tokens permuted": with_(right, both=tokens_only),
        "`tokens_only` with the indices permuted instead": with_(right, tokens_only=indices_only),
        "a constant of the right shape": with_(right, tokens_only=torch.zeros_like(base)),
    }


@case("03_3")
def _():
    model, z_c, context, targets = _predictor_inputs(depth=1)
    shared = copy.deepcopy(model)
    shared.config = replace(model.config, shared_context=True)
    with torch.no_grad():
        a, s = model(z_c, context, targets), shared(z_c, context, targets)
    deep, *_ = _predictor_inputs(depth=2)
    deep_shared = copy.deepcopy(deep)
    deep_shared.config = replace(deep.config, shared_context=True)
    plain = type(model)(model.config, model.proj.out_features, (8, 8)).eval()
    with torch.no_grad():
        deep_a, deep_s = deep(z_c, context, targets), deep_shared(z_c, context, targets)
        plain_a = plain(z_c, context, targets)
    right = dict(one_layer=model, a=a, s=s, z_c=z_c, context_indices=context, target_indices=targets)
    return right, {
        "depth 2": with_(right, one_layer=deep, a=deep_a, s=deep_s),
        "not scrambled": with_(right, one_layer=plain, a=plain_a, s=plain_a),
        "`a` and `s` from the depth-2 predictor": with_(right, a=deep_a, s=deep_s),
        "constants of the right shape": with_(right, a=torch.zeros_like(a), s=torch.zeros_like(s)),
    }


def _block_flops(M, width, mlp_ratio, attention=True):  # notebook 03's
    hidden = int(width * mlp_ratio)
    flops = 2 * M * width * 3 * width + 2 * M * width * width + 2 * 2 * M * width * hidden
    return flops + (4 * M * M * width if attention else 0)


def _predictor_flops(cfg, D, K_ctx, K_tgt, T, shared, attention=True):
    d = cfg.embed_dim
    io = 2 * K_ctx * D * d + 2 * T * K_tgt * d * D
    if shared:
        return io + cfg.depth * _block_flops(K_ctx + T * K_tgt, d, cfg.mlp_ratio, attention)
    return io + T * cfg.depth * _block_flops(K_ctx + K_tgt, d, cfg.mlp_ratio, attention)


@case("03_4")
def _():
    from jepa_lite.core.model_sizes import model_configs

    pred_cfg, D, sizes = model_configs("tiny")[1], 64, (24.0, 7.5, 4)
    k_ctx, k_tgt, _ = sizes
    Ts = (1, 2, 4, 8, 16, 32, 64)

    def first(costlier):
        flip, before = {}, {}
        for T in Ts:
            per = _predictor_flops(pred_cfg, D, k_ctx, k_tgt, T, shared=False)
            sh = _predictor_flops(pred_cfg, D, k_ctx, k_tgt, T, shared=True)
            per_att, sh_att = T * (k_ctx + k_tgt) ** 2, (k_ctx + T * k_tgt) ** 2
            if costlier(sh_att, per_att):
                flip.setdefault("attention entries", T)
            else:
                before["attention entries"] = T
            if costlier(sh, per):
                flip.setdefault("total FLOPs", T)
            else:
                before["total FLOPs"] = T
        return flip, before

    flip, before = first(lambda shared, per_block: shared > per_block)
    assert flip, "the synthetic sizes should flip somewhere"
    right = dict(flip=flip, predictor_flops=_predictor_flops, pred_cfg=pred_cfg, D=D, sizes=sizes)
    return right, {
        "an empty dict": with_(right, flip={}),
        "the last T at which sharing is cheaper": with_(right, flip={k: before[k] for k in flip}),
        "the comparison reversed": with_(right, flip=first(lambda shared, per_block: shared < per_block)[0]),
        "the keys swapped": with_(right, flip={"attention entries": flip.get("total FLOPs", 64),
                                               "total FLOPs": flip.get("attention entries", 64)}),
    }


# ---------------------------------------------------------------------------------------------
# notebook 04


def _history(steps, momentum, seed):
    losses = torch.rand(steps, generator=_gen(seed)).tolist()
    return [{"step": 10 * (i + 1), "loss": loss, "momentum": momentum, "target_std": 0.1} for i, loss in
            enumerate(losses)]


@case("04_1")
def _():
    config = SimpleNamespace(target_mode="ema", ema_start=0.0, ema_end=0.0)
    ema, joint, copy_run = _history(10, 0.996, 1), _history(10, 0.996, 2), _history(10, 0.0, 3)
    right = dict(copy_history=copy_run, config=config, ema_history=ema, joint_history=joint)
    return right, {
        "the EMA run's history": with_(right, copy_history=ema),
        "half the budget": with_(right, copy_history=copy_run[:5]),
        "the default momentum": with_(right, config=SimpleNamespace(target_mode="ema", ema_start=0.996, ema_end=1.0),
                                      copy_history=_history(10, 0.996, 3)),
        "the joint run relabelled": with_(right, copy_history=[{**r, "momentum": 0.0} for r in joint]),
        "an empty history": with_(right, copy_history=[]),
    }


def _toy_run(target_norm, steps=100, stop_gradient=False):
    """Notebook 04's toy joint run (exercise 2), with the mistakes to list."""
    from jepa_lite.core.objective import embedding_std, rankme

    g = _gen()
    x = torch.randn(512, 16, generator=g)
    x_context = x + torch.randn(512, 16, generator=g)
    torch.manual_seed(0)
    f, g_, h = nn.Linear(16, 8, bias=False), nn.Linear(16, 8, bias=False), nn.Linear(8, 8, bias=False)
    optimizer = torch.optim.Adam([*f.parameters(), *g_.parameters(), *h.parameters()], lr=1e-2)
    history, monitors = [], []
    for step in range(steps + 1):
        if step in (0, steps):
            with torch.no_grad():
                monitors.append((embedding_std(g_(x)), rankme(g_(x))))
        z_t = g_(x).detach() if stop_gradient else g_(x)
        if target_norm:
            z_t = (z_t - z_t.mean(-1, keepdim=True)) / torch.sqrt(z_t.var(-1, keepdim=True, unbiased=False) + 1e-5)
        loss = (h(f(x_context)) - z_t).pow(2).sum(-1).mean()
        history.append((loss.item(), z_t.detach().pow(2).sum(-1).mean().item()))
        if step < steps:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    loss, size = zip(*history)
    return dict(loss=loss, shrink=size[0] / size[-1], monitors=monitors)


@case("04_2")
def _():
    normed, raw = _toy_run(True), _toy_run(False)
    right = dict(toy={"layer-normed": normed, "raw": raw})
    return right, {
        "the two runs swapped": dict(toy={"layer-normed": raw, "raw": normed}),
        "a stop-gradient on g": dict(toy={"layer-normed": normed, "raw": _toy_run(False, stop_gradient=True)}),
        "raw targets in both runs": dict(toy={"layer-normed": raw, "raw": raw}),
        "the loss after each step only (100 values)": dict(toy={name: {**run, "loss": run["loss"][1:]}
                                                                for name, run in right["toy"].items()}),
        "one run only": dict(toy={"raw": raw}),
    }


@case("04_3")
def _():
    g = _gen(1)

    def subspace(k, noise=1e-3):
        basis = torch.linalg.qr(torch.randn(64, k, generator=g)).Q
        return basis, torch.randn(512, k, generator=g) @ basis.T + noise * torch.randn(512, 64, generator=g)

    basis, z = subspace(4)
    basis5, z5 = subspace(5)
    other, z_other = subspace(4)
    right = dict(basis=basis, z=z)
    return right, {
        "5 directions": dict(basis=basis5[:, :4], z=z5),
        "3 directions": dict(basis=basis, z=torch.randn(512, 3, generator=g) @ basis[:, :3].T),
        "too much noise": dict(basis=basis, z=subspace(4, noise=0.5)[1] @ torch.eye(64)),
        "another subspace than `basis`": dict(basis=basis, z=z_other),
        "transposed": dict(basis=basis, z=z.T),
    }


@case("04_4")
def _():
    from jepa_lite.core import objective
    from jepa_lite.core.model_sizes import model_configs
    from jepa_lite.core.models import VisionTransformer

    encoder_config = model_configs("micro")[0]
    images = torch.randn(32, 3, 32, 32, generator=_gen()) * 0.5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = VisionTransformer(encoder_config).eval()
        shares = {}
        with torch.no_grad():
            shares["default"] = (objective.across_image_share(encoder.embed(images)),
                                 objective.across_image_share(encoder(images)))
            nn.init.trunc_normal_(encoder.patch_embed.proj.weight, std=0.02)
            shares["std 0.02"] = (objective.across_image_share(encoder.embed(images)),
                                  objective.across_image_share(encoder(images)))
    right = dict(shares=shares, encoder_config=encoder_config, images=images)
    first, second = shares.values()
    return right, {
        "the two inits in the other order": with_(right, shares={"std 0.02": second, "default": first}),
        "not re-initialised: the default twice": with_(right, shares={"default": first, "std 0.02": first}),
        "percent": with_(right, shares={k: tuple(100 * v for v in pair) for k, pair in shares.items()}),
        "constants": with_(right, shares={k: (0.5, 0.5) for k in shares}),
    }


# ---------------------------------------------------------------------------------------------
# notebook 05


@case("05_1")
def _():
    right = dict(images_seen=835 * 128, epochs=835 * 128 / 50_000, steps=835, batch_size=128, num_images=50_000)
    return right, {
        "one step too many": with_(right, images_seen=836 * 128, epochs=836 * 128 / 50_000),
        "steps over images": with_(right, epochs=835 / 50_000),
        "epochs in percent": with_(right, epochs=100 * 835 * 128 / 50_000),
        "the batch size forgotten": with_(right, images_seen=835, epochs=835 / 50_000),
    }


@case("05_2")
def _():
    from jepa_lite.engine.config import TrainConfig
    from jepa_lite.engine.schedules import lr_at

    defaults, total = TrainConfig().resolve(), 1000
    steps = range(total)
    per_step = [lr_at(s, total, replace(defaults, min_lr=defaults.lr)) == lr_at(s, total, defaults) for s in steps]
    right = dict(unchanged=all(per_step), lr_step0=lr_at(0, total, replace(defaults, warmup_steps=0)),
                 defaults=defaults, total=total, steps=steps)
    return right, {
        "the opposite answer": with_(right, unchanged=not all(per_step)),
        "a list of per-step answers": with_(right, unchanged=per_step),
        "a warm-up starting at 0": with_(right, lr_step0=0.0),
        "the defaults' step 0": with_(right, lr_step0=lr_at(0, total, defaults)),
    }


def _result(mode, losses):
    return SimpleNamespace(model=SimpleNamespace(target_mode=mode), history=[{"loss": v} for v in losses])


@case("05_3")
def _():
    losses = torch.rand(8, generator=_gen()).tolist()
    joint = SimpleNamespace(target_mode="joint")
    right = dict(joint=joint, full=_result("joint", losses), resumed=_result("joint", losses[4:]), exact=True)
    return right, {
        "the EMA runs kept": with_(right, full=_result("ema", losses), resumed=_result("ema", losses[4:])),
        "exact = False": with_(right, exact=False),
        "`resumed` is the uninterrupted run": with_(right, resumed=right["full"]),
        "the config left in EMA mode": with_(right, joint=SimpleNamespace(target_mode="ema")),
    }


# ---------------------------------------------------------------------------------------------
# notebook 06


@case("06_1")
def _():
    from jepa_lite.core.model_sizes import model_configs
    from jepa_lite.core.models import VisionTransformer
    from jepa_lite.data.datasets import make_shapes
    from jepa_lite.evaluation.probes import extract_features, knn_probe, linear_probe

    torch.manual_seed(0)
    encoder = VisionTransformer(model_configs("micro")[0]).eval()
    train, test = make_shapes(300, start_index=0, palette="mono"), make_shapes(150, start_index=5000, palette="mono")
    tr1, te1 = (extract_features(encoder, d.images, layers=1) for d in (train, test))
    tr2, te2 = (extract_features(encoder, d.images, layers=2) for d in (train, test))
    one = 100 * linear_probe(tr1, train.labels, te1, test.labels)["accuracy"]
    two = 100 * linear_probe(tr2, train.labels, te2, test.labels)["accuracy"]
    knn = 100 * knn_probe(tr1, train.labels, te1, test.labels)["accuracy"]
    assert abs(two - one) > 0.1 and abs(knn - one) > 0.1, "the synthetic case should tell the answers apart"
    right = dict(one=one, tr1=tr1, te1=te1, encoder=encoder, probe_train=train, probe_test=test, layers=2)
    return right, {
        "the accuracy with all the layers": with_(right, one=two),
        "a fraction, not percent": with_(right, one=one / 100),
        "features of the last 2 blocks": with_(right, one=two, tr1=tr2, te1=te2),
        "the kNN accuracy": with_(right, one=knn),
    }


def _features(seed=0, n=200, m=80, dim=16, noise=1.5):
    g = _gen(seed)
    y, yt = torch.randint(0, 5, (n,), generator=g), torch.randint(0, 5, (m,), generator=g)
    centres = torch.randn(5, dim, generator=g)
    return (centres[y] + noise * torch.randn(n, dim, generator=g),
            centres[yt] + noise * torch.randn(m, dim, generator=g), y, yt)


@case("06_2")
def _():
    from jepa_lite.evaluation.probes import knn_probe

    tr, te, y, yt = _features(4, noise=2.0)
    by_k = {k: 100 * knn_probe(tr, y, te, yt, k=k)["accuracy"] for k in (1, 5, 20, 50)}
    assert len(set(by_k.values())) == 4, "the synthetic case should tell the k apart"
    right = dict(by_k=by_k, train_x=tr, test_x=te, train_labels=y, test_labels=yt)
    return right, {
        "fractions, not percent": with_(right, by_k={k: v / 100 for k, v in by_k.items()}),
        "keys shifted by one k": with_(right, by_k=dict(zip((1, 5, 20, 50), list(by_k.values())[1:] + [0.0]))),
        "a constant": with_(right, by_k={k: 50.0 for k in by_k}),
        "k = 1 and 50 missing": with_(right, by_k={5: by_k[5], 20: by_k[20]}),
    }


@case("06_3")
def _():
    tr, te, *_ = _features(1)
    other_tr, other_te, *_ = _features(2)
    queries = [0, 7, 14]

    def nearest(train_x, test_x, qs, k=6):
        return (F.normalize(test_x[qs], dim=1) @ F.normalize(train_x, dim=1).T).topk(k, dim=1)

    right = dict(random_neighbours=nearest(tr, te, queries).indices, train_x=tr, test_x=te, queries=queries)
    return right, {
        "the target encoder's neighbours": with_(right, random_neighbours=nearest(other_tr, other_te,
                                                                                  queries).indices),
        "other queries": with_(right, random_neighbours=nearest(tr, te, [1, 8, 15]).indices),
        "the similarities, not the indices": with_(right, random_neighbours=nearest(tr, te, queries).values),
        "5 neighbours": with_(right, random_neighbours=nearest(tr, te, queries, k=5).indices),
    }


# ---------------------------------------------------------------------------------------------
# notebook 07


@case("07_1")
def _():
    from jepa_lite.evaluation.dense import segmentation_probe

    g = _gen()
    train_t, test_t = torch.randint(0, 4, (12, 4, 4), generator=g), torch.randint(0, 4, (6, 4, 4), generator=g)
    feats = {name: (torch.randn(12, 4, 4, 6, generator=g) + train_t[..., None] * 0.5,
                    torch.randn(6, 4, 4, 6, generator=g) + test_t[..., None] * 0.5)
             for name in ("target encoder", "random init")}
    probe = lambda name, tr_t, te_t, n: segmentation_probe(feats[name][0], tr_t, feats[name][1], te_t,  # noqa: E731
                                                           num_classes=n)
    two_way = {name: probe(name, (train_t > 0).long(), (test_t > 0).long(), 2) for name in feats}
    four_way = {name: probe(name, train_t, test_t, 4) for name in feats}
    everything = {name: probe(name, torch.ones_like(train_t), torch.ones_like(test_t), 2) for name in feats}
    right = dict(two_way=two_way, test_targets=test_t)
    return right, {
        "the 11-way probe's scores": with_(right, two_way=four_way),
        "every patch an object (targets >= 0)": with_(right, two_way=everything),
        "only the last encoder's probe": with_(right, two_way={"random init": two_way["random init"]}),
    }


@case("07_2")
def _():
    from jepa_lite.evaluation.dense import segmentation_iou

    g = _gen()
    targets = torch.randint(0, 4, (3, 4, 4), generator=g)
    stretched = targets.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    pixels = torch.where(torch.rand(stretched.shape, generator=g) < 0.2, 0, stretched)
    right = dict(stretched=stretched, ceiling=segmentation_iou(stretched, pixels, 4), test_targets=targets,
                 test_pixels=pixels, patch=4, num_classes=4)
    return right, {
        "tiled instead of repeated per patch": with_(right, stretched=targets.repeat(1, 4, 4)),
        "the pixel labels scored against themselves": with_(right, ceiling=segmentation_iou(pixels, pixels, 4)),
        "rows and columns swapped": with_(
            right, stretched=stretched.transpose(1, 2).contiguous()),
        "scored at the patch level": with_(right, ceiling=segmentation_iou(targets, targets, 4)),
    }


@case("07_3")
def _():
    g = _gen()
    show = 3
    images = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
    attention = {"target encoder": torch.rand(4, 2, 2, generator=g), "random init": torch.rand(4, 2, 2, generator=g)}

    def draw(rows=("target encoder", "random init"), overlay=True, shift=0):
        fig, axes = plt.subplots(len(rows), show, squeeze=False)
        for row, name in enumerate(rows):
            for i in range(show):
                axes[row, i].imshow(images[i].permute(1, 2, 0).numpy())
                if overlay:
                    axes[row, i].imshow(attention[name][i + shift].numpy(), alpha=0.6)
        plt.close(fig)
        return axes

    right = dict(axes=draw(), images=images, attention=attention, show=show)
    return right, {
        "the rows swapped": with_(right, axes=draw(rows=("random init", "target encoder"))),
        "no objectness map over the images": with_(right, axes=draw(overlay=False)),
        "each map over the previous image": with_(right, axes=draw(shift=1)),
        "one row only": with_(right, axes=draw(rows=("target encoder",))),
    }


@case("07_4")
def _():
    from jepa_lite.evaluation.dense import pca_rgb

    g = _gen()
    pca_features = {name: torch.randn(3, 4, 4, 8, generator=g) + torch.randn(3, 1, 1, 8, generator=g) * 3
                    for name in ("target encoder", "random init")}
    centred = {name: pca_rgb(f - f.mean(dim=(1, 2), keepdim=True)) for name, f in pca_features.items()}
    right = dict(centred=centred, pca_features=pca_features)
    return right, {
        "not centred": with_(right, centred={name: pca_rgb(f) for name, f in pca_features.items()}),
        "centred over all images": with_(right, centred={name: pca_rgb(f - f.mean(dim=0, keepdim=True))
                                                         for name, f in pca_features.items()}),
        "centred over the channels": with_(right, centred={name: pca_rgb(f - f.mean(dim=-1, keepdim=True))
                                                           for name, f in pca_features.items()}),
        "one encoder only": with_(right, centred={"target encoder": centred["target encoder"]}),
    }


# ---------------------------------------------------------------------------------------------
# notebook 08


class _PixelModel(nn.Module):
    def forward(self, images, context_indices, target_indices):
        return {"pixel_loss": images.pow(2).mean() * 0.5 + 0.3, "loss": images.abs().mean() * 0.3}


@case("08_1")
def _():
    g = _gen()
    normalise = lambda y: (y - y.mean(-1, keepdim=True)) / y.std(-1, unbiased=False, keepdim=True)  # noqa: E731
    mixing = torch.randn(16, 48, generator=g)
    fit_x, eval_x = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    fit_y = normalise(fit_x @ mixing * 0.2 + torch.randn(400, 48, generator=g))
    eval_y = normalise(eval_x @ mixing * 0.2 + torch.randn(400, 48, generator=g))
    ones = lambda x: torch.cat([x, torch.ones(len(x), 1)], dim=1)  # noqa: E731
    weights = torch.linalg.lstsq(ones(fit_x), fit_y).solution
    decoded_mse = ((ones(eval_x) @ weights - eval_y) ** 2).mean().item()
    images = torch.randn(8, 3, 32, 32, generator=g)
    model = _PixelModel()
    pixel_mse = model(images, None, None)["pixel_loss"].item()
    right = dict(decoded_mse=decoded_mse, pixel_mse=pixel_mse, fit_x=fit_x, fit_y=fit_y, eval_x=eval_x,
                 eval_y=eval_y, pixel_model=model, eval_images=images, grid=(8, 8))
    return right, {
        "measured on the batch it was fitted on": with_(right, decoded_mse=((ones(fit_x) @ weights - fit_y) ** 2)
                                                       .mean().item()),
        "fitted and measured on one batch": with_(right, eval_x=fit_x, eval_y=fit_y),
        "predicting 0": with_(right, decoded_mse=(eval_y ** 2).mean().item()),
        "a sum, not a mean": with_(right, decoded_mse=((ones(eval_x) @ weights - eval_y) ** 2).sum(-1).mean().item()),
        "the model's other loss": with_(right, pixel_mse=model(images, None, None)["loss"].item()),
        "raw pixels, not normalised patches": with_(right, eval_y=eval_y * 3 + 1),
    }


@case("08_2")
def _():
    history = [{"embedding_loss": 0.46, "pixel_loss": 1.0}, {"embedding_loss": 0.34, "pixel_loss": 0.96}]
    right = dict(equal_weight=0.34 / 0.96, history=history)
    return right, {
        "upside down: pixels over embedding": with_(right, equal_weight=0.96 / 0.34),
        "at the start": with_(right, equal_weight=0.46 / 1.0),
        "a difference, not a ratio": with_(right, equal_weight=0.96 - 0.34),
    }


def _timed(fn, repeats=5):                                 # notebook 08's solution, on the CPU
    with torch.no_grad():
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
    return (time.perf_counter() - start) / repeats


@case("08_3")
def _():
    from jepa_lite.core.masks import MaskSampler, default_mask_config

    batch = torch.randn(4, 3, 32, 32)
    m = MaskSampler(default_mask_config((8, 8)))(4, generator=_gen(2))
    ctx = m.context_indices
    right = dict(timed=_timed, ctx=ctx, batch=batch, grid=(8, 8), fraction=ctx.shape[1] / 64)

    def total(fn, repeats=5):
        return _timed(fn, repeats) * repeats

    return right, {
        "the total, not the mean": with_(right, timed=total),
        "milliseconds": with_(right, timed=lambda fn: 1000 * _timed(fn)),
        "the fraction upside down": with_(right, fraction=64 / ctx.shape[1]),
        "the hidden share": with_(right, fraction=1 - ctx.shape[1] / 64),
    }


# ---------------------------------------------------------------------------------------------
# notebook 09


def _toy_samples(dim, n=1_024, seed=0):                    # notebook 09's (the two samples used here)
    g = _gen(seed)
    gaussian = torch.randn(n, dim, generator=g)
    stretch = torch.ones(dim)
    stretch[0] = 3.0
    return {checks.GAUSSIAN: gaussian, checks.STRETCHED: gaussian * stretch}


@case("09_1")
def _():
    from jepa_lite.core.sigreg import sigreg

    samples = _toy_samples(8)
    spread = {}
    for m in (4, 256):                                     # 16 and 64 are not read by the check: copies
        for name in (checks.GAUSSIAN, checks.STRETCHED):
            draws = torch.tensor([sigreg(samples[name], num_directions=m, generator=_gen(s)).item()
                                  for s in range(20)])
            spread[m, name] = (draws.mean().item(), draws.std().item(), draws.min().item(), draws.max().item())
            spread[{4: 16, 256: 64}[m], name] = spread[m, name]
    first = {key: (v[0], 0.0, v[0], v[0]) for key, v in spread.items()}
    swapped = {(m, name): spread[m, checks.STRETCHED if name == checks.GAUSSIAN else checks.GAUSSIAN]
               for m, name in spread}
    right = dict(spread=spread, samples=samples)
    return right, {
        "(std, mean, ...) in the wrong order": with_(right, spread={k: (v[1], v[0], v[2], v[3])
                                                                    for k, v in spread.items()}),
        "the two samples swapped": with_(right, spread=swapped),
        "the same directions for every draw (std 0)": with_(right, spread=first),
        "the variance, not the std": with_(right, spread={k: (v[0], v[1] ** 2, v[2], v[3])
                                                          for k, v in spread.items()}),
    }


@case("09_2")
def _():
    from jepa_lite.core.sigreg import sigreg

    large = _toy_samples(8, n=4_096, seed=1)

    def by_n_of(rows=lambda n: n, scale=lambda n: 1.0, names=(checks.GAUSSIAN, checks.STRETCHED)):
        return {n: [sigreg(large[name][:rows(n)], generator=_gen(0)).item() * scale(n) for name in names]
                for n in (256, 1_024, 4_096)}

    right = dict(by_n=by_n_of())
    return right, {
        "[stretched, isotropic] in the other order": dict(by_n=by_n_of(names=(checks.STRETCHED, checks.GAUSSIAN))),
        "the same 256 points at every N": dict(by_n=by_n_of(rows=lambda n: 256)),
        "divided by N": dict(by_n=by_n_of(scale=lambda n: 1 / n)),
    }


@case("09_3")
def _():
    g = _gen(4)
    sample = torch.randn(2_048, 2, generator=g) * torch.tensor([3.0, 1 / 3])

    def rotated(angle):
        rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return sample @ rotation.T

    right = dict(tilted=rotated(math.pi / 4))
    return right, {
        "not rotated": dict(tilted=sample),
        "rotated by -45 degrees": dict(tilted=rotated(-math.pi / 4)),
        "standard deviation 3 on both axes": dict(tilted=torch.randn(2_048, 2, generator=g) * 3),
        "transposed": dict(tilted=rotated(math.pi / 4).T),
    }


# ---------------------------------------------------------------------------------------------
# notebook 10


@case("10_1")
def _():
    true = torch.randn(4, 12, 48, generator=_gen(10)) * 0.8 + 0.3
    right = dict(grey_mse=true.pow(2).mean().item(), true_patches=true)
    return right, {
        "mean absolute error": with_(right, grey_mse=true.abs().mean().item()),
        "the variance, not the error of 0": with_(right, grey_mse=true.var().item()),
        "summed over the pixels of a patch": with_(right, grey_mse=true.pow(2).sum(-1).mean().item()),
        "root mean squared error": with_(right, grey_mse=true.pow(2).mean().sqrt().item()),
    }


@case("10_2")
def _():
    def iou(a, b):
        inter, union = (a & b).flatten(1).sum(1).float(), (a | b).flatten(1).sum(1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))

    def dice(a, b):
        inter, total = (a & b).flatten(1).sum(1).float(), (a.flatten(1).sum(1) + b.flatten(1).sum(1)).float()
        return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))

    return dict(object_iou=iou), {
        "Dice instead of IoU": dict(object_iou=dice),
        "one IoU over the whole batch": dict(
            object_iou=lambda a, b: ((a & b).sum() / (a | b).sum()).float().expand(a.shape[0])),
        "empty masks give 0": dict(
            object_iou=lambda a, b: (a & b).flatten(1).sum(1).float() / (a | b).flatten(1).sum(1).clamp(min=1)),
        "divided by the true area": dict(
            object_iou=lambda a, b: torch.where(b.flatten(1).any(1), (a & b).flatten(1).sum(1).float()
                                                / b.flatten(1).sum(1).clamp(min=1), torch.ones(a.shape[0]))),
        "pixel accuracy": dict(object_iou=lambda a, b: (a == b).flatten(1).float().mean(1)),
    }


# ---------------------------------------------------------------------------------------------
# notebook 11


@case("11_1")
def _():
    right = dict(reverse_clips=lambda clips, labels: (clips.flip(1), labels ^ 1))
    return right, {
        "frames reversed, labels kept": dict(reverse_clips=lambda clips, labels: (clips.flip(1), labels)),
        "mirrored left-right instead of played backwards": dict(
            reverse_clips=lambda clips, labels: (clips.flip(-1), labels ^ 1)),
        "the colour channels reversed": dict(reverse_clips=lambda clips, labels: (clips.flip(2), labels ^ 1)),
        "labels shifted by one": dict(reverse_clips=lambda clips, labels: (clips.flip(1), (labels + 1) % 6)),
        "labels 5 - m": dict(reverse_clips=lambda clips, labels: (clips.flip(1), 5 - labels)),
        "converted to float": dict(reverse_clips=lambda clips, labels: (clips.flip(1).float(), labels ^ 1)),
    }


@case("11_2")
def _():
    def tokens(frames, size, tubelet, patch):
        return (frames // tubelet) * (size // patch) ** 2

    right = dict(tokens_per_clip=tokens, attention_ratio=64.0)
    return right, {
        "the tubelet forgotten": dict(tokens_per_clip=lambda f, s, t, p: f * (s // p) ** 2, attention_ratio=64.0),
        "one side of the frame only": dict(tokens_per_clip=lambda f, s, t, p: (f // t) * (s // p),
                                           attention_ratio=64.0),
        "the ratio of tokens, not of pairs": dict(tokens_per_clip=tokens, attention_ratio=8.0),
        "the ratio upside down": dict(tokens_per_clip=tokens, attention_ratio=1 / 64),
        "frames times tubelet": dict(tokens_per_clip=lambda f, s, t, p: f * t * (s // p) ** 2, attention_ratio=64.0),
    }


# ---------------------------------------------------------------------------------------------
# the tests


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_the_check_passes_the_solution_and_fails_every_listed_wrong_answer(exercise):
    check = getattr(checks, f"check_{exercise}")
    number = int(exercise.split("_")[1])
    right, wrong = CASES[exercise]()
    check(**right)                                            # the solution passes, silently
    assert len(wrong) >= 2, f"{exercise}: list at least two plausible wrong answers"
    accepted = []
    for name, arguments in wrong.items():
        try:
            check(**arguments)
        except AssertionError as error:
            assert str(error).startswith(f"Exercise {number}: "), f"{exercise}, {name}: {error}"
            scaffolding = re.search(r"\b(session|issue|pytest|nbval|unit tests?|the tests?)\b", str(error), re.I)
            assert not scaffolding, f"{exercise}, {name}: the message speaks of {scaffolding.group(0)!r}: {error}"
        else:
            accepted.append(name)
    assert not accepted, f"{exercise}: the check accepts wrong answers: {accepted}"


def test_every_exercise_calls_its_check_function_and_has_wrong_answers_listed():
    nbformat = pytest.importorskip("nbformat")
    from jepa_lite.course.student import exercises, teacher_notebooks

    found = []
    for path in teacher_notebooks(NOTEBOOKS_DIR):
        nb = nbformat.read(path, as_version=4)
        for exercise in exercises(nb, path.name):
            key = f"{path.name[:2]}_{exercise.number}"
            source = nb.cells[exercise.check].source
            assert re.search(rf"^check_{key}\(", source, re.MULTILINE), \
                f"{path.name}, check of exercise {exercise.number}: it should call check_{key}(...)"
            found.append(key)
    assert len(found) == 37 and set(found) == set(CASES), sorted(set(found) ^ set(CASES))
