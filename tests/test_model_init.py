"""Initialisation and weight-decay mask of every Table 1 model, built at full size from its config.

ViT and Mixer against big_vision's flax initialisers (``models/vit.py``, ``models/mlp_mixer.py``), ResNets
against timm's. Every parameter tensor gets a target (an unexpected one fails the test); a tensor's sample
std must be within a few standard errors of its target, which timm's defaults (std 0.02 kernels and
pos_embed, a fused-qkv xavier, PyTorch's patch conv, xavier Mixer kernels) all miss.
"""
import math

import pytest
import torch

from gsam import models
from gsam.optim.factory import param_groups
from support import MODELS

VIT = {"vit_s32": (384, 32), "vit_s16": (384, 16), "vit_b32": (768, 32), "vit_b16": (768, 16)}  # width, patch
MIXER = {"mixer_s32": (512, 32, 8), "mixer_s16": (512, 16, 8), "mixer_s8": (512, 8, 8), "mixer_b32": (768, 32, 12),
         "mixer_b16": (768, 16, 12)}  # width, patch, blocks; token / channel MLP widths are width/2 and 4 width
RESNET_BLOCKS = {"resnet50": 16, "resnet101": 33, "resnet152": 50}  # bottleneck blocks
# decayed tensors, counted by hand: stem + 4 kernels per block + head (ViT, Mixer); stem conv + 3 convs per
# bottleneck + 4 downsample convs + fc (ResNet)
KERNELS = {**{m: 1 + 4 * 12 + 1 for m in VIT}, **{m: 1 + 4 * b + 1 for m, (_, _, b) in MIXER.items()},
           **{m: 1 + 3 * b + 4 + 1 for m, b in RESNET_BLOCKS.items()}}
TRUNC = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]; flax divides it out


def normal(std):
    return ("normal", std)


def lecun(fan_in):
    """flax lecun_normal: truncated to 2 pre-scaling stds, std 1/sqrt(fan_in) after truncation."""
    return ("trunc", fan_in ** -0.5)


def xavier(fan_in, fan_out):
    return ("uniform", math.sqrt(2.0 / (fan_in + fan_out)))


def const(value):
    return ("const", value)


def check(name, t, target):
    kind, value = target
    t = t.detach().double().flatten()
    if kind == "const":
        assert torch.all(t == value), f"{name}: expected all {value}, got mean {t.mean():.3g} std {t.std():.3g}"
        return
    n, std = t.numel(), t.std().item()
    tol = max(0.02, 5 / math.sqrt(2 * n))  # 5 standard errors of a sample std, at least 2%
    assert abs(std / value - 1) < tol, f"{name}: std {std:.5f}, target {value:.5f} (tolerance {tol:.1%})"
    assert abs(t.mean().item()) < 5 * value / math.sqrt(n), f"{name}: mean {t.mean():.3g}"
    peak = t.abs().max().item()
    if kind == "uniform":  # fills [-sqrt(3) std, sqrt(3) std]; a normal of the same std would overshoot
        assert 0.98 * math.sqrt(3) * value < peak <= math.sqrt(3) * value * (1 + 1e-6), f"{name}: max |w| {peak}"
    if kind == "trunc":
        assert peak <= 2 * value / TRUNC * (1 + 1e-6), f"{name}: max |w| {peak} beyond the truncation"


def vit_targets(model, width, patch):
    t = {"pos_embed": normal(width ** -0.5), "patch_embed.proj.weight": lecun(3 * patch * patch),
         "patch_embed.proj.bias": const(0.0), "norm.weight": const(1.0), "norm.bias": const(0.0),
         "head.weight": const(0.0), "head.bias": const(-10.0)}
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        t.update({b + "attn.proj.weight": xavier(width, width), b + "attn.qkv.bias": const(0.0),
                  b + "attn.proj.bias": const(0.0), b + "mlp.fc1.weight": xavier(width, 4 * width),
                  b + "mlp.fc2.weight": xavier(4 * width, width), b + "mlp.fc1.bias": normal(1e-6),
                  b + "mlp.fc2.bias": normal(1e-6)})
        t.update({b + f"norm{k}.{p}": const(v) for k in (1, 2) for p, v in (("weight", 1.0), ("bias", 0.0))})
        for part in "qkv":  # each of q, k, v over its own width x width fans
            t[b + f"attn.qkv.weight[{part}]"] = xavier(width, width)
    return t


