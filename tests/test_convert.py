"""Converters for the released I-JEPA weights: tiny random models in both source formats, no
downloads. The reference format is reproduced here by a small from-scratch ViT and predictor with
the reference code's module layout, parameter names and numerics (eps 1e-6, explicit softmax
attention, sin-cos table built from np.meshgrid(w, h), one predictor pass per target block with
the batch block-major)."""
import copy
import dataclasses
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from jepa_lite.core.model_sizes import IJEPA_SIZES, model_configs
from jepa_lite.core.models import Predictor, VisionTransformer, gather_tokens, sincos_pos_embed_2d
from jepa_lite.data.datasets import normalize
from jepa_lite.evaluation.probes import extract_features
from jepa_lite.interop.huggingface import convert_hf_ijepa
from jepa_lite.interop.meta import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REFERENCE_NUM_HEADS,
    convert_reference_state_dict,
    load_reference_checkpoint,
    reference_config,
)
from jepa_lite.interop.meta_predictor import (
    convert_reference_predictor_state_dict,
    load_reference_models,
    load_reference_predictor,
    reference_predictor_config,
)

ATOL = 1e-5


# ---------------------------------------------------------------------------------------------
# a reference-style ViT (the layout of facebookresearch/ijepa's vision_transformer.py)

def reference_style_sincos(dim: int, side: int) -> np.ndarray:
    """[side * side, dim]: the grid comes from np.meshgrid(w, h), and the first half of the
    channels is computed from its first plane (which holds the column index)."""
    planes = np.stack(np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float)))   # [2, side, side]

    def one_axis(d, positions):
        freqs = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2))
        angles = positions.reshape(-1)[:, None] * freqs[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([one_axis(dim // 2, planes[0]), one_axis(dim // 2, planes[1])], axis=1)


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        weights = ((q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


class RefMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), RefAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), RefMLP(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


def _randomise(module: nn.Module, blocks: nn.ModuleList) -> None:
    """Random everything (LayerNorm affine and mask token too, no zero biases); fixed tables stay."""
    for p in module.parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.3 if p.ndim > 1 else 0.2)
    for block in blocks:
        block.norm1.weight.data.add_(1.0), block.norm2.weight.data.add_(1.0)


def _gather(x, indices):
    return torch.gather(x, 1, indices[..., None].expand(-1, -1, x.shape[-1]))


class RefViT(nn.Module):
    def __init__(self, image=32, patch=8, dim=192, depth=2, heads=3, hidden=None):
        super().__init__()
        side = image // patch
        self.patch_embed = RefPatchEmbed(patch, dim)
        self.pos_embed = nn.Parameter(torch.from_numpy(reference_style_sincos(dim, side)).float()[None],
                                      requires_grad=False)
        self.blocks = nn.ModuleList(RefBlock(dim, heads, hidden or 4 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        _randomise(self, self.blocks)

    def forward(self, x, masks=None):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        if masks is not None:
            x = _gather(x, masks)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class RefPredictor(nn.Module):
    """The layout of the reference's VisionTransformerPredictor (its encoder's head count)."""

    def __init__(self, side=4, encoder_dim=192, dim=24, depth=3, heads=3, hidden=40):
        super().__init__()
        self.predictor_embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.predictor_pos_embed = nn.Parameter(torch.from_numpy(reference_style_sincos(dim, side)).float()[None],
                                                requires_grad=False)
        self.predictor_blocks = nn.ModuleList(RefBlock(dim, heads, hidden) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(dim, eps=1e-6)
        self.predictor_proj = nn.Linear(dim, encoder_dim)
        _randomise(self, self.predictor_blocks)

    def forward(self, x, masks_x, masks):
        """x: [B, K_ctx, D] encoded under the one context mask masks_x = [[B, K_ctx]]; masks: T target
        masks [B, K_tgt] -> [T * B, K_tgt, D], block-major (rows t * B ... t * B + B - 1: block t)."""
        (context_mask,) = masks_x
        batch = x.shape[0]
        positions = self.predictor_pos_embed.repeat(batch, 1, 1)
        x = self.predictor_embed(x) + _gather(positions, context_mask)
        num_context = x.shape[1]
        queries = torch.cat([self.mask_token + _gather(positions, mask) for mask in masks])   # block-major
        x = torch.cat([x.repeat(len(masks), 1, 1), queries], dim=1)        # every block with its own context copy
        for block in self.predictor_blocks:
            x = block(x)
        return self.predictor_proj(self.predictor_norm(x)[:, num_context:])


def _ddp(module):                       # DistributedDataParallel's parameter names
    return {"module." + k: v for k, v in module.state_dict().items()}


def _images(n=3, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _max_err(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# reference checkpoints

def test_reference_sincos_layout_is_col_row():
    ref = torch.from_numpy(reference_style_sincos(32, 5)).float()
    assert torch.allclose(sincos_pos_embed_2d(32, (5, 5), order="col_row"), ref, atol=1e-6)
    assert not torch.allclose(sincos_pos_embed_2d(32, (5, 5)), ref, atol=1e-2)     # the course's default layout
    with pytest.raises(ValueError, match="order must be one of"):
        sincos_pos_embed_2d(32, (5, 5), order="xy")


def test_reference_state_dict_converts_exactly():
    torch.manual_seed(0)
    ref = RefViT().eval()
    for state_dict in (ref.state_dict(), {"module." + k: v for k, v in ref.state_dict().items()}):
        config, params = convert_reference_state_dict(state_dict)
        assert (config.embed_dim, config.depth, config.num_heads, config.patch_size, config.image_size) == \
            (192, 2, 3, 8, 32)
        assert (config.norm_eps, config.pos_embed_order, config.mlp_ratio) == (1e-6, "col_row", 4.0)
        encoder = VisionTransformer(config).eval()
        encoder.load_state_dict(params)                                 # strict: every key maps
        x = _images()
        indices = torch.tensor([[0, 5, 9, 15], [3, 2, 1, 0], [15, 14, 7, 8]])
        with torch.no_grad():
            err = max(_max_err(encoder(x), ref(x)), _max_err(encoder(x, indices), ref(x, indices)))
        print(f"reference state dict -> jepa_lite: max abs error {err:.2e}")
        assert err < ATOL


def test_reference_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    context, target = RefViT(dim=48, heads=4, hidden=100), RefViT(dim=48, heads=4, hidden=100)
    predictor = nn.Linear(48, 24)
    opt = {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.04, "params": [0]}]}
    path = tmp_path / "IN1K-tiny.pth.tar"
    torch.save({"encoder": _ddp(context), "predictor": _ddp(predictor), "target_encoder": _ddp(target),
                "opt": opt, "scaler": None, "epoch": 3, "loss": 0.5, "batch_size": 8, "world_size": 1,
                "lr": 1e-3}, path)
    x = _images(seed=1)
    for which, ref in (("target_encoder", target), ("encoder", context)):
        encoder = load_reference_checkpoint(path, which=which, num_heads=4)     # 48 wide: not a reference size
        assert not encoder.training and encoder.config.mlp_ratio * 48 == pytest.approx(100)
        with torch.no_grad():
            err = _max_err(encoder(x), ref.eval()(x))
        print(f"reference checkpoint ({which}) -> jepa_lite: max abs error {err:.2e}")
        assert err < ATOL
    with pytest.raises(ValueError, match="which must be"):
        load_reference_checkpoint(path, which="predictor", num_heads=4)


class _Custom:                           # an arbitrary pickled object, as old training scripts saved
    pass


def test_untrusted_pickles_are_refused_unless_asked(tmp_path):
    torch.manual_seed(2)
    ref = RefViT().eval()
    torch.save({"target_encoder": ref.state_dict(), "args": _Custom()}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match="weights_only=False"):
        load_reference_checkpoint(tmp_path / "ckpt.pth")
    encoder = load_reference_checkpoint(tmp_path / "ckpt.pth", weights_only=False)
    x = _images()
    with torch.no_grad():
        assert _max_err(encoder(x), ref(x)) < ATOL


def test_released_sizes_are_inferred_from_shapes():
    """Shape-only (meta) state dicts of the released encoders give the named configs."""
    for name, (side, patch, width, depth, hidden) in {"vit_h14_224": (16, 14, 1280, 32, 5120),
                                                      "vit_h16_448": (28, 16, 1280, 32, 5120),
                                                      "vit_g16_224": (14, 16, 1408, 40, 6144)}.items():
        shapes = {"patch_embed.proj.weight": (width, 3, patch, patch), "pos_embed": (1, side * side, width),
                  "blocks.0.mlp.fc1.weight": (hidden, width), "blocks.0.attn.qkv.bias": (3 * width,),
                  f"blocks.{depth - 1}.norm1.weight": (width,)}
        state_dict = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        assert reference_config(state_dict) == model_configs(name)[0] == \
            model_configs(name)[0].__class__(**IJEPA_SIZES[name][0]), name
        config = model_configs(name)[0]
        assert int(config.embed_dim * config.mlp_ratio) == hidden


def test_reference_errors_name_the_problem():
    torch.manual_seed(0)
    state_dict = RefViT().state_dict()
    broken = {k: v for k, v in state_dict.items() if k not in ("blocks.1.mlp.fc2.bias", "norm.weight")}
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.mlp.fc2.bias', 'norm.weight'\]"):
        convert_reference_state_dict(broken)
    with pytest.raises(ValueError, match=r"missing keys \['patch_embed.proj.weight'\]"):
        convert_reference_state_dict({k: v for k, v in state_dict.items() if not k.startswith("patch_embed")})
    narrow = RefViT(dim=40, heads=4).state_dict()
    with pytest.raises(ValueError, match=r"width 40.*" + re.escape(str(sorted(REFERENCE_NUM_HEADS)))):
        convert_reference_state_dict(narrow)
    config, _ = convert_reference_state_dict(narrow, num_heads=4)        # the override resolves it
    assert config.num_heads == 4
    with pytest.raises(ValueError, match="has no 'target_encoder'"):
        convert_reference_state_dict({"encoder": state_dict, "predictor": {}})


# ---------------------------------------------------------------------------------------------
# reference predictors

def _predictor_inputs(batch=2, blocks=3, num_context=6, num_target=4, num_patches=16, encoder_dim=192, seed=0):
    """Random context tokens [B, K_ctx, D], context indices [B, K_ctx] and target indices [B, T, K_tgt]
    (distinct positions within each row and block, unsorted)."""
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, num_context, encoder_dim, generator=g)
    context_indices = torch.stack([torch.randperm(num_patches, generator=g)[:num_context] for _ in range(batch)])
    target_indices = torch.stack([torch.stack([torch.randperm(num_patches, generator=g)[:num_target]
                                               for _ in range(blocks)]) for _ in range(batch)])
    return context, context_indices, target_indices


def _reference_predictions(ref, context, context_indices, target_indices):
    """The reference's call, [T * B, K_tgt, D] block-major."""
    return ref(context, [context_indices], list(target_indices.unbind(dim=1)))


def _block_major(predictions):
    """jepa_lite's [B, T, K_tgt, D] -> the reference's [T * B, K_tgt, D]."""
    return predictions.transpose(0, 1).reshape(-1, *predictions.shape[2:])


def test_reference_predictor_converts_exactly():
    torch.manual_seed(5)
    ref = RefPredictor().eval()
    context, context_indices, target_indices = _predictor_inputs()
    with torch.no_grad():
        expected = _reference_predictions(ref, context, context_indices, target_indices)
    sources = {"state dict": ref.state_dict(), "module. prefixes": _ddp(ref),
               "checkpoint": {"encoder": {}, "target_encoder": {}, "predictor": _ddp(ref)}}
    for source, state_dict in sources.items():
        config, params = convert_reference_predictor_state_dict(state_dict, encoder_dim=192, grid_size=(4, 4))
        assert (config.embed_dim, config.depth, config.num_heads) == (24, 3, 3)       # heads: the encoder's
        assert int(config.embed_dim * config.mlp_ratio) == 40
        assert (config.norm_eps, config.pos_embed_order, config.shared_context) == (1e-6, "col_row", False)
        predictor = Predictor(config, encoder_dim=192, grid_size=(4, 4)).eval()
        predictor.load_state_dict(params)                                # strict: every key maps
        loaded = load_reference_predictor(state_dict)
        assert not loaded.training
        with torch.no_grad():
            predictions = predictor(context, context_indices, target_indices)
            err = max(_max_err(_block_major(predictions), expected),
                      _max_err(_block_major(loaded(context, context_indices, target_indices)), expected))
        print(f"reference predictor ({source}) -> jepa_lite: max abs error {err:.2e}")
        assert predictions.shape == (2, 3, 4, 192) and err < ATOL
    # In float64 the two codes agree to rounding (~1e-15), so that even the LayerNorm eps shows: the
    # converted config matches the reference, and neither of the course's defaults would.
    ref64, context64 = copy.deepcopy(ref).double(), context.double()
    with torch.no_grad():
        expected64 = _reference_predictions(ref64, context64, context_indices, target_indices)
    for course_default in ({}, dict(pos_embed_order="row_col"), dict(norm_eps=1e-5)):
        predictor64 = Predictor(dataclasses.replace(config, **course_default), encoder_dim=192, grid_size=(4, 4))
        predictor64.load_state_dict(params)
        with torch.no_grad():
            err = _max_err(_block_major(predictor64.double().eval()(context64, context_indices, target_indices)),
                           expected64)
        assert (err < 1e-12) == (not course_default), (course_default, err)


def test_reference_predictor_learned_positions_are_copied():
    torch.manual_seed(6)
    ref = RefPredictor().eval()
    with torch.no_grad():
        ref.predictor_pos_embed.add_(0.1 * torch.randn_like(ref.predictor_pos_embed))
    with pytest.warns(UserWarning, match="predictor_pos_embed is not a fixed 2-D sin-cos table"):
        predictor = load_reference_predictor(ref.state_dict())
    inputs = _predictor_inputs(seed=6)
    with torch.no_grad():
        err = _max_err(_block_major(predictor(*inputs)), _reference_predictions(ref, *inputs))
    assert err < ATOL


def test_released_predictor_sizes_are_inferred_from_shapes():
    """Shape-only (meta) state dicts of the released predictors give the named configs."""
    for name, (side, encoder_dim, depth) in {"vit_h14_224": (16, 1280, 12), "vit_h16_448": (28, 1280, 12),
                                             "vit_g16_224": (14, 1408, 16)}.items():
        shapes = {"predictor_embed.weight": (384, encoder_dim), "predictor_pos_embed": (1, side * side, 384),
                  "predictor_blocks.0.mlp.fc1.weight": (4 * 384, 384),
                  f"predictor_blocks.{depth - 1}.norm1.weight": (384,)}
        state_dict = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        assert reference_predictor_config(state_dict) == (model_configs(name)[1], encoder_dim, (side, side)), name


def test_reference_predictor_errors_name_the_problem():
    torch.manual_seed(0)
    state_dict = RefPredictor().state_dict()
    with pytest.raises(ValueError, match=r"no 'predictor'; its keys: \['encoder', 'target_encoder'\]"):
        load_reference_predictor({"encoder": {}, "target_encoder": state_dict})
    broken = {k: v for k, v in state_dict.items() if k not in ("mask_token", "predictor_blocks.2.mlp.fc2.bias")}
    with pytest.raises(ValueError, match=r"predictor state dict: missing keys \['mask_token', "
                                         r"'predictor_blocks.2.mlp.fc2.bias'\]"):
        convert_reference_predictor_state_dict(broken)
    with pytest.raises(ValueError, match=r"missing keys \['predictor_embed.weight'\]"):
        load_reference_predictor({k: v for k, v in state_dict.items() if k != "predictor_embed.weight"})
    with pytest.raises(ValueError, match=r"encoder_dim 128 does not match .* 192-wide"):
        convert_reference_predictor_state_dict(state_dict, encoder_dim=128)
    with pytest.raises(ValueError, match=r"grid_size \(5, 5\) does not match .* 4x4 grid"):
        convert_reference_predictor_state_dict(state_dict, grid_size=(5, 5))
    narrow = RefPredictor(encoder_dim=40, heads=4).state_dict()
    with pytest.raises(ValueError, match=r"encoder width 40.*" + re.escape(str(sorted(REFERENCE_NUM_HEADS)))):
        convert_reference_predictor_state_dict(narrow)
    config, _ = convert_reference_predictor_state_dict(narrow, num_heads=4)      # the override resolves it
    assert config.num_heads == 4


def test_reference_pipeline_from_checkpoint_file(tmp_path):
    """Context encoder -> predictor, against the target encoder's tokens, as the reference trains them."""
    torch.manual_seed(7)
    ref_context, ref_target, ref_predictor = RefViT().eval(), RefViT().eval(), RefPredictor().eval()
    path = tmp_path / "IN1K-tiny.pth.tar"
    torch.save({"encoder": _ddp(ref_context), "predictor": _ddp(ref_predictor), "target_encoder": _ddp(ref_target),
                "opt": {"state": {}, "param_groups": []}, "scaler": None, "epoch": 1}, path)
    context_encoder, target_encoder, predictor = load_reference_models(path)
    assert not (context_encoder.training or target_encoder.training or predictor.training)
    images = _images(n=2, seed=7)
    _, context_indices, target_indices = _predictor_inputs(seed=7)
    with torch.no_grad():
        z = ref_context(images, context_indices)
        expected_predictions = _reference_predictions(ref_predictor, z, context_indices, target_indices)
        predictions = predictor(context_encoder(images, context_indices), context_indices, target_indices)
        err = max(_max_err(_block_major(predictions), expected_predictions),
                  _max_err(target_encoder(images), ref_target(images)))
        targets = gather_tokens(target_encoder(images), target_indices.flatten(1)).view(predictions.shape)
    print(f"reference pipeline -> jepa_lite: max abs error {err:.2e}")
    assert err < ATOL and predictions.shape == targets.shape
    with pytest.raises(ValueError, match="the checkpoint has no 'predictor'"):
        load_reference_models({"encoder": _ddp(ref_context), "target_encoder": _ddp(ref_target)})
    narrow = RefViT(dim=48, heads=3).state_dict()         # encoders that the predictor was not made for
    with pytest.raises(ValueError, match="encoder_dim 48 does not match"):
        load_reference_models({"encoder": narrow, "target_encoder": narrow, "predictor": _ddp(ref_predictor)},
                              num_heads=3)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers

def _tiny_hf_model(sincos=True, attn_implementation="sdpa"):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "IJepaModel"):
        pytest.skip(f"transformers {transformers.__version__} has no IJepaModel")
    torch.manual_seed(0)
    config = transformers.IJepaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=128, image_size=32, patch_size=8, layer_norm_eps=1e-6,
                                      attn_implementation=attn_implementation)
    model = transformers.IJepaModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():        # random LayerNorms and biases too
            if "position_embeddings" not in name:
                p.add_(torch.randn_like(p) * 0.2)
        if sincos:                                      # as in the released weights
            model.embeddings.position_embeddings.copy_(torch.from_numpy(reference_style_sincos(32, 4)).float()[None])
    return model


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_hf_ijepa_converts_exactly(attn_implementation):
    model = _tiny_hf_model(attn_implementation=attn_implementation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # a sin-cos table: no warning
        encoder = convert_hf_ijepa(model)
    assert encoder.config.pos_embed_order == "col_row" and encoder.config.norm_eps == 1e-6
    x = _images()
    with torch.no_grad():
        expected = model(pixel_values=x).last_hidden_state
        err = _max_err(encoder(x), expected)
        # rebuilt from its config (the state dict does not carry pos_embed): still the same function
        rebuilt = VisionTransformer(encoder.config).eval()
        rebuilt.load_state_dict(encoder.state_dict())
        err_rebuilt = _max_err(rebuilt(x), expected)
    print(f"HF IJepaModel ({attn_implementation}) -> jepa_lite: max abs error {err:.2e} "
          f"(rebuilt from config: {err_rebuilt:.2e})")
    assert err < ATOL and err_rebuilt < ATOL


def test_hf_legacy_names_and_learned_positions():
    model = _tiny_hf_model(sincos=False)
    legacy = {}       # transformers 4.x names (as in the Hub's files), inside IJepaForImageClassification
    renames = [(r"^layers\.", "encoder.layer."), (r"\.attention\.([qkv])_proj\.", None),
               (r"\.attention\.o_proj\.", ".attention.output.dense."), (r"\.mlp\.fc1\.", ".intermediate.dense."),
               (r"\.mlp\.fc2\.", ".output.dense.")]
    full = {"q": "query", "k": "key", "v": "value"}
    for key, value in model.state_dict().items():
        for pattern, new in renames:
            key = re.sub(pattern, new or (lambda m: f".attention.attention.{full[m.group(1)]}."), key)
        legacy["ijepa." + key] = value
    assert "ijepa.encoder.layer.1.attention.attention.query.weight" in legacy
    # a config.json may leave out the values equal to IJepaConfig's defaults
    config_json = {k: v for k, v in model.config.to_dict().items() if k not in ("qkv_bias", "num_channels")}
    with pytest.warns(UserWarning, match="not a fixed 2-D sin-cos table"):
        encoder = convert_hf_ijepa(legacy, config_json)
    x = _images(seed=2)
    with torch.no_grad():
        err = _max_err(encoder(x), model(pixel_values=x).last_hidden_state)
    print(f"HF (legacy names, learned positions) -> jepa_lite: max abs error {err:.2e}")
    assert err < ATOL


def test_hf_errors_name_the_problem():
    model = _tiny_hf_model()
    state_dict = {k: v for k, v in model.state_dict().items() if k != "layers.1.attention.k_proj.weight"}
    with pytest.raises(ValueError, match=r"missing keys \['layers.1.attention.k_proj.weight'\]"):
        convert_hf_ijepa(state_dict, model.config)
    with pytest.raises(ValueError, match="needs its config"):
        convert_hf_ijepa(model.state_dict())


# ---------------------------------------------------------------------------------------------
# inputs: ImageNet normalisation folded into the patch embedding

def test_folded_normalization_feeds_extract_features(tmp_path):
    torch.manual_seed(0)
    torch.save({"target_encoder": RefViT().state_dict()}, tmp_path / "ckpt.pth")
    plain = load_reference_checkpoint(tmp_path / "ckpt.pth")
    folded = load_reference_checkpoint(tmp_path / "ckpt.pth", input_normalization="jepa_lite")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = plain((images.float() / 255 - mean) / std)
        err = _max_err(folded(normalize(images)), expected)
    print(f"folded input normalisation: max abs error {err:.2e}")
    assert err < 1e-4          # float32 rounding of the folded weights, amplified by the random net
    features = extract_features(folded, images)
    pooled = F.layer_norm(expected.mean(dim=1), (expected.shape[-1],))
    assert _max_err(features, pooled) < 1e-4



def test_large_networks_are_built_without_random_init(monkeypatch, tmp_path):
    """The path the released models take (built on the meta device, tensors assigned), on tiny ones.
    Last in the file: the meta device's first use imports torch._dynamo, which transformers has
    usually imported by now."""
    from jepa_lite.interop import meta as convert

    monkeypatch.setattr(convert, "_META_MIN_PARAMS", 0)
    torch.manual_seed(3)
    ref, ref_predictor = RefViT().eval(), RefPredictor().eval()
    torch.save({"target_encoder": ref.state_dict(), "predictor": ref_predictor.state_dict()}, tmp_path / "ckpt.pth")
    encoder = load_reference_checkpoint(tmp_path / "ckpt.pth")
    predictor = load_reference_predictor(tmp_path / "ckpt.pth")
    for network in (encoder, predictor):
        assert network.pos_embed.device.type == "cpu" and all(p.device.type == "cpu" for p in network.parameters())
    x, inputs = _images(seed=3), _predictor_inputs(seed=3)
    with torch.no_grad():
        err = max(_max_err(encoder(x), ref(x)),
                  _max_err(_block_major(predictor(*inputs)), _reference_predictions(ref_predictor, *inputs)))
    print(f"meta-built encoder and predictor: max abs error {err:.2e}")
    assert err < ATOL
