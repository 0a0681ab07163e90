"""Fixtures shared by the whole suite: the demo data and the Hydra composition of the shipped configs.
Plain helper code (models, reference computations, train.py as a subprocess) lives in the ``support`` package."""
from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from support import ROOT
from support.cli import QUIET


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The embedded demo data (data/demo.py), written once per test session."""
    from gsam.data.demo import write_demo_dataset

    return str(write_demo_dataset(tmp_path_factory.mktemp("demo_data")))


def _compose(*overrides: str, return_hydra_config: bool = False):
    """configs/config.yaml with ``overrides``, composed by Hydra as train.py does (without running anything)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def compose():
    """``compose(*overrides, return_hydra_config=False)``: the shipped configs, composed."""
    return _compose


@pytest.fixture(scope="session")
def demo_config():
    """``demo_config(out, demo_root, *overrides)``: the demo_gsam experiment writing into ``out``, quiet
    (QUIET), with ``overrides`` last so that a test can change any of it."""
    def make(out, demo_root, *overrides):
        return _compose("+experiment=demo_gsam", f"output_dir={out}", f"data.root={demo_root}", *QUIET, *overrides)

    return make
