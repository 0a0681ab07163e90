"""Real Hydra composition of the shipped configs: the 48 Table 1 experiments carry the paper's numbers, the
efficient variants beside them their sources' values, and a model added to a copy of configs/ breaks nothing."""
import shutil

import pytest
import yaml
from omegaconf import OmegaConf

from gsam.config.keys import check_known_keys
from gsam.evaluation import tables
from gsam.evaluation.tables import TABLE1_METHODS, VARIANTS, sam_name
from support import MODELS, ROOT, load_script
from support.inproc import run_argv

METHODS = TABLE1_METHODS
# GSAM paper Table 4 (rho_max, rho_min, alpha), transcribed independently of scripts/dev/make_experiments.py
TABLE4 = {"resnet50": (0.04, 0.02, 0.01), "resnet101": (0.04, 0.02, 0.01), "resnet152": (0.04, 0.02, 0.005),
          "vit_s32": (0.6, 0.0, 0.4), "vit_s16": (0.6, 0.0, 1.0), "vit_b32": (0.6, 0.1, 0.6),
          "vit_b16": (0.6, 0.2, 0.4), "mixer_s32": (0.5, 0.0, 0.2), "mixer_s16": (0.5, 0.0, 0.6),
          "mixer_s8": (0.5, 0.1, 0.1), "mixer_b32": (0.7, 0.2, 0.05), "mixer_b16": (0.5, 0.2, 0.01)}
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
TIMM = {"resnet50": "resnet50", "resnet101": "resnet101", "resnet152": "resnet152",
        "vit_s32": "vit_small_patch32_224", "vit_s16": "vit_small_patch16_224", "vit_b32": "vit_base_patch32_224",
        "vit_b16": "vit_base_patch16_224", "mixer_s32": "mixer_s32_224", "mixer_s16": "mixer_s16_224",
        "mixer_s8": "mixer_s8_224", "mixer_b32": "mixer_b32_224", "mixer_b16": "mixer_b16_224"}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_every_table1_experiment_composes_with_the_papers_numbers(compose, model, method):
    cfg = compose(f"+experiment={model}_{method}")
    assert cfg.name == f"{model}_{method}"
    assert cfg.model.name == TIMM[model]
    assert cfg.data.batch_size == 4096
    assert cfg.data.min_crop_scale == 0.05  # big_vision inception_crop(area_min=5), both loaders read it
    resnet = tables.TABLE4[model].recipe == "resnet"
    if resnet:
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.lr_min) == ("sgd", 1.6, 0.016)
        assert (cfg.schedule.epochs, cfg.schedule.warmup_steps) == (90, 5000)
        assert cfg.optimizer.weight_decay == 1e-4 and cfg.model.loss == "softmax"
    else:
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.lr_min) == ("adamw", 3e-3, 3e-5)
        assert (cfg.schedule.epochs, cfg.schedule.warmup_steps) == (300, 10000)
        assert cfg.optimizer.weight_decay == 0.3 and cfg.optimizer.clip_grad_norm == 1.0
        assert list(cfg.optimizer.betas) == [0.9, 0.999]
        assert cfg.model.loss == "sigmoid" and cfg.model.head_bias_init == -10.0
    assert cfg.schedule.decay == "linear"
    assert cfg.sam.name == sam_name(method)
    rho_max, rho_min, alpha = TABLE4[model]
    if method == "gsam":
        assert (cfg.sam.rho_max, cfg.sam.rho_min, cfg.sam.alpha) == (rho_max, rho_min, alpha)
    if method in ("sam", "xsam"):  # constant rho, SAM's own (method/sam.yaml), never GSAM's rho_max
        assert cfg.sam.rho_min == cfg.sam.rho_max == (0.05 if resnet else 0.15)
    if method == "xsam":  # alpha* searched at the first step of every epoch (official batch_idx == 1)
        assert cfg.sam.rho_probe == pytest.approx(2 * cfg.sam.rho_max) and cfg.sam.search_every_epochs == 1
    # perturbation groups of 4096 images / 128 TPU v3 devices (our choice of m), whatever the hardware
    assert cfg.sam.get("m") == (None if method == "vanilla" else 32)


TABLE1 = [f"{m}_{k}" for m in MODELS for k in METHODS]
VARIANT_EXPERIMENTS = [f"{m}_{v}" for m in MODELS for v in VARIANTS]
# beside Table 1: the demo (scripts/demo.sh and the tests), its label-noise runs, the small-scale study
OTHERS = ["demo_gsam", "demo_vanilla", "demo_noisy_gsam", "demo_noisy_vanilla"] + [f"study_{k}" for k in METHODS] + [
    "powered_gsam", "powered_vanilla"]  # the powered study (scripts/studies/powered_study.py)


