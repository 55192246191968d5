import math

import pytest
import torch

from jepa_lite.core.models import Predictor, PredictorConfig, VisionTransformer, ViTConfig
from jepa_lite.core.objective import (
    JEPA,
    across_image_share,
    ema_momentum,
    ema_update,
    embedding_loss,
    embedding_std,
    normalize_targets,
    rankme,
)


def test_l2_loss_is_mean_squared_distance():
    pred = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert embedding_loss(pred, target, "l2").item() == pytest.approx(12.5)   # (25 + 0) / 2


def test_smooth_l1_and_l1_values():
    pred = torch.tensor([0.0, 0.0])
    target = torch.tensor([0.5, 2.0])
    # 0.5 * 0.5^2 = 0.125 (quadratic part), 2 - 0.5 = 1.5 (linear part)
    assert embedding_loss(pred, target, "smooth_l1").item() == pytest.approx((0.125 + 1.5) / 2)
    assert embedding_loss(pred, target, "l1").item() == pytest.approx(1.25)


def test_loss_errors():
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        embedding_loss(torch.zeros(2), torch.zeros(2), "l3")
    with pytest.raises(ValueError, match="differ"):
        embedding_loss(torch.zeros(2), torch.zeros(3))


def test_ema_update_math():
    target, online = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in target.parameters()]
    o0 = [p.detach().clone() for p in online.parameters()]
    ema_update(target, online, 0.9)
    for t, a, b in zip(target.parameters(), t0, o0):
        assert torch.allclose(t, 0.9 * a + 0.1 * b, atol=1e-7)
    ema_update(target, online, 1.0)          # momentum 1 freezes the target
    ema_update(target, online, 0.0)          # momentum 0 copies the online network
    for t, b in zip(target.parameters(), o0):
        assert torch.allclose(t, b)


def test_ema_schedule():
    assert ema_momentum(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert ema_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert ema_momentum(200, 100, 0.996, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1.5"):
        ema_momentum(0, 10, 1.5, 1.0)


def test_collapse_monitors():
    torch.manual_seed(0)
    collapsed = torch.ones(100, 16) + 1e-4 * torch.randn(100, 16)
    spread = torch.randn(1000, 16)
    assert embedding_std(collapsed) < 1e-3
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(16), rel=0.15)
    assert rankme(collapsed) < 1.1
    assert rankme(torch.eye(16)) == pytest.approx(16, rel=1e-3)
    assert 12 < rankme(spread) <= 16


def test_across_image_share_separates_image_content_from_position():
    torch.manual_seed(0)
    B, N, D = 32, 16, 8
    per_image = torch.randn(B, N, D)                                  # depends on the image only
    per_position = torch.randn(1, N, D).expand(B, N, D)              # the same for every image: positional collapse
    assert across_image_share(per_image) == pytest.approx(1.0, abs=0.1)
    assert across_image_share(per_position + 1e-3 * per_image) < 1e-4
    assert across_image_share(torch.ones(B, N, D)) == 0.0            # nothing varies: full collapse
    # half the variance per position, half per image: the share is ~1/2 (law of total variance)
    assert across_image_share(per_image + per_position) == pytest.approx(0.5, abs=0.1)
    # equal to the formula written out: mean per-position variance over images / variance over all tokens
    mixed = per_image + 3 * per_position
    by_hand = mixed.var(dim=0, unbiased=False).mean() / mixed.reshape(B * N, D).var(dim=0, unbiased=False).mean()
    assert across_image_share(mixed) == pytest.approx(by_hand.item(), rel=1e-5)
    # the std monitor does not tell a positional collapse from a healthy representation; this one does
    assert embedding_std(per_position) == pytest.approx(embedding_std(per_image), rel=0.3)
    with pytest.raises(ValueError, match=r"\[B, N, D\] with B >= 2.*\(1, 16, 8\)"):
        across_image_share(per_image[:1])


def small_jepa(mode: str, target_norm: str = "layer") -> JEPA:
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    pred = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), 32, enc.grid_size)
    return JEPA(enc, pred, target_mode=mode, loss="l2", target_norm=target_norm)


def batch():
    x = torch.randn(2, 3, 16, 16)
    ctx = torch.tensor([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])
    tgt = torch.tensor([[[8, 9], [14, 15]], [[0, 1], [4, 5]]])
    return x, ctx, tgt


def test_ema_mode_gives_no_gradient_to_the_target_encoder():
    model = small_jepa("ema")
    out = model(*batch())
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.context_encoder.parameters())
    assert out["predictions"].shape == out["targets"].shape == (2, 2, 2, 32)


