"""Released ViT and MLP-Mixer checkpoints (.npz) through evaluate.py's path (gsam/state/released.py,
gsam/run/score.py), without the files: tiny models written in the released key layouts.

The layouts (gsam/state/released.py's docstring has the sources): the SAM ViTs as vision_transformer writes them
and timm reads them for ``vit_base_patch32_224.sam_in1k`` (pre-Linen names, ``cls``, posemb in
``Transformer/posembed_input``); the GSAM ViTs as vision_transformer's ``ViT-*-gap-norep`` configs read them (no
``cls``, GAP after ``encoder_norm``); the Mixers as ``vit_jax/models_mixer.py`` names them. The ViT logits are
checked against timm's own .npz reader on the same file, the Mixer's against a forward pass written from
``models_mixer.py`` (flax semantics: kernels (in, out), NHWC patches, tanh GELU, LayerNorm eps 1e-6).
"""
import copy
import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.mlp_mixer import MlpMixer
from timm.models.vision_transformer import _load_weights

from gsam.evaluation.table1 import markdown, rows
from gsam.run.score import check_released_model, released_model
from gsam.state import released
from gsam.state.checkpoint import CheckpointError, CheckpointManager, load
from support import load_script
from support.inproc import run_main

VIT_KW = dict(img_size=32, patch_size=8, embed_dim=96, depth=3, num_heads=3)  # configs/model/demo_vit.yaml
PRE_LINEN = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
             "LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3"}


def _np(t):
    return t.detach().double().numpy().astype(np.float32)


def _randomised(model, seed):
    """Every parameter random (a zero bias or a unit LayerNorm would hide a wrong mapping)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def tiny_vit(token: bool, seed=0):
    kw = released.VIT_TOKEN if token else released.VIT_GAP
    return _randomised(timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT_KW, **kw), seed)


def vit_npz(model) -> dict:
    """``model`` in vision_transformer's layout with pre-Linen names (the SAM files; timm's non-big_vision
    branch reads exactly these keys)."""
    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {"embedding/kernel": _np(model.patch_embed.proj.weight.permute(2, 3, 1, 0)),
         "embedding/bias": _np(model.patch_embed.proj.bias),
         "Transformer/posembed_input/pos_embedding": _np(model.pos_embed),
         "Transformer/encoder_norm/scale": _np(model.norm.weight),
         "Transformer/encoder_norm/bias": _np(model.norm.bias),
         "head/kernel": _np(model.head.weight.T), "head/bias": _np(model.head.bias)}
    if model.cls_token is not None:
        w["cls"] = _np(model.cls_token)
    for i, b in enumerate(model.blocks):
        key = f"Transformer/encoderblock_{i}"
        mha = f"{key}/{PRE_LINEN['MultiHeadDotProductAttention_0']}"
        for name, wt, bias in zip(("query", "key", "value"), b.attn.qkv.weight.chunk(3), b.attn.qkv.bias.chunk(3)):
            w[f"{mha}/{name}/kernel"] = _np(wt.T.reshape(width, heads, width // heads))
            w[f"{mha}/{name}/bias"] = _np(bias.reshape(heads, width // heads))
        w[f"{mha}/out/kernel"] = _np(b.attn.proj.weight.T.reshape(heads, width // heads, width))
        w[f"{mha}/out/bias"] = _np(b.attn.proj.bias)
        for ln, norm in (("LayerNorm_0", b.norm1), ("LayerNorm_1", b.norm2)):
            w[f"{key}/{PRE_LINEN[ln]}/scale"], w[f"{key}/{PRE_LINEN[ln]}/bias"] = _np(norm.weight), _np(norm.bias)
        for d, fc in (("Dense_0", b.mlp.fc1), ("Dense_1", b.mlp.fc2)):
            w[f"{key}/MlpBlock_3/{d}/kernel"], w[f"{key}/MlpBlock_3/{d}/bias"] = _np(fc.weight.T), _np(fc.bias)
    return w


def linen_names(w: dict) -> dict:
    """vit_jax/models_vit.py's Linen names (posemb still in Transformer/posembed_input)."""
    back = {v: k for k, v in PRE_LINEN.items()}
    return {"/".join(back.get(p, p) for p in k.split("/")): v for k, v in w.items()}


def big_vision(w: dict) -> dict:
    """big_vision's models/vit.py names: Linen, pos_embedding at the top, and (since 2022) added before prepending
    cls, so without the class token's row, which is cls's own (``fix_old_checkpoints`` adds it to cls)."""
    w = linen_names(w)
    pe = w.pop("Transformer/posembed_input/pos_embedding")
    if "cls" not in w:
        return {**w, "pos_embedding": pe}
    return {**w, "cls": w["cls"] + pe[:, :1], "pos_embedding": pe[:, 1:]}