RESNET_ROWS = [f"{m}_{k}" for m in MODELS if m.startswith("resnet") for k in METHODS]
# The sweeps below over every model's experiments compose some 200 configs (0.1-0.15 s each): the fast tier takes
# one model of each family, the slow tier the rest (every Table 1 row is composed in the fast tier anyway, by
# test_every_table1_experiment_composes_with_the_papers_numbers)
FAST_MODELS = ("resnet50", "vit_b32", "mixer_b16")


def _tiered(values, model_of=lambda v: v):
    return [v if model_of(v) in FAST_MODELS else pytest.param(v, marks=pytest.mark.slow) for v in values]


def _variant_model(experiment: str) -> str:
    """The model of a variant experiment; Table 1's rows and the others are composed in the fast tier."""
    return next((m for m in MODELS if experiment in VARIANT_EXPERIMENTS and experiment.startswith(m + "_")),
                FAST_MODELS[0])


@pytest.mark.parametrize("experiment", RESNET_ROWS)
def test_batchnorm_sees_the_same_images_in_every_resnet_row_on_1_and_8_processes(compose, experiment):
    """Every forward of every ResNet row, vanilla included, holds model.bn_images = 32 images on 1 and on 8
    processes (4096 and 512 per process), so BatchNorm normalises over the same number of images as on the
    paper's TPUs, where every row shared the per-device batch."""
    from gsam.run.build import training_batches

    cfg = compose(f"+experiment={experiment}")
    assert cfg.model.bn_images == 32
    for world in (1, 8):
        plan = training_batches(cfg, world)
        assert plan.micro == 32  # the images one forward, and so BatchNorm, sees
        assert plan.micro * plan.accum * plan.groups == 4096 // world  # the whole per-process batch, once


def test_a_batchnorm_batch_the_run_cannot_hold_is_one_line_naming_the_key(compose):
    from gsam.run.build import training_batches
    from gsam.config.checks import ConfigError

    with pytest.raises(ConfigError, match=r"model.bn_images=24: .*divides sam.m=32"):
        training_batches(compose("+experiment=resnet50_sam", "model.bn_images=24"), 1)
    with pytest.raises(ConfigError, match=r"model.bn_images=32: BatchNorm would see 8 images"):
        training_batches(compose("+experiment=resnet50_vanilla", "data.batch_size=64"), 8)


def test_the_experiment_list_is_table1_the_variants_the_demo_and_the_study():
    assert EXPERIMENTS == sorted(TABLE1 + VARIANT_EXPERIMENTS + OTHERS + tables.table6_experiments())
    assert sorted(tables.table1_experiments()) == sorted(TABLE1)
    assert sorted(tables.variant_experiments()) == sorted(VARIANT_EXPERIMENTS)


@pytest.mark.parametrize("experiment", _tiered(EXPERIMENTS, _variant_model))
def test_the_derived_name_is_the_experiment_name(compose, experiment):
    """Output folder, wandb run, results.json and the sweep's job dirs use ``name``: it must stay the file's name.
    Table 1's files do not write it (config.yaml derives it; method/vanilla.yaml says vanilla for sam none)."""
    cfg = compose(f"+experiment={experiment}")
    assert cfg.name == experiment and cfg.output_dir == f"outputs/{experiment}"
    if experiment in TABLE1:
        assert "name" not in yaml.safe_load((ROOT / "configs" / "experiment" / f"{experiment}.yaml").read_text())
    check_known_keys(cfg)  # the trainer refuses keys no file defines: the recipe/method groups' keys are known


@pytest.mark.parametrize("model", _tiered(MODELS))
@pytest.mark.parametrize("method", METHODS + VARIANTS)
def test_an_experiment_is_its_recipe_method_model_and_row(compose, model, method):
    """The groups on the command line give the experiment's config exactly, so the groups are all it shares."""
    cfg = compose(f"+experiment={model}_{method}")
    recipe = tables.TABLE4[model].recipe
    row = yaml.safe_load((ROOT / "configs" / "experiment" / f"{model}_{method}.yaml").read_text()).get("sam", {})
    # the row's numbers, nothing shared
    assert set(row) <= {"rho_max", "rho_min", "alpha", "rho_probe", "gsam_alpha", "start_step"}
    by_hand = compose(f"+recipe={recipe}", f"+method={method}", f"model={model}",
                       *(f"sam.{k}={v}" for k, v in row.items()))
    assert OmegaConf.to_container(by_hand, resolve=True) == OmegaConf.to_container(cfg, resolve=True)


