import pytest
import torch

from jepa_lite.core.model_sizes import IJEPA_SIZES, MODEL_SIZES, model_configs
from jepa_lite.core.models import (
    Predictor,
    PredictorConfig,
    VisionTransformer,
    ViTConfig,
    gather_tokens,
    sincos_pos_embed_2d,
)


def tiny_encoder(**overrides) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(**{**dict(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2),
                                          **overrides}))


def test_image_size_not_divisible_by_patch_size_names_values():
    with pytest.raises(ValueError, match=r"30.*not divisible.*4"):
        ViTConfig(image_size=30, patch_size=4)


def test_bad_heads_and_depth():
    with pytest.raises(ValueError, match="num_heads"):
        ViTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="depth"):
        ViTConfig(depth=0)


def test_sincos_embedding_shape_and_values():
    pos = sincos_pos_embed_2d(16, (3, 5))
    assert pos.shape == (15, 16)
    # cell (0, 0): all sines 0, all cosines 1
    assert torch.allclose(pos[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    # same row -> same first half, same column -> same second half
    assert torch.equal(pos[1, :8], pos[2, :8])
    assert torch.equal(pos[0, 8:], pos[5, 8:])
    assert len({tuple(r.tolist()) for r in pos}) == 15


def test_encoder_full_and_indexed_shapes():
    enc = tiny_encoder().eval()
    x = torch.randn(3, 3, 16, 16)
    assert enc(x).shape == (3, 16, 32)
    idx = torch.tensor([[0, 5, 7], [1, 2, 3], [15, 14, 0]])
    assert enc(x, idx).shape == (3, 3, 32)


def test_encoder_with_all_indices_equals_full_and_is_permutation_equivariant():
    enc = tiny_encoder().eval()
    x = torch.randn(2, 3, 16, 16)
    full = enc(x)
    all_idx = torch.arange(16).expand(2, 16)
    assert torch.allclose(enc(x, all_idx), full, atol=1e-5)
    perm = torch.randperm(16).expand(2, 16)
    assert torch.allclose(enc(x, perm), gather_tokens(full, perm), atol=1e-5)


def test_context_encoder_ignores_pixels_of_tokens_it_was_not_given():
    enc = tiny_encoder().eval()
    x = torch.randn(1, 3, 16, 16)
    idx = torch.tensor([[0, 1, 2, 3]])           # the top row of patches (pixel rows 0..3)
    y = x.clone()
    y[..., 8:, :] = torch.randn_like(y[..., 8:, :])
    assert torch.allclose(enc(x, idx), enc(y, idx))
    assert not torch.allclose(enc(x), enc(y))


def test_layer_outputs_last_equals_forward():
    enc = tiny_encoder().eval()
    x = torch.randn(2, 3, 16, 16)
    outs = enc.layer_outputs(x)
    assert len(outs) == 2 and all(o.shape == (2, 16, 32) for o in outs)
    assert torch.allclose(outs[-1], enc(x), atol=1e-6)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="16x16"):
        tiny_encoder()(torch.randn(1, 3, 20, 20))


def test_predictor_shapes_and_blocks_are_independent():
    torch.manual_seed(0)
    pred = Predictor(PredictorConfig(embed_dim=16, depth=2, num_heads=2), encoder_dim=32, grid_size=(4, 4)).eval()
    context = torch.randn(2, 5, 32)
    ctx_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [14, 15]]])
    out = pred(context, ctx_idx, targets)
    assert out.shape == (2, 3, 2, 32)
    # changing the positions of block 2 must not change the prediction for block 0
    other = targets.clone()
    other[:, 2] = torch.tensor([[12, 13], [10, 11]])
    out2 = pred(context, ctx_idx, other)
    assert torch.allclose(out[:, 0], out2[:, 0], atol=1e-6)
    assert not torch.allclose(out[:, 2], out2[:, 2])
    # the position decides the prediction: two different targets get different outputs
    assert not torch.allclose(out[0, 0, 0], out[0, 0, 1])


def test_named_sizes_build_and_unknown_size_errors():
    for name in MODEL_SIZES:
        enc_cfg, pred_cfg = model_configs(name)
        assert enc_cfg.embed_dim % enc_cfg.num_heads == 0
        assert pred_cfg.embed_dim < enc_cfg.embed_dim      # the predictor is narrow
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        model_configs("huge")


def test_residual_projections_are_rescaled_by_depth():
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(image_size=8, patch_size=4, embed_dim=64, depth=8, num_heads=2))
    first = enc.blocks[0].mlp.fc2.weight.std().item()
    last = enc.blocks[-1].mlp.fc2.weight.std().item()
    assert last < first * 0.4          # 1/sqrt(2*8) vs 1/sqrt(2)


def test_shared_context_predictor_keeps_blocks_apart_and_matches_single_block_passes():
    torch.manual_seed(0)
    pred = Predictor(PredictorConfig(embed_dim=16, depth=2, num_heads=2, shared_context=True),
                     encoder_dim=32, grid_size=(4, 4)).eval()
    with torch.no_grad():              # large weights, so that every attention path matters
        for p in pred.parameters():
            p.normal_(0, 0.3)
    context = torch.randn(2, 5, 32)
    ctx_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [14, 15]]])
    out = pred(context, ctx_idx, targets)
    assert out.shape == (2, 3, 2, 32)
    for t in range(3):   # each block predicted alone gives the same answer: blocks do not interact
        alone = pred(context, ctx_idx, targets[:, t:t + 1])
        assert torch.allclose(out[:, t], alone[:, 0], atol=1e-5)
    # same weights without sharing: context tokens then also see the mask tokens, so it differs
    pred.config.shared_context = False
    assert (pred(context, ctx_idx, targets) - out).abs().max() > 1e-2


def test_predictor_config_compatibility_fields():
    # the course's defaults: PyTorch's LayerNorm eps, row-first sin-cos table, and a repr that leaves them out
    default = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), encoder_dim=32, grid_size=(4, 4))
    assert default.norm.eps == default.blocks[0].norm1.eps == 1e-5
    assert torch.equal(default.pos_embed, sincos_pos_embed_2d(16, (4, 4), "row_col"))
    assert "norm_eps" not in repr(default.config) and "pos_embed_order" not in repr(default.config)
    # the released predictors' layout (IJEPA_SIZES): used by every LayerNorm and by the sin-cos table
    config = PredictorConfig(embed_dim=16, depth=2, num_heads=2, norm_eps=1e-6, pos_embed_order="col_row")
    released = Predictor(config, encoder_dim=32, grid_size=(4, 4))
    assert {m.eps for m in released.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    assert torch.equal(released.pos_embed, sincos_pos_embed_2d(16, (4, 4), "col_row"))
    assert "norm_eps=1e-06" in repr(config) and "pos_embed_order='col_row'" in repr(config)
    assert all(model_configs(name)[1].norm_eps == 1e-6 and model_configs(name)[1].pos_embed_order == "col_row"
               for name in IJEPA_SIZES)
    with pytest.raises(ValueError, match=r"pos_embed_order must be one of \('row_col', 'col_row'\), got 'xy'"):
        PredictorConfig(pos_embed_order="xy")
