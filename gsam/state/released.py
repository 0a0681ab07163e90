"""Released ViT and MLP-Mixer checkpoints (``.npz``: gs://vit_models/{sam,gsam}, gs://mixer_models/{sam,gsam}) as
Table 1 models: read, brought to one naming, checked tensor by tensor against the row's model, loaded.

Where the key layouts come from (the files cannot be fetched here; their names follow the code that wrote and reads
them, google-research/vision_transformer and google-research/big_vision):
- ViT, vision_transformer: ``embedding/{kernel,bias}``, ``cls`` (class-token models only),
  ``Transformer/posembed_input/pos_embedding``, ``Transformer/encoderblock_<i>/`` with the pre-Linen numbering
  ``LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3`` (the SAM files, which timm reads as
  ``vit_base_patch32_224.sam_in1k``) or Linen's ``LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1,
  MlpBlock_0`` (``vit_jax/models_vit.py``), ``Transformer/encoder_norm``, ``head``. ``vit_jax/checkpoint.py``
  ``load`` reads both numberings through flax's ``convert_pre_linen``; the GSAM ViTs load there as the
  ``ViT-*-gap-norep`` configs (no ``cls``, mean over the tokens after ``encoder_norm``, no ``pre_logits``; PR #215).
- ViT, big_vision: ``pos_embedding`` at the top (``Transformer/pos_embedding`` before 2022), Linen numbering, and
  optionally one stacked ``Transformer/encoderblock`` (``models/vit.py``: ``fix_old_checkpoints``,
  ``scan_to_pyloop``).
- Mixer: ``stem/{kernel,bias}``, ``MixerBlock_<i>/{LayerNorm_0, token_mixing/Dense_{0,1}, LayerNorm_1,
  channel_mixing/Dense_{0,1}}``, ``pre_head_layer_norm``, ``head`` (vision_transformer ``vit_jax/models_mixer.py``;
  big_vision ``models/mlp_mixer.py`` uses the same names).
A file is brought to Linen's names with big_vision's ViT layout (``canonical``); the ViT is then loaded by timm's
own ``.npz`` reader (``VisionTransformer.load_pretrained``), the Mixer by ``mixer_layout``'s mapping (timm 1.0 has
no Mixer ``.npz`` reader). Before either, ``check_fits`` refuses a file that is not exactly the model (timm's reader
alone would resample a position embedding or skip a head of another size without a word).
"""
from __future__ import annotations

import dataclasses
import io
import math
import re
from pathlib import Path

import numpy as np
import torch

from gsam.state.checkpoint import CheckpointError

# What the released models compute besides their tensors: flax's nn.gelu is the tanh approximation (jax.nn.gelu's
# default, used by both repositories' MlpBlock); timm's default GELU is exact. The ViTs pool as their file says.
VIT_TOKEN = {"class_token": True, "global_pool": "token", "fc_norm": False, "act_layer": "gelu_tanh"}
VIT_GAP = {"class_token": False, "global_pool": "avg", "fc_norm": False, "act_layer": "gelu_tanh"}
MIXER = {"act_layer": "gelu_tanh"}
# Their input: value_range(-1, 1) (big_vision's GSAM config, vision_transformer input_pipeline (im - 127.5) / 127.5)
RELEASED_MEAN_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of the released layout: its shape, the model parameter it fills, and how (``dense``: a flax
    kernel (in, out) is the transposed torch weight; ``conv``: HWIO to OIHW)."""
    shape: tuple
    param: str
    convert: str = ""


@dataclasses.dataclass(frozen=True)
class Released:
    path: Path
    family: str  # "vit" or "mixer"
    weights: dict  # canonical names -> np.ndarray

    @property
    def model_kwargs(self) -> dict:
        """The timm kwargs that give the released architecture (pooling, activation)."""
        if self.family == "mixer":
            return dict(MIXER)
        return dict(VIT_TOKEN if "cls" in self.weights else VIT_GAP)


def _tree(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


_NUMBERED = re.compile(r"^(.*)_(\d+)$")


def _linen_names(tree):
    """flax ``checkpoints.convert_pre_linen``: pre-Linen numbered a module's children across all their classes
    (``LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3``), Linen numbers each class on its own
    (``LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0``); Linen names stay as they are."""
    if not isinstance(tree, dict):
        return tree
    numbered = {k: _NUMBERED.match(k) for k in tree}
    order = sorted(tree, key=lambda k: (numbered[k].group(1), int(numbered[k].group(2))) if numbered[k] else (k, -1))
    out, counts = {}, {}
    for key in order:
        new = key
        if numbered[key]:
            cls = numbered[key].group(1)
            new, counts[cls] = f"{cls}_{counts.get(cls, 0)}", counts.get(cls, 0) + 1
        out[new] = _linen_names(tree[key])
    return out


def _unstacked(flat: dict) -> dict:
    """big_vision's ``scan`` layout (one ``Transformer/encoderblock`` whose tensors have a leading depth axis) as one
    block per layer (``models/vit.py`` ``scan_to_pyloop``)."""
    stem = "Transformer/encoderblock/"
    out = {k: v for k, v in flat.items() if not k.startswith(stem)}
    for k, v in flat.items():
        if k.startswith(stem):
            out.update({f"Transformer/encoderblock_{i}/{k[len(stem):]}": v[i] for i in range(v.shape[0])})
    return out


POSEMB_KEYS = ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding", "pos_embedding")


def _posemb_on_top(flat: dict, path: Path) -> dict:
    """The position embedding as big_vision's top-level ``pos_embedding``, with a row for the class token when there
    is one: vision_transformer adds it after prepending ``cls`` (grid + 1 rows), big_vision since 2022 before (grid
    rows; a zero row in front computes the same, ``fix_old_checkpoints``)."""
    found = [k for k in POSEMB_KEYS if k in flat]
    if len(found) > 1:
        raise CheckpointError(f"{path}: two position embeddings ({found[0]}, {found[1]}); not a released layout")
    if not found:
        return flat
    pe = flat.pop(found[0])
    if "cls" in flat and pe.ndim == 3 and math.isqrt(pe.shape[1]) ** 2 == pe.shape[1]:
        pe = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
    return {**flat, "pos_embedding": pe}


def canonical(raw: dict, path: Path) -> dict:
    """Any of the layouts in the module's docstring, in Linen's names with big_vision's ViT layout."""
    for prefix in ("opt/target/", "params/"):  # a train state's parameters (the rest: optimizer moments)
        if any(k.startswith(prefix) for k in raw):
            raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    return _posemb_on_top(_flat(_linen_names(_tree(_unstacked(raw)))), path)


