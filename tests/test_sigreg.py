"""SIGReg (jepa_lite.core.sigreg) and the engine's target mode "sigreg"."""
import math

import pytest
import torch

from jepa_lite.core.sigreg import epps_pulley, quadrature, random_directions, sigreg
from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine.checkpoint import jepa_from_checkpoint, load_checkpoint
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer, train

TINY = dict(model="micro", batch_size=16, log_every=1, device="cpu", image_size=16, patch_size=2,
            warmup_steps=2, checkpoint_every_minutes=100.0, target_mode="sigreg")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_the_quadrature_integrates_the_weight():
    t, weights = quadrature(knots=401, t_max=8.0)
    # w(t) = exp(-t^2/2) over the whole line is sqrt(2 pi)
    assert weights.sum().item() == pytest.approx(math.sqrt(2 * math.pi), rel=1e-4)
    assert t[0] == 0 and t[-1] == 8.0
    with pytest.raises(ValueError, match="knots must be >= 2"):
        quadrature(knots=1)


def test_directions_are_unit_vectors_and_seeded():
    a = random_directions(8, 64, generator=gen(3))
    assert a.shape == (8, 64) and torch.allclose(a.norm(dim=0), torch.ones(64))
    assert torch.equal(a, random_directions(8, 64, generator=gen(3)))
    assert not torch.equal(a, random_directions(8, 64, generator=gen(4)))


def test_epps_pulley_is_small_for_a_gaussian_and_grows_with_n_otherwise():
    gaussian = torch.randn(20_000, 1, generator=gen(0))
    assert epps_pulley(gaussian).item() < 3                      # about 1 under N(0, 1), whatever N
    uniform = torch.rand(20_000, 1, generator=gen(0)) * 2 * math.sqrt(3) - math.sqrt(3)   # mean 0, variance 1
    assert epps_pulley(uniform).item() > 20                       # same two moments, not Gaussian
    assert epps_pulley(uniform[:2_000]).item() < epps_pulley(uniform).item()   # evidence grows with N


def test_sigreg_is_near_zero_for_isotropic_gaussians_and_large_otherwise():
    z = torch.randn(4096, 16, generator=gen(1))
    gaussian = sigreg(z, generator=gen(0)).item()
    collapsed = sigreg(torch.full((4096, 16), 0.3), generator=gen(0)).item()
    stretched = sigreg(z * torch.tensor([3.0] + [1.0] * 15), generator=gen(0)).item()
    shrunk = sigreg(0.1 * z, generator=gen(0)).item()
    assert gaussian < 3
    assert collapsed > 1000 and shrunk > 1000 and stretched > 30 * gaussian


def test_sigreg_ignores_the_order_of_the_sample_and_has_finite_gradients():
    z = torch.randn(256, 8, generator=gen(2), requires_grad=True)
    loss = sigreg(z, generator=gen(0))
    shuffled = sigreg(z[torch.randperm(256, generator=gen(5))], generator=gen(0))
    assert loss.item() == pytest.approx(shuffled.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    flat = torch.zeros(64, 8, requires_grad=True)                  # a collapsed sample still has a gradient
    sigreg(flat + 0.5, generator=gen(0)).backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0


def test_sigreg_pulls_a_collapsed_sample_apart():
    z = (0.01 * torch.randn(512, 4, generator=gen(0))).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=0.05)
    start = sigreg(z, generator=gen(0)).item()
    for step in range(150):
        optimizer.zero_grad()
        sigreg(z, num_directions=16, generator=gen(step)).backward()
        optimizer.step()
    assert sigreg(z, generator=gen(999)).item() < start / 50
    assert 0.7 < z.detach().std(dim=0).mean().item() < 1.3          # about unit variance, each direction


@pytest.fixture(scope="module")
def tiny_data():
    return make_shapes(64, seed=0, image_size=16)


@pytest.mark.parametrize("sigreg_on", ["pooled", "tokens"])
def test_the_engine_trains_with_sigreg_one_encoder_and_no_collapse_warning(tmp_path, tiny_data, sigreg_on):
    logs = []
    result = train(TrainConfig(steps=12, sigreg_on=sigreg_on, **TINY), tmp_path, dataset=tiny_data,
                   progress=False, log=logs.append)
    model = result.model
    assert model.target_encoder is model.context_encoder          # one network, trained by gradient
    assert all(p.requires_grad for p in model.target_encoder.parameters())
    last = result.history[-1]
    assert last["loss"] == pytest.approx(0.98 * last["embedding_loss"] + 0.02 * last["sigreg_loss"], rel=1e-4)
    assert all(math.isfinite(r["sigreg_loss"]) for r in result.history)
    assert not [line for line in logs if "looks collapsed" in line]
    rebuilt = jepa_from_checkpoint(load_checkpoint(tmp_path))          # shared again after loading
    assert rebuilt.target_encoder is rebuilt.context_encoder and rebuilt.sigreg_on == sigreg_on


def test_sigreg_resumes_exactly(tmp_path, tiny_data):
    config = TrainConfig(steps=8, **TINY)
    straight = train(config, tmp_path / "straight", dataset=tiny_data, progress=False, log=lambda *a: None)
    trainer = Trainer(config, tmp_path / "halves", dataset=tiny_data, progress=False, log=lambda *a: None)
    trainer.run(until_step=4)
    resumed = train(config, tmp_path / "halves", dataset=tiny_data, progress=False, log=lambda *a: None)
    assert [r["sigreg_loss"] for r in resumed.history] == [r["sigreg_loss"] for r in straight.history]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_bad_sigreg_settings_are_one_line_errors():
    with pytest.raises(ValueError, match=r"sigreg_weight must be in \(0, 1\), got 1.5"):
        TrainConfig(sigreg_weight=1.5)
    with pytest.raises(ValueError, match="unknown sigreg_on 'patches'; valid: pooled, tokens"):
        TrainConfig(sigreg_on="patches")
    with pytest.raises(ValueError, match="target_mode 'sigreg' regularises the embedding objective"):
        TrainConfig(target_mode="sigreg", objective="pixels")