def test_joint_mode_trains_the_target_encoder_by_gradient():
    model = small_jepa("joint")
    model(*batch())["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.target_encoder.parameters())


def test_targets_are_layer_normed_and_gathered_at_target_positions():
    model = small_jepa("ema").eval()
    x, ctx, tgt = batch()
    out = model(x, ctx, tgt)
    z = out["targets"]
    assert torch.allclose(z.mean(-1), torch.zeros(z.shape[:-1]), atol=1e-5)
    assert torch.allclose(z.var(-1, unbiased=False), torch.ones(z.shape[:-1]), atol=1e-3)
    assert torch.allclose(z[1, 1, 0], out["target_tokens"][1, 4])


def test_instance_targets_drop_what_every_token_of_an_image_shares():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 10, 8, generator=g)                                 # [B, N, D]
    shared = 5.0 * torch.randn(3, 1, 8, generator=g)                           # one vector per image
    z = normalize_targets(tokens, "instance")
    # per image and feature: mean 0 over the tokens before the layer norm, so adding a per-image
    # vector to every token (a background colour) or scaling a feature per image changes nothing
    assert torch.allclose(normalize_targets(tokens + shared, "instance"), z, atol=1e-4)
    scale = torch.rand(3, 1, 8, generator=g) + 0.5
    assert torch.allclose(normalize_targets(tokens * scale, "instance"), z, atol=1e-4)
    assert torch.allclose(z.mean(-1), torch.zeros(3, 10), atol=1e-5)      # still layer-normed per token
    assert torch.allclose(z.var(-1, unbiased=False), torch.ones(3, 10), atol=1e-3)
    # the paper's layer norm keeps the shared part: it is there to be predicted
    layer_shifted, layer_plain = normalize_targets(tokens + shared, "layer"), normalize_targets(tokens, "layer")
    assert not torch.allclose(layer_shifted, layer_plain, atol=1e-2)
    # by hand: standardise each feature over tokens, then each token over features
    by_hand = (tokens - tokens.mean(1, keepdim=True)) / tokens.std(1, unbiased=False, keepdim=True)
    by_hand = (by_hand - by_hand.mean(-1, keepdim=True)) / by_hand.std(-1, unbiased=False, keepdim=True)
    assert torch.allclose(z, by_hand, atol=1e-3)
    assert torch.equal(normalize_targets(tokens, "none"), tokens)
    with pytest.raises(ValueError, match="unknown target_norm 'batch'"):
        normalize_targets(tokens, "batch")


def test_jepa_uses_its_target_norm_and_monitors_see_the_layer_normed_output():
    x, ctx, tgt = batch()
    layer, instance = small_jepa("ema", "layer").eval(), small_jepa("ema", "instance").eval()
    out_layer, out_instance = layer(x, ctx, tgt), instance(x, ctx, tgt)        # same weights (seed 0)
    full = layer.target_encoder(x)                                             # [B, N, D]
    expected = normalize_targets(full, "instance")
    assert torch.allclose(out_instance["targets"][1, 1, 0], expected[1, 4], atol=1e-5)
    assert not torch.allclose(out_instance["targets"], out_layer["targets"], atol=1e-3)
    assert torch.allclose(out_instance["target_tokens"], out_layer["target_tokens"], atol=1e-6)
    with pytest.raises(ValueError, match="unknown target_norm"):
        small_jepa("ema", "rms")


def test_update_target_moves_ema_but_not_joint():
    for mode in ("ema", "joint"):
        model = small_jepa(mode)
        with torch.no_grad():
            for p in model.context_encoder.parameters():
                p.add_(1.0)
        before = [p.clone() for p in model.target_encoder.parameters()]
        model.update_target(0.5)
        moved = any(not torch.equal(a, b) for a, b in zip(before, model.target_encoder.parameters()))
        assert moved == (mode == "ema")


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown target_mode 'both'"):
        JEPA(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), target_mode="both")


# ---------------------------------------------------------------------------------------------
# the pixel objectives ("pixels": a masked autoencoder on JEPA's masks, "both")

from jepa_lite.core.models import PatchEmbed  # noqa: E402
from jepa_lite.core.objective import OBJECTIVES, normalize_patches, patchify, pixel_loss, unpatchify  # noqa: E402