def scanned(w: dict) -> dict:
    """big_vision's scan layout: one Transformer/encoderblock, tensors stacked over the depth."""
    w = big_vision(w)
    blocks = sorted({k.split("/")[1] for k in w if k.startswith("Transformer/encoderblock_")})
    out = {k: v for k, v in w.items() if not k.startswith("Transformer/encoderblock_")}
    for rest in {k.split("/", 2)[2] for k in w if k.startswith("Transformer/encoderblock_0/")}:
        out[f"Transformer/encoderblock/{rest}"] = np.stack([w[f"Transformer/{b}/{rest}"] for b in blocks])
    return out


def save(path, w: dict):
    np.savez(path, **w)
    return path


def evaluate_path_model(cfg, path):
    """What evaluate.py does with eval.checkpoint=<file>.npz before measuring (gsam/run/score.py ``_score``)."""
    npz = released.read(path)
    released_model(cfg, path, npz, {}, notice=lambda *_: None)
    model = check_released_model(cfg, path, npz)
    released.load_into(model, npz)
    return model.eval()


def timm_reads(path, token: bool):
    """timm's own .npz reader (``vit_base_patch32_224.sam_in1k``'s) on the same file."""
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT_KW,
                              **(released.VIT_TOKEN if token else released.VIT_GAP))
    _load_weights(model, str(path))
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("token", [True, False], ids=["sam_cls_token", "gsam_gap"])
def test_a_released_vit_gives_timms_logits(tmp_path, row, images, token):
    source = tiny_vit(token)
    path = save(tmp_path / "ViT.npz", vit_npz(source))
    ours = evaluate_path_model(row(), path)
    with torch.no_grad():
        reference = timm_reads(path, token)(images)
        assert torch.allclose(reference, source(images), atol=1e-5)  # the file is the layout timm reads
        assert torch.allclose(ours(images), reference, atol=1e-5)
    assert (ours.cls_token is not None) == token and ours.global_pool == ("token" if token else "avg")


@pytest.fixture(scope="module")
def row(tmp_path_factory, demo_root, demo_config):
    """demo_gsam's config (a copy per use: the released model's kwargs are set in it)."""
    cfg = demo_config(tmp_path_factory.mktemp("out"), demo_root)
    return lambda: copy.deepcopy(cfg)


def train_state(params: str, moments: str):
    """A whole train state: the parameters under ``params``, Adam's moments beside them (``gs://vit_models/sam/
    ViT-S_16.npz`` is 3.0x the size of ViT-S/16's parameters: parameters and two moments, under ``opt/target/``)."""
    return lambda w: {**{f"{params}{k}": v for k, v in w.items()},
                      **{f"{moments}{k}/{m}": v for k, v in w.items() for m in ("grad_ema", "grad_sq_ema")}}


SAM_S16_STATE = train_state("opt/target/", "opt/state/param_states/")


LAYOUTS = {"linen": (linen_names, False), "big_vision_cls": (big_vision, True), "big_vision_gap": (big_vision, False),
           "big_vision_scan": (scanned, False), "opt_target": (SAM_S16_STATE, True),
           "params": (train_state("params/", "opt/"), False)}


