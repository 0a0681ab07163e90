"""A method's defaults have one place, its registration (gsam/optim/methods.py): configs/sam/*.yaml are written
from it (a file edited by hand, or a default changed without rewriting the file, is drift), a script's plain dict
gets the same values as the composed config, and the optimizers' own constructor defaults agree with it except
where the Python API keeps a reference code's default on purpose. And the listing (python -m gsam.catalog)."""
import dataclasses
import inspect
import shutil

import pytest
import yaml
from omegaconf import OmegaConf

import gsam
from gsam.catalog import list_experiments, list_methods, list_models
from gsam.catalog.cli import main as catalog_main
from gsam.config import sam_files
from gsam.evaluation.tables import table1_experiments
from gsam.optim.registry import METHODS, Same
from support import ROOT

# (method, key): the constructor's default differs from the config's, and why. The config holds the paper's
# (Table 4's) or the study's value; the class keeps the default of the reference code it was checked against.
CONSTRUCTOR_KEEPS_ITS_OWN = {
    ("gsam", "alpha"): "0.4: the official GSAM PyTorch code's default (juntang-zhuang/GSAM)",
    ("gsam_min_f", "alpha"): "GSAM's constructor default, which it inherits",
    ("looksam", "alpha"): "0.7: the LookSAM re-implementation's default (Leminhbinh0209/LookSAM)",
    ("lookgsam", "alpha"): "LookSAM's constructor default (the class is LookSAM's)",
    ("lookgsam", "gsam_alpha"): "0.0: the class is plain LookSAM unless asked for GSAM's update",
}
# the radius: every constructor's rho is SAM's 0.05 and rho_min None (= rho, constant), whatever the method's file
RADIUS = ("rho_max", "rho_min")


def test_each_sam_file_is_what_the_registry_writes():
    assert sam_files.drift() == []


def test_the_drift_check_names_the_file_of_a_default_changed_on_either_side(tmp_path, monkeypatch):
    """A mismatch injected in the file (XSAM's search cadence edited by hand) and one in the registry (GSAM's
    alpha changed without rewriting its file): each is reported by file, and rewriting clears it."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs" / "sam", configs / "sam")
    xsam = configs / "sam" / "xsam.yaml"
    xsam.write_text(xsam.read_text().replace("search_every_epochs: 1 ", "search_every_epochs: 0 "))
    assert [p.split(":")[0] for p in sam_files.drift(configs)] == [str(xsam)]
    gsam_method = METHODS["gsam"]
    keys = {**gsam_method.keys, "alpha": dataclasses.replace(gsam_method.keys["alpha"], default=0.02)}
    monkeypatch.setitem(METHODS, "gsam", dataclasses.replace(gsam_method, keys=keys))
    assert [p.split(":")[0] for p in sam_files.drift(configs)] == [str(configs / "sam" / "gsam.yaml"), str(xsam)]
    sam_files.write(configs, ["gsam", "xsam"])
    assert sam_files.drift(configs) == [] and yaml.safe_load(xsam.read_text())["search_every_epochs"] == 1


@pytest.mark.parametrize("name", list(METHODS))
def test_a_plain_dict_gets_the_values_of_the_methods_file(name):
    """``{"name": name}`` (a script's dict) builds the same constructor arguments as the file, its
    interpolations resolved (rho_min: ${sam.rho_max})."""
    text = (ROOT / "configs" / "sam" / f"{name}.yaml").read_text()
    from_file = OmegaConf.to_container(OmegaConf.create({"sam": yaml.safe_load(text)}), resolve=True)["sam"]
    assert METHODS[name].arguments({"name": name}) == METHODS[name].arguments(from_file)


def test_xsam_searches_once_per_epoch_by_default_everywhere():
    """The official --is_dynamic (batch_idx == 1): once per epoch. The file, the registry and the class agree."""
    assert yaml.safe_load((ROOT / "configs" / "sam" / "xsam.yaml").read_text())["search_every_epochs"] == 1
    assert METHODS["xsam"].keys["search_every_epochs"].default == 1
    assert inspect.signature(gsam.XSAM.__init__).parameters["search_every_epochs"].default == 1


def test_the_constructors_defaults_are_the_registrys_but_the_documented_ones():
    differ = {}
    for m in METHODS.values():
        params = {**inspect.signature(gsam.SharpnessAware.__init__).parameters,
                  **inspect.signature(m.cls.__init__).parameters}
        for name, key in m.keys.items():
            if key.arg is None or name in RADIUS or name in m.fixed:
                continue
            own = params[key.arg].default
            if own is not inspect.Parameter.empty and own != key.default:
                differ[m.name, name] = (own, key.default)
    assert set(differ) == set(CONSTRUCTOR_KEEPS_ITS_OWN), differ
    assert all(isinstance(m.keys["rho_min"].default, (float, Same)) for m in METHODS.values() if "rho_min" in m.keys)


def test_the_listing_names_every_method_model_and_table1_row(capsys):
    methods = {e.name: e for e in list_methods()}
    assert list(methods) == list(METHODS) and all(e.summary for e in methods.values())
    assert "sam.search_every_epochs" in methods["xsam"].detail
    models = {e.name: e.role for e in list_models()}
    assert models["vit_b16"] == "table1" and models["demo_vit"] == "other" and len(models) == len(
        list((ROOT / "configs" / "model").glob("*.yaml")))
    assert [e.name for e in list_experiments(role="table1")] == sorted(table1_experiments())
    assert catalog_main(["experiments", "--table1"]) == 0
    out = capsys.readouterr().out
    assert out.count("[T1]") == 48 + 1 and "vit_b32_gsam" in out and "demo_gsam" not in out  # 48 rows, the legend
    assert catalog_main([]) == 0
    out = capsys.readouterr().out
    assert f"methods, sam=<name> ({len(METHODS)})" in out and "keys: sam.rho_max sam.rho_min sam.alpha" in out