def _family(flat: dict, path: Path) -> str:
    if "embedding/kernel" in flat and any(k.startswith("Transformer/") for k in flat):
        return "vit"
    if "stem/kernel" in flat and any(k.startswith("MixerBlock_") for k in flat):
        return "mixer"
    raise CheckpointError(f"{path} is not a ViT or MLP-Mixer checkpoint in the vision_transformer / big_vision .npz "
                          "layout (no embedding/kernel with Transformer/..., nor stem/kernel with MixerBlock_0/...)")


def read(path: str | Path) -> Released:
    """The ``.npz`` at ``path``, canonical; CheckpointError (one line) for a file that is none of the layouts."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - truncated, pickled, not numpy: the same one line
        raise CheckpointError(f"{path} cannot be read as an .npz archive ({type(e).__name__}); a released checkpoint "
                              "is the .npz file of gs://vit_models or gs://mixer_models") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path} holds one array, not an .npz archive of named tensors")
    with npz:
        raw = {k: np.asarray(npz[k]) for k in npz.files}
    weights = canonical(raw, path)
    return Released(path, _family(weights, path), weights)


def _norm(key: str, param: str, width: int) -> dict:
    return {f"{key}/scale": Tensor((width,), f"{param}.weight"), f"{key}/bias": Tensor((width,), f"{param}.bias")}


def _linear(key: str, param: str, layer) -> dict:
    """A flax Dense: kernel (in, out), the transposed torch weight."""
    return {f"{key}/kernel": Tensor((layer.in_features, layer.out_features), f"{param}.weight", "dense"),
            f"{key}/bias": Tensor((layer.out_features,), f"{param}.bias")}


def _conv(key: str, param: str, conv) -> dict:
    """A flax Conv: kernel (h, w, in, out), torch's (out, in, h, w)."""
    o, i, h, w = conv.weight.shape
    return {f"{key}/kernel": Tensor((h, w, i, o), f"{param}.weight", "conv"),
            f"{key}/bias": Tensor((o,), f"{param}.bias")}