def mixer_targets(model, width, patch):
    tokens = (224 // patch) ** 2
    t = {"stem.proj.weight": lecun(3 * patch * patch), "stem.proj.bias": const(0.0), "norm.weight": const(1.0),
         "norm.bias": const(0.0), "head.weight": const(0.0), "head.bias": const(-10.0)}
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        fans = {"mlp_tokens.fc1": tokens, "mlp_tokens.fc2": width // 2, "mlp_channels.fc1": width,
                "mlp_channels.fc2": 4 * width}
        t.update({b + f"{layer}.weight": lecun(fan) for layer, fan in fans.items()})
        t.update({b + f"{layer}.bias": const(0.0) for layer in fans})
        t.update({b + f"norm{k}.{p}": const(v) for k in (1, 2) for p, v in (("weight", 1.0), ("bias", 0.0))})
    return t


def resnet_targets(model):
    """timm: kaiming-normal convs (fan_out, ReLU gain), BN 1/0 with the last BN of each block zeroed,
    PyTorch's default Linear (uniform in +-1/sqrt(fan_in))."""
    t = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            t[name + ".weight"] = normal(math.sqrt(2.0 / (m.out_channels * m.kernel_size[0] * m.kernel_size[1])))
        elif isinstance(m, torch.nn.BatchNorm2d):
            t[name + ".weight"] = const(0.0 if name.endswith("bn3") else 1.0)
            t[name + ".bias"] = const(0.0)
    fan_in = model.fc.in_features
    t["fc.weight"] = ("uniform", 1 / math.sqrt(3 * fan_in))
    t["fc.bias"] = ("uniform", 1 / math.sqrt(3 * fan_in))
    return t


def tensors(model):
    """Named parameters, the fused qkv split into q, k and v."""
    out = {}
    for name, p in model.named_parameters():
        if name.endswith("attn.qkv.weight"):
            out.update({f"{name}[{part}]": c for part, c in zip("qkv", p.chunk(3, dim=0))})
        else:
            out[name] = p
    return out


# full-size models take 1-4 s each to build (the Base ones, 86M parameters and more, the most): the fast tier checks
# the smallest of each family, the slow tier the rest
FAST = {"resnet50", "vit_s32", "mixer_s32"}


@pytest.mark.parametrize("name", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in MODELS])
def test_init_statistics_and_weight_decay_mask(name, compose):
    torch.manual_seed(0)
    cfg = compose(f"+experiment={name}_gsam")
    model = models.build_model(cfg.model, num_classes=1000)
    if name in VIT:
        targets = vit_targets(model, *VIT[name])
    elif name in MIXER:
        targets = mixer_targets(model, *MIXER[name][:2])
    else:
        targets = resnet_targets(model)
    found = tensors(model)
    assert sorted(found) == sorted(targets), set(found) ^ set(targets)
    for key, t in found.items():
        check(key, t, targets[key])

    decay_group, rest = param_groups(model, cfg.optimizer.weight_decay, cfg.optimizer.decay_norms_and_biases)
    assert decay_group["weight_decay"] == cfg.optimizer.weight_decay > 0 and rest["weight_decay"] == 0.0
    decayed = {n for n, p in model.named_parameters() if any(p is q for q in decay_group["params"])}
    # big_vision's ".*/kernel$": the weight matrices and conv kernels; no bias, norm, pos_embed
    assert decayed == {n for n, p in model.named_parameters() if n.endswith(".weight") and p.ndim >= 2}
    assert len(decayed) == KERNELS[name]
    assert "pos_embed" not in decayed