@pytest.mark.parametrize("layout,token", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_vit_layout_loads_the_same_model(tmp_path, row, images, layout, token):
    base = vit_npz(tiny_vit(token))
    with torch.no_grad():
        want = timm_reads(save(tmp_path / "base.npz", base), token)(images)
        got = evaluate_path_model(row(), save(tmp_path / "v.npz", layout(base)))(images)
    assert torch.allclose(got, want, atol=1e-5)


def mixer_npz(model, pre_linen=False) -> dict:
    """``model`` in vit_jax/models_mixer.py's names (``pre_linen``: the block's second LayerNorm numbered as
    pre-Linen flax numbered a module's children, LayerNorm_2)."""
    ln1 = "LayerNorm_2" if pre_linen else "LayerNorm_1"
    w = {"stem/kernel": _np(model.stem.proj.weight.permute(2, 3, 1, 0)), "stem/bias": _np(model.stem.proj.bias),
         "pre_head_layer_norm/scale": _np(model.norm.weight), "pre_head_layer_norm/bias": _np(model.norm.bias),
         "head/kernel": _np(model.head.weight.T), "head/bias": _np(model.head.bias)}
    for i, b in enumerate(model.blocks):
        k = f"MixerBlock_{i}"
        w.update({f"{k}/LayerNorm_0/scale": _np(b.norm1.weight), f"{k}/LayerNorm_0/bias": _np(b.norm1.bias),
                  f"{k}/{ln1}/scale": _np(b.norm2.weight), f"{k}/{ln1}/bias": _np(b.norm2.bias)})
        for flax, mlp in (("token_mixing", b.mlp_tokens), ("channel_mixing", b.mlp_channels)):
            for d, fc in (("Dense_0", mlp.fc1), ("Dense_1", mlp.fc2)):
                w[f"{k}/{flax}/{d}/kernel"], w[f"{k}/{flax}/{d}/bias"] = _np(fc.weight.T), _np(fc.bias)
    return w


def models_mixer_forward(w: dict, images: torch.Tensor) -> torch.Tensor:
    """vit_jax/models_mixer.py's MlpMixer on the file's arrays: flax kernels (in, out), NHWC, nn.gelu (tanh)."""
    t = {k: torch.from_numpy(v).double() for k, v in w.items()}
    ln = lambda x, k: F.layer_norm(x, x.shape[-1:], t[f"{k}/scale"], t[f"{k}/bias"], eps=1e-6)  # noqa: E731
    dense = lambda x, k: x @ t[f"{k}/kernel"] + t[f"{k}/bias"]  # noqa: E731
    mlp = lambda x, k: dense(F.gelu(dense(x, f"{k}/Dense_0"), approximate="tanh"), f"{k}/Dense_1")  # noqa: E731
    p = t["stem/kernel"].shape[0]
    x = images.double().permute(0, 2, 3, 1)  # n h w c
    n, h, wd, c = x.shape
    x = x.reshape(n, h // p, p, wd // p, p, c)  # nn.Conv(stride=patch) on non-overlapping patches
    x = torch.einsum("nypxqc,pqcd->nyxd", x, t["stem/kernel"]).reshape(n, (h // p) * (wd // p), -1) + t["stem/bias"]
    blocks = sorted({int(k.split("/")[0].split("_")[1]) for k in w if k.startswith("MixerBlock_")})
    for i in blocks:
        k = f"MixerBlock_{i}"
        x = x + mlp(ln(x, f"{k}/LayerNorm_0").swapaxes(1, 2), f"{k}/token_mixing").swapaxes(1, 2)
        x = x + mlp(ln(x, f"{k}/LayerNorm_1"), f"{k}/channel_mixing")
    return dense(ln(x, "pre_head_layer_norm").mean(1), "head")


@pytest.mark.parametrize("pre_linen", [False, True], ids=["linen", "pre_linen"])
def test_a_released_mixer_gives_models_mixer_logits(tmp_path, demo_root, demo_config, images, pre_linen):
    cfg = demo_config(tmp_path / "out", demo_root, "model=demo_mixer")  # demo_mixer: the tiny models_mixer shape
    source = _randomised(MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=64),
                         seed=2)  # configs/model/demo_mixer.yaml
    w = mixer_npz(source)
    path = save(tmp_path / "Mixer.npz", mixer_npz(source, pre_linen))
    with torch.no_grad():
        ours = evaluate_path_model(cfg, path)(images)
    assert torch.allclose(ours.double(), models_mixer_forward(w, images), atol=1e-5)


@pytest.fixture(scope="module")
def gsam_vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("released")
    return save(folder / "ViT.npz", vit_npz(tiny_vit(False)))


def refused(demo_root, out, path, *overrides):
    r = run_main("evaluate.py", out, demo_root, f"eval.checkpoint={path}", *overrides)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-1500:]
    return lines[0]


def test_a_missing_or_misshaped_tensor_is_one_line_naming_it(tmp_path, demo_root, gsam_vit):
    w = dict(np.load(gsam_vit))
    short = {k: v for k, v in w.items() if k != "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"}
    line = refused(demo_root, tmp_path / "a", save(tmp_path / "short.npz", short))
    assert "no tensor Transformer/encoderblock_1/MlpBlock_0/Dense_0/bias (this model's has shape (384))" in line
    wrong = {**w, "embedding/kernel": np.zeros((16, 16, 3, 96), np.float32)}  # a /16 file for the /8 row
    line = refused(demo_root, tmp_path / "b", save(tmp_path / "wrong.npz", wrong))
    assert "tensor embedding/kernel has shape (16, 16, 3, 96), this model's is (8, 8, 3, 96)" in line


def test_a_foreign_npz_is_refused_in_one_line(tmp_path, demo_root, gsam_vit):
    w = dict(np.load(gsam_vit))
    in21k = {**w, "head/kernel": np.zeros((96, 21843), np.float32), "head/bias": np.zeros(21843, np.float32),
             "pre_logits/kernel": np.zeros((96, 96), np.float32), "pre_logits/bias": np.zeros(96, np.float32)}
    line = refused(demo_root, tmp_path / "a", save(tmp_path / "in21k.npz", in21k))
    assert "head/kernel has shape (96, 21843), this model's head is (96, 10)" in line
    line = refused(demo_root, tmp_path / "b", save(tmp_path / "rep.npz", {**w, **{k: in21k[k] for k in in21k
                                                                                   if "pre_logits" in k}}))
    assert "tensor pre_logits/bias (96) has no place in this model and 1 more" in line
    line = refused(demo_root, tmp_path / "c", save(tmp_path / "resnet.npz", {"conv_root/kernel": np.zeros(3)}))
    assert "is not a ViT or MLP-Mixer checkpoint" in line
    line = refused(demo_root, tmp_path / "d", gsam_vit, "model=demo_mixer")
    assert "holds a released vit model; model.family is mixer" in line


def test_evaluate_writes_a_released_row_and_make_table_marks_it(tmp_path, demo_root, gsam_vit):
    r = run_main("evaluate.py", tmp_path / "out", demo_root, f"eval.checkpoint={gsam_vit}")
    assert r.returncode == 0, r.stderr[-1500:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["released"] == str(gsam_vit) and res["step"] is None and res["imagenet"] == res["results"]["val"]["top1"]
    assert "act_layer=gelu_tanh" in r.stdout
    ours = {**res, "released": None}
    table = rows([res, ours])
    assert [row["method"] for row in table] == ["gsam", "gsam (released)"]
    assert table[1]["imagenet"]["ours"] == res["imagenet"] and not table[1]["table1"]  # demo: no paper row
    paper = rows([{"model": "vit_b32", "method": "sam", "name": "vit_b32_sam", "imagenet": 73.7, "released": "f"}])
    assert paper[0]["imagenet"]["paper"] == 73.6 and paper[0]["table1"]
    assert "| vit_b32 | sam (released) | 73.7 / 73.6 (+0.1)" in markdown(paper)


def test_the_converted_checkpoint_evaluates_as_the_npz(tmp_path, demo_root, gsam_vit):
    convert = load_script("convert_released").main
    out = tmp_path / "vit.pt"
    assert convert([str(gsam_vit), "--experiment", "demo_gsam", "--out", str(out), f"data.root={demo_root}"]) == 0
    state = load(out)
    assert state["released"]["file"] == str(gsam_vit) and state["config"]["model"]["kwargs"]["act_layer"] == "gelu_tanh"
    a = run_main("evaluate.py", tmp_path / "a", demo_root, f"eval.checkpoint={gsam_vit}")
    b = run_main("evaluate.py", tmp_path / "b", demo_root, f"eval.checkpoint={out}")
    assert a.returncode == b.returncode == 0, (a.stderr[-800:], b.stderr[-800:])
    ra, rb = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    assert rb["results"]["val"] == ra["results"]["val"] and rb["released"] == str(gsam_vit)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(out.read_bytes())
    with pytest.raises(CheckpointError, match="without optimizer state; train.py cannot resume it"):
        CheckpointManager(tmp_path / "run" / "checkpoints").resume_state()
    bad = save(tmp_path / "bad.npz", {k: v for k, v in np.load(gsam_vit).items() if k != "head/bias"})
    assert convert([str(bad), "--experiment", "demo_gsam", "--out", str(tmp_path / "bad.pt")]) == 2
    assert not (tmp_path / "bad.pt").exists()


def test_timm_avg_pool_defaults_drop_the_gsam_vits_final_layernorm(gsam_vit, images):
    """timm #1302's "very poor validation" (docs/recipe.md): ``global_pool='avg'`` alone gives timm's fc_norm (a
    LayerNorm after the mean), and its reader then leaves it at ones and zeros while the file's encoder_norm (before
    the mean) has nowhere to go, without a word."""
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT_KW, class_token=False, global_pool="avg")
    _load_weights(model, str(gsam_vit))
    assert torch.equal(model.fc_norm.weight, torch.ones(96)) and not hasattr(model.norm, "weight")
    with torch.no_grad():
        right = timm_reads(gsam_vit, token=False)(images)
        assert not torch.allclose(model.eval()(images), right, atol=1e-2)