def vit_layout(model) -> dict[str, Tensor]:
    """A timm VisionTransformer's tensors in big_vision's names (``canonical``): shape and parameter each fills."""
    width, heads = model.embed_dim, model.blocks[0].attn.num_heads
    layout = {**_conv("embedding", "patch_embed.proj", model.patch_embed.proj),
              "pos_embedding": Tensor(tuple(model.pos_embed.shape), "pos_embed"),
              **_norm("Transformer/encoder_norm", "norm", width), **_linear("head", "head", model.head)}
    if model.cls_token is not None:
        layout["cls"] = Tensor((1, 1, width), "cls_token")
    for i, block in enumerate(model.blocks):
        key, param = f"Transformer/encoderblock_{i}", f"blocks.{i}"
        attn = f"{key}/MultiHeadDotProductAttention_0"
        for name in ("query", "key", "value"):  # timm's fused qkv holds all three
            layout[f"{attn}/{name}/kernel"] = Tensor((width, heads, width // heads), f"{param}.attn.qkv.weight")
            layout[f"{attn}/{name}/bias"] = Tensor((heads, width // heads), f"{param}.attn.qkv.bias")
        layout.update({f"{attn}/out/kernel": Tensor((heads, width // heads, width), f"{param}.attn.proj.weight"),
                       f"{attn}/out/bias": Tensor((width,), f"{param}.attn.proj.bias"),
                       **_norm(f"{key}/LayerNorm_0", f"{param}.norm1", width),
                       **_norm(f"{key}/LayerNorm_1", f"{param}.norm2", width),
                       **_linear(f"{key}/MlpBlock_0/Dense_0", f"{param}.mlp.fc1", block.mlp.fc1),
                       **_linear(f"{key}/MlpBlock_0/Dense_1", f"{param}.mlp.fc2", block.mlp.fc2)})
    return layout


def mixer_layout(model) -> dict[str, Tensor]:
    """A timm MlpMixer's tensors in vit_jax/models_mixer.py's names. Both token mixing as ``MixerBlock``
    (LayerNorm, swap tokens and channels, MLP, swap back, residual), so the mapping is name for name."""
    width = model.embed_dim
    layout = {**_conv("stem", "stem.proj", model.stem.proj), **_norm("pre_head_layer_norm", "norm", width),
              **_linear("head", "head", model.head)}
    for i, block in enumerate(model.blocks):
        key, param = f"MixerBlock_{i}", f"blocks.{i}"
        layout.update({**_norm(f"{key}/LayerNorm_0", f"{param}.norm1", width),
                       **_norm(f"{key}/LayerNorm_1", f"{param}.norm2", width)})
        for flax, timm in (("token_mixing", "mlp_tokens"), ("channel_mixing", "mlp_channels")):
            mlp = getattr(block, timm)
            layout.update({**_linear(f"{key}/{flax}/Dense_0", f"{param}.{timm}.fc1", mlp.fc1),
                           **_linear(f"{key}/{flax}/Dense_1", f"{param}.{timm}.fc2", mlp.fc2)})
    return layout


LAYOUTS = {"vit": vit_layout, "mixer": mixer_layout}


def _shape(a) -> str:
    return "(" + ", ".join(map(str, a)) + ")"


def _more(items: list) -> str:
    return f" and {len(items) - 1} more" if len(items) > 1 else ""


def check_fits(model, released: Released) -> dict[str, Tensor]:
    """The layout of ``model`` when ``released`` fills it exactly: every tensor there, of the model's shape, none
    left over, every parameter covered. Otherwise CheckpointError, one line naming the tensor and its shape."""
    path, weights = released.path, released.weights
    layout = LAYOUTS[released.family](model)
    head = weights.get("head/kernel")
    if head is not None and head.shape != layout["head/kernel"].shape:
        raise CheckpointError(f"{path}: head/kernel has shape {_shape(head.shape)}, this model's head is "
                              f"{_shape(layout['head/kernel'].shape)}: a checkpoint with another head (ImageNet-21k's "
                              "21843 classes?) is no Table 1 model; the released ImageNet-1k files have 1000")
    missing = [k for k in layout if k not in weights]
    if missing:
        raise CheckpointError(f"{path}: no tensor {missing[0]} (this model's has shape "
                              f"{_shape(layout[missing[0]].shape)}){_more(missing)}: another architecture")
    wrong = [k for k in layout if weights[k].shape != layout[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path}: tensor {k} has shape {_shape(weights[k].shape)}, this model's is "
                              f"{_shape(layout[k].shape)}{_more(wrong)}: another architecture than this row's model")
    extra = sorted(set(weights) - set(layout))
    if extra:
        k = extra[0]
        raise CheckpointError(f"{path}: tensor {k} {_shape(weights[k].shape)} has no place in this model{_more(extra)}"
                              " (pre_logits: a representation layer, which no Table 1 model has)")
    not_float = [k for k in layout if weights[k].dtype.kind != "f"]
    if not_float:
        raise CheckpointError(f"{path}: tensor {not_float[0]} has dtype {weights[not_float[0]].dtype}, not a float")
    uncovered = sorted(set(model.state_dict()) - {t.param for t in layout.values()})
    if uncovered:  # a model option the released layout has no tensor for (layer scale, registers, ...)
        raise CheckpointError(f"{path}: this model's parameter {uncovered[0]}{_more(uncovered)} has no tensor in the "
                              "released layout; build the row's model as the released one (model.kwargs)")
    return layout


def _torch(a: np.ndarray, convert: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t.permute(3, 2, 0, 1) if convert == "conv" else t.T if convert == "dense" else t


@torch.no_grad()
def load_into(model, released: Released) -> None:
    """``released``'s weights in ``model`` (built with ``released.model_kwargs``), after ``check_fits``: a ViT
    through timm's own .npz reader, a Mixer through ``mixer_layout``."""
    layout = check_fits(model, released)
    if released.family == "vit":
        buffer = io.BytesIO()
        np.savez(buffer, **released.weights)
        buffer.seek(0)
        model.load_pretrained(buffer)  # timm's _load_weights, big_vision branch (top-level pos_embedding)
        return
    model.load_state_dict({t.param: _torch(released.weights[k], t.convert) for k, t in layout.items()})
