"""``build_model``: a timm model by name, with the details the recipes depend on.

- ViT (big_vision's GSAM recipe): global-average pooling with the encoder LayerNorm *before* the
  pool (timm ``global_pool='avg', class_token=False, fc_norm=False``), no class token, no pre-logits.
- Head initialisation for the sigmoid cross-entropy recipes: zero weight, bias -10 (big_vision
  ``head_zeroinit`` and ``init_head_bias=-10``), so the initial sigmoid outputs are ~4.5e-5.
- Mixer-S/8 is not registered in timm: it is timm's ``MlpMixer`` with the S configuration
  (8 blocks, width 512, token/channel MLP ratios 0.5/4) and 8x8 patches (Tolstikhin et al., 2021).
No pretrained weights are ever downloaded.
"""
from __future__ import annotations

from collections.abc import Mapping

import timm
import torch
from timm.models.mlp_mixer import MlpMixer
from torch import nn

CUSTOM = {
    "mixer_s8_224": lambda **kw: MlpMixer(patch_size=8, num_blocks=8, embed_dim=512, **kw),
    "mlp_mixer": lambda **kw: MlpMixer(**kw),  # any Mixer shape, from ``kwargs`` (the demo's tiny one)
}


def _create(name: str, kwargs: dict) -> nn.Module:
    if name in CUSTOM:
        return CUSTOM[name](**kwargs)
    if name not in timm.list_models():
        raise ValueError(f"model.name: unknown model {name!r} (not in timm, nor one of {sorted(CUSTOM)})")
    return timm.create_model(name, pretrained=False, **kwargs)


def build_model(cfg: Mapping, num_classes: int) -> nn.Module:
    """cfg: ``name`` (timm name), ``kwargs`` (passed to timm), ``head_bias_init`` (None or a float:
    zero head weight and this bias)."""
    model = _create(cfg["name"], {"num_classes": num_classes, **dict(cfg.get("kwargs") or {})})
    bias = cfg.get("head_bias_init")
    if bias is not None:
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ValueError(f"model.head_bias_init: {cfg['name']} has no linear head ({type(head).__name__})")
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(float(bias))
    return model


def model_data_config(model: nn.Module) -> dict:
    """Normalisation and eval crop of the model's timm config (ResNet: ImageNet mean/std; ViT and
    Mixer: mean = std = 0.5, i.e. inputs in [-1, 1] as in big_vision)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {"mean": tuple(cfg.get("mean", (0.5, 0.5, 0.5))), "std": tuple(cfg.get("std", (0.5, 0.5, 0.5)))}
