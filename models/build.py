"""``build_model``: a timm model by name, with the details the recipes depend on.

- ViT (big_vision's GSAM recipe): global-average pooling with the encoder LayerNorm *before* the
  pool (timm ``global_pool='avg', class_token=False, fc_norm=False``), no class token, no pre-logits.
- ViT and Mixer weights are initialised as big_vision's flax models (``vit_init``, ``mixer_init``),
  not with timm's defaults; ResNets keep timm's initialisation (big_vision has no GSAM ResNet recipe).
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
from timm.layers import get_act_layer, lecun_normal_
from timm.models.mlp_mixer import MlpMixer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

CUSTOM = {
    "mixer_s8_224": lambda **kw: MlpMixer(patch_size=8, num_blocks=8, embed_dim=512, **kw),
    "mlp_mixer": lambda **kw: MlpMixer(**kw),  # any Mixer shape, from ``kwargs`` (the demo's tiny one)
}


def _create(name: str, kwargs: dict) -> nn.Module:
    if isinstance(kwargs.get("act_layer"), str):  # timm's ViT resolves a name, its MlpMixer only takes a class
        try:
            kwargs = {**kwargs, "act_layer": get_act_layer(kwargs["act_layer"])}
        except KeyError:
            raise ValueError(f"model.kwargs.act_layer: unknown activation {kwargs['act_layer']!r}") from None
    if name in CUSTOM:
        return CUSTOM[name](**kwargs)
    if name not in timm.list_models():
        raise ValueError(f"model.name: unknown model {name!r} (not in timm, nor one of {sorted(CUSTOM)})")
    return timm.create_model(name, pretrained=False, **kwargs)


def _lecun_normal(layer: nn.Module) -> None:
    """flax's default for ``nn.Dense`` and ``nn.Conv``: kernel truncated normal with variance 1/fan_in, bias zero."""
    lecun_normal_(layer.weight)
    _zero_bias(layer)


def _zero_bias(layer: nn.Module) -> None:
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


@torch.no_grad()
def vit_init(model: VisionTransformer) -> None:
    """big_vision ``models/vit.py`` (the head is left to ``build_model``). timm's defaults differ: every
    kernel and pos_embed trunc-normal std 0.02, the patch conv PyTorch's default, MLP biases zero."""
    width = model.embed_dim
    nn.init.normal_(model.pos_embed, std=width ** -0.5)  # get_posemb("learn"): normal(1/sqrt(width))
    _lecun_normal(model.patch_embed.proj)  # "embedding": an nn.Conv with flax's default init
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        # flax inits query, key and value as three width x width kernels: xavier over each one's own fans,
        # not over timm's fused (3 width) x width qkv matrix (whose rows are q, then k, then v)
        for kernel in attn.qkv.weight.chunk(3, dim=0):
            nn.init.xavier_uniform_(kernel)
        nn.init.xavier_uniform_(attn.proj.weight)
        _zero_bias(attn.qkv)
        _zero_bias(attn.proj)
        for fc in (mlp.fc1, mlp.fc2):  # MlpBlock: xavier_uniform kernels, normal(1e-6) biases
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)


@torch.no_grad()
def mixer_init(model: MlpMixer) -> None:
    """big_vision ``models/mlp_mixer.py`` sets no initialisers: the stem conv and every MLP kernel get flax's
    default lecun_normal, every bias zero (the head is left to ``build_model``). timm's default differs:
    xavier_uniform MLP kernels and normal(1e-6) MLP biases."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module is not model.head:
            _lecun_normal(module)


def _init_head(model: nn.Module, name: str, bias: float) -> None:
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise ValueError(f"model.head_bias_init: {name} has no linear head ({type(head).__name__})")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(float(bias))


def build_model(cfg: Mapping, num_classes: int) -> nn.Module:
    """cfg: ``name`` (timm name), ``kwargs`` (passed to timm), ``head_bias_init`` (None or a float:
    zero head weight and this bias; None keeps timm's head)."""
    model = _create(cfg["name"], {"num_classes": num_classes, **dict(cfg.get("kwargs") or {})})
    if isinstance(model, VisionTransformer):
        vit_init(model)
    elif isinstance(model, MlpMixer):
        mixer_init(model)
    if cfg.get("head_bias_init") is not None:
        _init_head(model, cfg["name"], cfg["head_bias_init"])
    return model


def model_data_config(model: nn.Module) -> dict:
    """Normalisation and eval crop of the model's timm config (ResNet: ImageNet mean/std; ViT and
    Mixer: mean = std = 0.5, i.e. inputs in [-1, 1] as in big_vision)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {"mean": tuple(cfg.get("mean", (0.5, 0.5, 0.5))), "std": tuple(cfg.get("std", (0.5, 0.5, 0.5)))}
