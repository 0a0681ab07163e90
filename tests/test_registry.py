"""One registry of methods (gsam/optim/registry.py): each shipped method declares exactly the keys of its
configs/sam/<name>.yaml, the config's numeric keys and checks derive from it, and a method added from outside
(here: from this test alone, with its own configs/sam/toy.yaml in a copy of configs/) composes, trains through
the real trainer and has its own bad value refused in one line naming its key."""
import shutil

import pytest
import torch
import yaml

import gsam
from gsam.config import keys
from gsam.config.checks import ConfigError, check, numeric_keys
from gsam.optim import SAM, Key, Method, register
from gsam.optim.methods import PERTURBATION
from gsam.optim.registry import METHODS, unregister
from gsam.run.experiment import run
from gsam.runlog import read_metrics
from support import ROOT
from support.cli import QUIET


class Toy(SAM):
    """SAM that keeps a share ``beta`` of the perturbed gradient: d = beta g_p + (1 - beta) g."""

    made: list = []

    def __init__(self, params, base_optimizer, rho: float = 0.05, beta: float = 0.5, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, **kwargs)
        self.beta = beta
        Toy.made.append(self)

    def _sharpness_step(self, closure):
        ps, loss, g, grad_norm, perturbed_loss, g_p, gp_norm, g_dot_gp = self._ascent(closure)
        torch._foreach_mul_(g_p, self.beta)
        torch._foreach_add_(g_p, g, alpha=1.0 - self.beta)
        return ps, self._diagnostics(loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp)


TOY = Method("toy", Toy, {**PERTURBATION, "beta": Key("beta", float, lambda v, _: 0 < float(v) <= 1,
                                                      "expected 0 < beta <= 1 (the share of g_p in d)")})
TOY_YAML = "name: toy\nrho_max: 0.05\nrho_min: 0.01\nbeta: 0.5\nsync_perturbation: false\nm: null\n"


@pytest.fixture
def toy_configs(tmp_path, monkeypatch):
    """A copy of configs/ with configs/sam/toy.yaml, the key check reading that copy, and the toy registered
    for the test only."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "sam" / "toy.yaml").write_text(TOY_YAML)
    monkeypatch.setattr(keys, "CONFIGS", configs)
    register(TOY)
    Toy.made.clear()
    yield configs
    unregister("toy")


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "sam").glob("*.yaml")))
def test_each_shipped_method_declares_exactly_the_keys_of_its_file(name):
    declared = yaml.safe_load((ROOT / "configs" / "sam" / f"{name}.yaml").read_text())
    assert declared["name"] == name and set(METHODS[name].keys) == set(declared) - {"name"}


def test_xsam_reads_its_search_cadence_from_its_file(compose):
    """sam.search_every and sam.search_every_epochs are declared (the key check passes) and reach XSAM."""
    cfg = compose("sam=xsam", "sam.search_every=3", "sam.search_images=8", "data.batch_size=32")
    check(cfg)
    keys.check_known_keys(cfg)
    opt = gsam.optim.factory.build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer, cfg.sam)
    assert (opt.search_every, opt.search_every_epochs, opt.search_images) == (3, 1, 8)


def test_a_registered_toy_method_composes_and_its_bad_value_fails_in_one_line(toy_configs, compose):
    cfg = compose("sam=toy", "sam.beta=0.25", configs=toy_configs)
    check(cfg)
    keys.check_known_keys(cfg)
    opt = gsam.optim.factory.build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer, cfg.sam)
    assert (type(opt), opt.beta, opt.rho_max, opt.rho_min) == (Toy, 0.25, 0.05, 0.01)
    assert "sam.beta" in numeric_keys()
    for value, message in (("2.0", "sam.beta=2.0: expected 0 < beta <= 1 (the share of g_p in d)"),
                           ("abc", "sam.beta='abc': expected a finite number")):
        with pytest.raises(ConfigError) as e:
            check(compose("sam=toy", f"sam.beta={value}", configs=toy_configs))
        assert str(e.value) == message
    unregister("toy")
    assert "sam.beta" not in numeric_keys()
    with pytest.raises(ConfigError, match=r"^sam.name='toy': expected one of \('none', "):
        check(cfg)


@pytest.mark.slow
def test_a_registered_toy_method_trains_two_steps_through_the_trainer(toy_configs, compose, demo_root, tmp_path):
    """The trainer knows no method by name: the toy gets its rho_t from the lr through the one hook and takes
    the steps; a bad value of its own key stops the run before anything is written."""
    common = ["+experiment=demo_gsam", "sam=toy", f"data.root={demo_root}", *QUIET, "data.batch_size=64",
              "train.max_steps=2", "train.log_every=1", "schedule.epochs=1", "schedule.warmup_steps=2"]
    run(compose(*common, f"output_dir={tmp_path / 'run'}", configs=toy_configs))
    (opt,) = Toy.made
    assert opt.steps_taken == 2 and opt.beta == 0.5
    records = read_metrics(tmp_path / "run")["train"]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        lr = gsam.lr_at(r["step"] - 1, total_steps=1442 // 64, warmup_steps=2, lr_max=3e-3, lr_min=3e-5)
        assert r["rho"] == pytest.approx(gsam.rho_from_lr(lr, lr_max=3e-3, lr_min=3e-5, rho_max=0.05, rho_min=0.01),
                                         rel=1e-12)
    assert records[0]["rho"] < records[1]["rho"] == pytest.approx(0.05)  # warm-up: rho_t follows the lr
    with pytest.raises(ConfigError, match=r"^sam.beta=0: expected 0 < beta <= 1") as e:
        run(compose(*common, "sam.beta=0", f"output_dir={tmp_path / 'bad'}", configs=toy_configs))
    assert "\n" not in str(e.value) and not (tmp_path / "bad").exists()