def test_command_line_overrides_beat_the_groups_and_the_name_follows(compose):
    cfg = compose("+experiment=vit_b16_gsam", "sam=sam")
    assert (cfg.sam.name, cfg.name, cfg.sam.m, cfg.optimizer.name) == ("sam", "vit_b16_sam", 32, "adamw")
    cfg = compose("+experiment=vit_b16_gsam", "model=vit_s16")
    assert (cfg.model.short, cfg.name, cfg.sam.alpha) == ("vit_s16", "vit_s16_gsam", 0.4)
    cfg = compose("+experiment=resnet50_sam", "optimizer=adamw", "schedule=vit")
    assert (cfg.optimizer.name, cfg.schedule.epochs, cfg.sam.rho_max) == ("adamw", 300, 0.05)
    cfg = compose("+experiment=resnet50_vanilla", "name=mine")
    assert (cfg.name, cfg.output_dir) == ("mine", "outputs/mine")


def test_vit_recipe_details(compose):
    cfg = compose("+experiment=vit_b32_gsam")
    assert cfg.model.kwargs.global_pool == "avg" and cfg.model.kwargs.fc_norm is False
    assert cfg.model.kwargs.class_token is False
    assert cfg.data.minival_fraction == 0.01 and cfg.optimizer.decay_norms_and_biases is False


def test_plain_overrides_compose(compose):
    cfg = compose("+experiment=vit_b32_gsam", "sam.alpha=0.3", "data.batch_size=1024", "optimizer.lr=1e-3")
    assert (cfg.sam.alpha, cfg.data.batch_size, cfg.optimizer.lr) == (0.3, 1024, 1e-3)
    assert compose().name == "resnet50_none"


def test_experiment_files_are_what_the_generator_writes(tmp_path):
    make_experiments = load_script("dev/make_experiments")

    for model in MODELS:
        for method in METHODS + VARIANTS:
            written = (ROOT / "configs" / "experiment" / f"{model}_{method}.yaml").read_text()
            assert written == make_experiments.experiment(model, method)


@pytest.mark.slow  # three full-size Table 1 models built: ~10 s
def test_every_model_builds_from_its_config(compose):
    """Each timm name exists (or is ours: Mixer-S/8) and the recipe head is applied."""
    import torch

    from gsam import models

    for model in ["vit_s32", "mixer_s8", "resnet50"]:
        cfg = compose(f"model={model}")
        net = models.build_model(cfg.model, num_classes=1000)
        head = net.get_classifier()
        if cfg.model.head_bias_init is not None:
            assert torch.all(head.weight == 0) and torch.all(head.bias == -10.0)
    import timm

    known = set(timm.list_models())
    for model in MODELS:
        cfg = compose(f"model={model}")
        assert cfg.model.name in known or cfg.model.name == "mixer_s8_224"


def test_torchrun_command_line_composes():
    """The mission's command, as written, resolves (--cfg job prints the config without running)."""
    out = run_argv("train.py", ["train.py", "+experiment=vit_b32_gsam", "--cfg", "job", "--resolve"])
    assert out.returncode == 0, out.stderr
    assert "name: vit_b32_gsam" in out.stdout and "alpha: 0.6" in out.stdout


def test_the_official_xsam_flags_map_as_documented(compose):
    """docs/optimizers.md, configs/sam/xsam.yaml: the official `--rho 0.15 --rho_max 0.3` is sam.rho_max=0.15 (the
    ascent length) and sam.rho_probe=0.3 (the probe radius), not sam.rho_max=0.3."""
    import torch

    from gsam.optim.factory import build_optimizer

    cfg = compose("sam=xsam", "sam.rho_max=0.15", "sam.rho_probe=0.3")
    opt = build_optimizer(torch.nn.Linear(2, 1), cfg.optimizer, cfg.sam)
    assert (type(opt).__name__, opt.rho, opt.rho_probe, opt.steps) == ("XSAM", 0.15, 0.3, 1)
    assert cfg.sam.rho_min == 0.15  # constant ascent length, as the official code


# ImageNet-1k's training images (ILSVRC-2012), for MESA's start step
IMAGENET_TRAIN = 1_281_167


