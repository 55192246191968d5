import pytest
import torch

from jepa_lite.core.cnn import CNNConfig, ConvEncoder, input_mask
from jepa_lite.core.models import Predictor, PredictorConfig, gather_tokens
from jepa_lite.core.objective import JEPA
from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine.build import build_encoder, configs_for
from jepa_lite.engine.checkpoint import jepa_from_checkpoint, load_checkpoint
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer, train
from jepa_lite.evaluation.probes import extract_features


def cnn(**overrides) -> ConvEncoder:
    torch.manual_seed(0)
    return ConvEncoder(CNNConfig(**{**dict(image_size=16, patch_size=4, embed_dim=32, width=8), **overrides}))


def test_config_errors_name_the_values():
    with pytest.raises(ValueError, match=r"30 is not divisible by patch_size 4"):
        CNNConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        CNNConfig(embed_dim=30)
    assert CNNConfig(embed_dim=30, pos_embed=False).embed_dim == 30     # no positions: any width
    assert CNNConfig(patch_size=4).strides == [2, 2]
    assert CNNConfig(image_size=24, patch_size=6).strides == [2, 3]
    assert CNNConfig(patch_size=1).strides == []


@pytest.mark.parametrize("image_size, patch_size", [(16, 4), (24, 6), (16, 2), (8, 1)])
def test_contract_shapes(image_size, patch_size):
    enc = cnn(image_size=image_size, patch_size=patch_size).eval()
    rows = image_size // patch_size
    assert enc.embed_dim == 32 and enc.grid_size == (rows, rows)
    x = torch.randn(3, 3, image_size, image_size)
    assert enc(x).shape == (3, rows * rows, 32)
    idx = torch.tensor([[0, 1, 2], [2, 1, 0], [rows * rows - 1, 0, 1]])
    assert enc(x, idx).shape == (3, 3, 32)


def test_tokens_are_row_major_grid_cells():
    # token n must describe grid cell (n // cols, n % cols): change the pixels of cell (1, 2) only
    enc = cnn(mask_input=False).eval()
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[..., 4:8, 8:12] += 3.0
    changed = (enc(x) - enc(y)).abs().amax(-1)[0]             # [N]
    assert changed.argmax().item() == 1 * 4 + 2


def test_gather_equivalence():
    x = torch.randn(2, 3, 16, 16)
    idx = torch.tensor([[0, 5, 6, 10], [3, 2, 15, 9]])
    plain = cnn(mask_input=False).eval()
    # without input masking, asking for tokens = computing all and gathering
    assert torch.allclose(plain(x, idx), gather_tokens(plain(x), idx), atol=1e-6)
    # with it (the default), the same as gathering from the full pass over the zeroed image
    masked = cnn().eval()
    zeroed = x * input_mask(idx, masked.grid_size, (16, 16))
    assert torch.allclose(masked(x, idx), gather_tokens(masked(zeroed), idx), atol=1e-6)
    # all tokens asked: nothing is zeroed, equal to the full pass
    all_idx = torch.arange(16).expand(2, 16)
    assert torch.allclose(masked(x, all_idx), masked(x), atol=1e-6)


def test_input_mask_covers_exactly_the_given_patches():
    mask = input_mask(torch.tensor([[0, 5]]), (4, 4), (16, 16))[0, 0]
    assert mask.sum().item() == 2 * 16
    assert mask[0:4, 0:4].all() and mask[4:8, 4:8].all() and not mask[0:4, 4:8].any()


def test_masked_pixels_do_not_reach_the_context_tokens():
    enc = cnn().eval()
    x = torch.randn(2, 3, 16, 16)
    idx = torch.tensor([[0, 1, 4, 5], [10, 11, 14, 15]])
    keep = input_mask(idx, enc.grid_size, (16, 16))
    # perturbation: new content in every hidden patch changes nothing
    y = x + (1 - keep) * 5 * torch.randn_like(x)
    assert torch.equal(enc(x, idx), enc(y, idx))
    # gradient: the context tokens have zero gradient w.r.t. every hidden pixel
    x.requires_grad_(True)
    enc(x, idx).square().sum().backward()
    assert (x.grad * (1 - keep)).abs().max() == 0
    assert (x.grad * keep).abs().max() > 0
    # why the zeroing exists: without it, the receptive fields carry the hidden pixels in
    leaky = cnn(mask_input=False).eval()
    assert not torch.allclose(leaky(x.detach(), idx), leaky(y, idx))


def test_positions_are_added_and_optional():
    x = torch.randn(2, 3, 16, 16)
    plain = cnn(pos_embed=False).eval()
    with_pos = cnn().eval()                                    # same seed: same weights
    assert not hasattr(plain, "pos_embed") and with_pos.pos_embed.shape == (16, 32)
    expected = with_pos.norm(with_pos.feature_map(x).flatten(2).transpose(1, 2) + with_pos.pos_embed)
    assert torch.allclose(with_pos(x), expected, atol=1e-6)
    assert not torch.allclose(plain(x), with_pos(x))


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="16x16"):
        cnn()(torch.randn(1, 3, 20, 20))


def test_probes_read_it_with_one_layer():
    enc = cnn()
    images = make_shapes(8, image_size=16).images
    assert extract_features(enc, images).shape == (8, 32)
    with pytest.raises(ValueError, match="layer_outputs"):
        extract_features(enc, images, layers=2)


def test_a_jepa_with_a_cnn_learns_a_fixed_batch():
    torch.manual_seed(0)
    enc = cnn()
    pred = Predictor(PredictorConfig(embed_dim=16, depth=1, num_heads=2), enc.embed_dim, enc.grid_size)
    model = JEPA(enc, pred, loss="l2", target_norm="layer")    # the plumbing, on the paper's targets
    x = torch.randn(4, 3, 16, 16)
    ctx = torch.tensor([[0, 1, 2, 3, 4, 5]] * 4)
    tgt = torch.tensor([[[10, 11], [14, 15]]] * 4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(x, ctx, tgt)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_target(0.99)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


TINY = dict(model="micro", batch_size=16, log_every=1, device="cpu", image_size=16, patch_size=2,
            warmup_steps=2, checkpoint_every_minutes=100.0, encoder="cnn")


def test_the_engine_trains_a_cnn_and_the_checkpoint_rebuilds_it(tmp_path):
    data = make_shapes(64, seed=0, image_size=16)
    config = TrainConfig(steps=12, lr=3e-3, **TINY)
    encoder_config, _, _ = configs_for(config, 16)
    assert isinstance(encoder_config, CNNConfig) and encoder_config.embed_dim == 32     # micro's width
    assert isinstance(build_encoder(encoder_config), ConvEncoder)
    result = train(config, tmp_path, dataset=data, progress=False, log=lambda *a: None)
    losses = [m["loss"] for m in result.history]
    assert sum(losses[-3:]) < sum(losses[:3])
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["train_config"]["encoder"] == "cnn"
    model = jepa_from_checkpoint(checkpoint)
    assert isinstance(model.target_encoder, ConvEncoder)
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    # a ViT run must not resume from it
    with pytest.raises(ValueError, match="encoder='cnn'"):
        Trainer(TrainConfig(steps=12, **{**TINY, "encoder": "vit"}), tmp_path, dataset=data, progress=False)


def test_cnn_rejects_drop_path_and_unknown_encoders():
    with pytest.raises(ValueError, match="drop_path"):
        TrainConfig(steps=1, encoder="cnn", drop_path=0.1)
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet'; valid: vit, cnn"):
        TrainConfig(steps=1, encoder="resnet")
