"""The optimizers on real timm models at tiny sizes (BN ResNet in channels_last, ViT, Mixer)."""
import pytest
import timm
import torch
from timm.models.mlp_mixer import MlpMixer

import gsam
from support.nets import Recorder

# timm's own classes at the smallest sizes that keep each family's structure (the BN ResNet's stem and stages, the
# ViT's blocks with global average pooling, the Mixer's token and channel MLPs): what the optimizers see is the
# same parameter and buffer layout, in seconds rather than the minutes of the full-width nets
MODELS = {
    "resnet": lambda: timm.create_model("resnet10t", pretrained=False, num_classes=5),
    "vit": lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                     num_classes=5, global_pool="avg", fc_norm=False, depth=2),
    # mixer_s16_224's registration fixes its 8 blocks of width 512: the class itself, 2 blocks of 128
    "mixer": lambda: MlpMixer(num_classes=5, img_size=32, patch_size=16, num_blocks=2, embed_dim=128),
}

@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.slow
@pytest.mark.parametrize("cls,kw", [(gsam.GSAM, {"alpha": 0.4}), (gsam.XSAM, {"search_every": 2, "rho_probe": 0.1})],
                         ids=["gsam", "xsam"])
def test_steps_on_timm_models(family, cls, kw):
    torch.manual_seed(0)
    model = MODELS[family]()
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 5, (8,))
    if family == "resnet":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    base = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    opt = cls(model.parameters(), base, rho=0.05, model=model, max_grad_norm=1.0, **kw)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert (len(bn) > 0) == (family == "resnet")

    closure = Recorder(model, x, y, keep_weights=False)
    w0 = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(5):
        stats = opt.step(closure)
        assert not stats.skipped
        assert stats.perturbed_loss.item() >= stats.loss.item() - 1e-3  # ascent raised the loss
        losses.append(stats.loss.item())
    assert losses[-1] < losses[0]  # it trains
    assert all(not torch.equal(a, b) for a, b in zip(w0, model.parameters()))
    for m in bn:
        assert m.num_batches_tracked.item() == 5  # one BN update per step, from the clean pass
    if family == "resnet":
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert stem.weight.is_contiguous(memory_format=torch.channels_last)


def test_dot_products_are_layout_independent():
    """channels_last weights with contiguous gradients (or the reverse) give the same <x, y>."""
    from gsam.optim.base import SharpnessAware

    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    y = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    expected = (x * y).sum()
    cl = torch.channels_last
    for a, b in [(x, y), (x.contiguous(memory_format=cl), y), (x, y.contiguous(memory_format=cl)),
                 (x.contiguous(memory_format=cl), y.contiguous(memory_format=cl))]:
        torch.testing.assert_close(SharpnessAware._dot([a], [b]), expected, rtol=1e-14, atol=0)