@pytest.mark.parametrize("model", _tiered(MODELS))
def test_the_efficient_variants_compose_with_their_sources_values(compose, model):
    """One experiment per variant on each Table 1 model (configs/method/<variant>.yaml gives the sources):
    Composer's every 10 steps at 10 x the SAM row's rho, LookSAM-5 at the SAM row's rho, LookGSAM on Table 4's
    row, MESA's official ImageNet values with the KL from epoch 6 in this trainer's steps."""
    import torch

    from gsam.optim.factory import build_optimizer

    sam_rho = 0.05 if model.startswith("resnet") else 0.15
    every_k = compose(f"+experiment={model}_every_k").sam
    assert (every_k.name, every_k.k, every_k.m) == ("every_k", 10, 32)
    # 10 x the SAM rho, on the ViTs and Mixers held to the top of Sec. 6.1's rho search
    assert every_k.rho_max == every_k.rho_min == pytest.approx(min(10 * sam_rho, 0.5 if sam_rho == 0.05 else 0.6))
    look = compose(f"+experiment={model}_looksam").sam
    assert (look.name, look.k, look.alpha, look.m, look.rho_max, look.rho_min) == ("looksam", 5, 0.1, 32, sam_rho,
                                                                                   sam_rho)
    lookg = compose(f"+experiment={model}_lookgsam").sam
    assert (lookg.rho_max, lookg.rho_min, lookg.gsam_alpha) == TABLE4[model]
    assert (lookg.name, lookg.k, lookg.alpha, lookg.m) == ("lookgsam", 5, 0.1, 32)
    cfg = compose(f"+experiment={model}_mesa")
    mesa = cfg.sam
    assert (mesa.name, mesa.lam, mesa.tau, mesa.decay, mesa.get("m")) == ("mesa", 0.8, 5.0, 0.9998, None)
    train_images = IMAGENET_TRAIN - round(IMAGENET_TRAIN * cfg.data.minival_fraction)
    assert mesa.start_step == 6 * (train_images // cfg.data.batch_size) == 1854  # epochs 0-5 without the KL term
    for variant, sam in (("every_k", every_k), ("looksam", look), ("lookgsam", lookg), ("mesa", mesa)):
        experiment = compose(f"+experiment={model}_{variant}")
        assert experiment.name == f"{model}_{variant}" and experiment.optimizer.name == (
            "sgd" if model.startswith("resnet") else "adamw")
        check_known_keys(experiment)
        build_optimizer(torch.nn.Linear(2, 1), experiment.optimizer, sam)  # the factory takes every value


def test_channels_last_is_the_models_key(compose):
    """model.channels_last, declared by every model file: true for the ResNets; train.channels_last=auto follows
    it, true and false override it."""
    from gsam.run.build import _channels_last

    for path in sorted((ROOT / "configs" / "model").glob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text())["channels_last"], bool), path.name
    for model in MODELS:
        cfg = compose(f"+experiment={model}_gsam")
        assert cfg.model.channels_last is _channels_last(cfg) is model.startswith("resnet")
    assert _channels_last(compose("+experiment=vit_b16_gsam", "train.channels_last=true")) is True
    assert _channels_last(compose("+experiment=resnet50_gsam", "train.channels_last=false")) is False


CONVNEXT = """# A model beside Table 1: timm's ConvNeXt-Atto.
name: convnext_atto
short: convnext_atto
family: convnext
loss: softmax
head_bias_init: null
kwargs: {}
channels_last: true
bn_images: null
"""
CONVNEXT_EXPERIMENT = """# @package _global_
defaults:
  - /recipe: resnet
  - /method: sam
  - override /model: convnext_atto

sam:
  rho_max: 0.05
"""


def test_a_model_beside_table1_in_a_copy_of_configs_breaks_nothing(tmp_path, capsys, compose):
    """A user adds a model family (ConvNeXt) and an experiment of it to a copy of configs/: the key check accepts
    it, Table 1 and its sweep stay the 48 rows, make_experiments writes the same files into that folder, and the
    experiment composes and builds with its model's channels_last."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gsam import models
    from gsam.run.build import _channels_last

    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "model" / "convnext_atto.yaml").write_text(CONVNEXT)
    (configs / "experiment" / "convnext_atto_sam.yaml").write_text(CONVNEXT_EXPERIMENT)
    before = {p.name: p.read_text() for p in (configs / "experiment").glob("*.yaml")}
    assert load_script("dev/make_experiments").main(["--configs", str(configs)]) == 0
    assert "96 experiments" in capsys.readouterr().out
    assert {p.name: p.read_text() for p in (configs / "experiment").glob("*.yaml")} == before
    assert tables.table1_models() == MODELS and "convnext_atto" not in MODELS

    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["+experiment=convnext_atto_sam"])
        table1_row = hydra_compose(config_name="config", overrides=["+experiment=resnet50_gsam"])
    check_known_keys(cfg, configs)
    assert (cfg.name, cfg.model.family, cfg.sam.m, cfg.optimizer.name) == ("convnext_atto_sam", "convnext", 32, "sgd")
    assert _channels_last(cfg) is True
    assert models.build_model(cfg.model, num_classes=10).get_classifier().out_features == 10
    assert OmegaConf.to_container(table1_row, resolve=True) == OmegaConf.to_container(
        compose("+experiment=resnet50_gsam"), resolve=True)

    sweep = load_script("sweep")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(configs)))
    override, = OverridesParser.create(config_loader=loader).parse_overrides([sweep.TABLE1])
    assert sorted(override.sweep_string_iterator()) == sorted(TABLE1)

