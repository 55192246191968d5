import math

import pytest
import torch

from jepa_lite.models import Predictor, PredictorConfig, ViTConfig, VisionTransformer
from jepa_lite.objective import JEPA, ema_momentum, ema_update, embedding_loss, embedding_std, rankme


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


def small_jepa(mode: str) -> JEPA:
    torch.manual_seed(0)
    enc = VisionTransformer(ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    pred = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), 32, enc.grid_size)
    return JEPA(enc, pred, target_mode=mode, loss="l2")


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
