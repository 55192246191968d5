"""jepa_lite.evaluation.decoder: shapes, it learns a toy mapping, bad input is one BadValue line."""
from __future__ import annotations

import pytest
import torch

from jepa_lite.errors import BadValue
from jepa_lite.evaluation.decoder import PatchDecoder, decode, train_decoder


def test_shapes_and_positions_matter():
    torch.manual_seed(0)
    decoder = PatchDecoder(embed_dim=16, grid_size=(4, 4), patch_dim=12, hidden=32)
    tokens = torch.randn(3, 5, 16)
    out = decoder(tokens, torch.randint(16, (3, 5)))
    assert out.shape == (3, 5, 12)
    same_token = tokens[:, :1].expand(3, 2, 16)
    two_places = decoder(same_token, torch.tensor([[0, 15]] * 3))
    assert not torch.allclose(two_places[:, 0], two_places[:, 1])          # the position enters the pixels
    assert decode(decoder, torch.randn(2, 16, 16)).shape == (2, 16, 12)     # every position, in order


def test_it_learns_a_toy_mapping():
    # pixels = a fixed linear map of the token plus a per-position offset: the decoder must find both
    g = torch.Generator().manual_seed(0)
    tokens = torch.nn.functional.layer_norm(torch.randn(256, 4, 8, generator=g), (8,))   # as normalised targets are
    weight, offset = torch.randn(8, 6, generator=g), torch.randn(4, 6, generator=g)
    patches = tokens @ weight + offset
    torch.manual_seed(0)
    decoder = PatchDecoder(8, (2, 2), 6, hidden=64)
    before = (decode(decoder, tokens) - patches).pow(2).mean().item()
    losses = train_decoder(decoder, tokens, patches, steps=400, batch_size=32, lr=3e-3)
    after = (decode(decoder, tokens) - patches).pow(2).mean().item()
    assert len(losses) == 400 and not decoder.training
    assert after < 0.1 * before, (before, after)


def test_deterministic_for_a_seed():
    tokens, patches = torch.randn(20, 4, 8), torch.randn(20, 4, 6)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        decoder = PatchDecoder(8, (2, 2), 6, hidden=16)
        runs.append(train_decoder(decoder, tokens, patches, steps=5, batch_size=4, seed=3))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("call, words", [
    (lambda d: d(torch.randn(2, 3, 16), torch.tensor([[0, 1, 16]] * 2)), ["16", "[0, 15]"]),
    (lambda d: d(torch.randn(2, 3, 7), torch.zeros(2, 3, dtype=torch.long)), ["[B, K, 16]", "(2, 3, 7)"]),
    (lambda d: d(torch.randn(2, 3, 16), torch.zeros(2, 4, dtype=torch.long)), ["(2, 3)", "(2, 4)"]),
    (lambda d: train_decoder(d, torch.randn(4, 16, 16), torch.randn(4, 16, 12), steps=0), ["steps=0", ">= 1"]),
    (lambda d: train_decoder(d, torch.randn(4, 9, 16), torch.randn(4, 9, 12)), ["[M, 16, 16]", "(4, 9, 16)"]),
    (lambda d: train_decoder(d, torch.randn(4, 16, 16), torch.randn(4, 16, 5)), ["[4, 16, 12]", "(4, 16, 5)"]),
    (lambda d: PatchDecoder(16, (4, 4), 0), ["patch_dim", "0"]),
])
def test_bad_input_is_one_line_naming_the_value_and_range(call, words):
    decoder = PatchDecoder(16, (4, 4), 12, hidden=8)
    with pytest.raises(BadValue) as error:
        call(decoder)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
