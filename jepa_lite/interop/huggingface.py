"""Meta's I-JEPA encoders from Hugging Face transformers (IJepaModel: facebook/ijepa_vith14_1k, ...)
as jepa_lite VisionTransformers. transformers' conversion script took the reference checkpoints'
"encoder" (the context encoder), not the target encoder the paper evaluates; the layout and the
input normalisation are those of jepa_lite.interop.meta, which reads the reference checkpoints.

    convert_hf_ijepa(model or state_dict, config) -> VisionTransformer
    from_pretrained_hf("facebook/ijepa_vith14_1k") -> VisionTransformer   (needs transformers)
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn as nn

from jepa_lite.core.models import VisionTransformer, ViTConfig
from jepa_lite.errors import BadValue
from jepa_lite.interop.meta import _build, _check_keys, _mlp_ratio, strip_prefix

_HF_LEGACY_NAMES = [                       # transformers 4.x (ViT layout) -> 5.x
    (r"^encoder\.layer\.", "layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
_HF_IGNORED = ("embeddings.mask_token", "pooler.")      # not part of the encoder's forward pass
# IJepaConfig's defaults: a saved config.json leaves out the values equal to them
_HF_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    hidden_act="gelu", layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3,
                    qkv_bias=True)


def _hf_field(config, name: str):
    value = config.get(name, _HF_DEFAULTS[name]) if isinstance(config, Mapping) else getattr(config, name)
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise BadValue(f"non-square {name} {value} is not supported")
        value = value[0]
    return value


def _hf_config(config, num_layers: int) -> ViTConfig:
    act = _hf_field(config, "hidden_act")
    if act != "gelu":
        raise BadValue(f"hidden_act {act!r} is not supported (jepa_lite's MLP uses the exact 'gelu')")
    width = _hf_field(config, "hidden_size")
    return ViTConfig(image_size=_hf_field(config, "image_size"), patch_size=_hf_field(config, "patch_size"),
                     in_channels=_hf_field(config, "num_channels"), embed_dim=width, depth=num_layers,
                     num_heads=_hf_field(config, "num_attention_heads"),
                     mlp_ratio=_mlp_ratio(_hf_field(config, "intermediate_size"), width),
                     qkv_bias=bool(_hf_field(config, "qkv_bias")), norm_eps=float(_hf_field(config, "layer_norm_eps")),
                     pos_embed_order="col_row")


def convert_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config) -> tuple[ViTConfig, dict, torch.Tensor]:
    """An IJepaModel (or IJepaForImageClassification) state dict and its config (IJepaConfig or the
    dict of its config.json) -> (ViTConfig, VisionTransformer state dict, pos_embed [N, D])."""
    sd = {}
    for key, value in strip_prefix(state_dict, "ijepa.").items():
        for pattern, new in _HF_LEGACY_NAMES:
            key = re.sub(pattern, new, key)
        if not key.startswith(_HF_IGNORED) and not key.startswith("classifier."):
            sd[key] = value
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))}
    num_layers = _hf_field(config, "num_hidden_layers")
    cfg = _hf_config(config, num_layers)
    expected = ["embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.bias",
                "embeddings.position_embeddings", "layernorm.weight", "layernorm.bias"]
    for i in range(num_layers):
        b = f"layers.{i}."
        expected += [b + f"{name}.{kind}" for name in ("layernorm_before", "layernorm_after", "attention.o_proj",
                                                       "mlp.fc1", "mlp.fc2") for kind in ("weight", "bias")]
        expected += [b + f"attention.{p}_proj.weight" for p in "qkv"]
        expected += [b + f"attention.{p}_proj.bias" for p in "qkv"] if cfg.qkv_bias else []
    _check_keys(sd, expected, f"Hugging Face IJepaModel ({num_layers} layers; found layers {sorted(layers)})")

    out = {"patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(num_layers):
        h, b = f"layers.{i}.", f"blocks.{i}."
        # jepa_lite's fused qkv: rows [q; k; v], each split into heads the same way as HF's projections
        out[b + "attn.qkv.weight"] = torch.cat([sd[h + f"attention.{p}_proj.weight"] for p in "qkv"])
        if cfg.qkv_bias:
            out[b + "attn.qkv.bias"] = torch.cat([sd[h + f"attention.{p}_proj.bias"] for p in "qkv"])
        for src, dst in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"), ("attention.o_proj", "attn.proj"),
                         ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[b + dst + ".weight"] = sd[h + src + ".weight"]
            out[b + dst + ".bias"] = sd[h + src + ".bias"]
    return cfg, out, sd["embeddings.position_embeddings"].reshape(-1, cfg.embed_dim)


def convert_hf_ijepa(model_or_state_dict, config=None, input_normalization: str = "imagenet") -> VisionTransformer:
    """A transformers IJepaModel (config taken from it) or its state dict plus config (IJepaConfig or
    config.json as a dict) -> a jepa_lite VisionTransformer in eval mode whose output equals
    model(pixel_values).last_hidden_state. Does not import transformers."""
    if isinstance(model_or_state_dict, nn.Module):
        config = model_or_state_dict.config if config is None else config
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = model_or_state_dict
    if config is None:
        raise BadValue("a state dict needs its config (an IJepaConfig or the dict of config.json)")
    vit_config, params, pos_embed = convert_hf_state_dict(state_dict, config)
    return _build(vit_config, params, pos_embed, input_normalization, "model's")


def from_pretrained_hf(name: str = "facebook/ijepa_vith14_1k", input_normalization: str = "imagenet",
                       **from_pretrained_kwargs) -> VisionTransformer:
    """Download a released I-JEPA encoder from the Hugging Face Hub (facebook/ijepa_vith14_1k,
    facebook/ijepa_vith14_22k, facebook/ijepa_vith16_1k at 448 px, facebook/ijepa_vitg16_22k) and
    convert it. These hold the checkpoints' context encoder (see the module docstring).
    input_normalization="jepa_lite" makes it take jepa_lite.data.datasets.normalize's output (extract_features).
    Needs `pip install transformers` (an optional extra of jepa_lite)."""
    try:
        from transformers import IJepaModel
    except ImportError as error:
        raise ImportError("from_pretrained_hf needs Hugging Face transformers: pip install transformers "
                          "(or load a reference checkpoint with load_reference_checkpoint)") from error
    model = IJepaModel.from_pretrained(name, **from_pretrained_kwargs)
    return convert_hf_ijepa(model, input_normalization=input_normalization)