def test_patchify_token_order_matches_the_encoders_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 16, 12)
    patches = patchify(x, (4, 3))
    assert patches.shape == (2, 12, 4 * 4 * 3)
    # token n = cell (n // cols, n % cols); values in (y, x, channel) order
    n, r, c = 7, 7 // 3, 7 % 3
    assert torch.equal(patches[1, n], x[1, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(1, 2, 0).flatten())
    square = torch.randn(2, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(square, (4, 4)), (4, 4)), square)
    # the same cells as the ViT's patch embedding: a linear map of each patch
    embed = PatchEmbed(4, 3, 5)
    weight = embed.proj.weight.permute(0, 2, 3, 1).reshape(5, -1)          # [D, (y, x, c)]
    assert torch.allclose(patchify(square, (4, 4)) @ weight.T + embed.proj.bias, embed(square), atol=1e-5)
    with pytest.raises(ValueError, match="5x5 grid"):
        patchify(square, (5, 5))


def test_normalize_patches_and_pixel_loss():
    p = torch.randn(3, 5, 48) * 4 + 2
    z = normalize_patches(p)
    assert torch.allclose(z.mean(-1), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(z.var(-1, unbiased=False), torch.ones(3, 5), atol=1e-3)
    assert normalize_patches(torch.full((2, 48), 0.7)).abs().max() < 1e-3      # a flat patch: ~0, no blow-up
    assert pixel_loss(torch.zeros(2, 4), torch.full((2, 4), 3.0)).item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match="differ"):
        pixel_loss(torch.zeros(2, 4), torch.zeros(2, 5))


def jepa_with(objective: str, **kwargs) -> JEPA:
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    pred = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), 32, enc.grid_size)
    return JEPA(enc, pred, loss="l2", objective=objective, patch_dim=48, **kwargs)


def test_pixel_objective_reconstructs_normalised_target_patches():
    model = jepa_with("pixels")
    x, ctx, tgt = batch()
    out = model(x, ctx, tgt)
    # by hand: the pixel head on the predicted tokens vs the target patches, normalised per patch
    patches = patchify(x, (4, 4))                                            # [B, N, 48]
    wanted = torch.stack([patches[b, tgt[b]] for b in range(2)])             # [B, T, K, 48]
    wanted = (wanted - wanted.mean(-1, keepdim=True)) / (wanted.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(out["target_pixels"], wanted, atol=1e-5)
    assert out["reconstruction"].shape == (2, 2, 2, 48)
    assert torch.allclose(out["reconstruction"], model.pixel_head(out["predictions"]))
    expected = (out["reconstruction"] - wanted).pow(2).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["pixel_loss"] is out["loss"] and "embedding_loss" not in out
    # gradients: pixel head, predictor, context encoder; never the (EMA) target encoder
    out["loss"].backward()
    for part in (model.pixel_head, model.predictor, model.context_encoder):
        assert all(p.grad is not None for p in part.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())
    # without pixel_norm the raw patches are the targets
    raw = jepa_with("pixels", pixel_norm=False)(x, ctx, tgt)
    assert torch.allclose(raw["target_pixels"], torch.stack([patches[b, tgt[b]] for b in range(2)]))


def test_both_is_the_weighted_sum_and_jepa_has_no_pixel_parts():
    x, ctx, tgt = batch()
    jepa = jepa_with("jepa")
    plain = jepa(x, ctx, tgt)
    assert jepa.pixel_head is None and "pixel_loss" not in plain and "reconstruction" not in plain
    both = jepa_with("both", pixel_weight=0.5)
    out = both(x, ctx, tgt)
    # the same seed builds the same networks: the embedding part equals the JEPA loss
    assert out["embedding_loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["embedding_loss"].item() + 0.5 * out["pixel_loss"].item(), rel=1e-6)


def test_objective_errors_name_the_valid_values():
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    pred = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), 32, enc.grid_size)
    with pytest.raises(ValueError, match=r"unknown objective 'mae'; valid: jepa, pixels, both"):
        JEPA(enc, pred, objective="mae")
    with pytest.raises(ValueError, match="needs patch_dim"):
        JEPA(enc, pred, objective="pixels")
    with pytest.raises(ValueError, match="pixel_weight must be > 0"):
        JEPA(enc, pred, objective="both", patch_dim=48, pixel_weight=0)
    assert OBJECTIVES == ("jepa", "pixels", "both")


def test_the_config_and_the_module_refuse_the_same_settings_with_the_same_line():
    """The rules live in one function (check_settings) that TrainConfig and JEPA both call."""
    from jepa_lite.engine.config import TrainConfig
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    pred = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), 32, enc.grid_size)
    for bad in ({"target_mode": "joint", "objective": "pixels"}, {"target_mode": "sigreg", "objective": "both"},
                {"loss": "l3"}, {"sigreg_weight": 1.0}):
        with pytest.raises(ValueError) as from_config:
            TrainConfig(**bad)
        with pytest.raises(ValueError) as from_module:
            JEPA(enc, pred, patch_dim=48, **bad)
        assert str(from_config.value) == str(from_module.value)
