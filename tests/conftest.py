"""Fixtures shared by the whole suite: the demo data and the Hydra composition of the shipped configs.
Plain helper code (models, reference computations, train.py as a subprocess) lives in the ``support`` package."""
from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # GSAM_TEST_WORKERS=auto bash scripts/test.sh runs a pytest-xdist worker per core: one thread each (and in the
    # subprocesses they start), or the workers' thread pools oversubscribe the cores and every test runs slower
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from support import ROOT
from support.cli import QUIET


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by fixture scope
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (scripts/test.sh: --dist loadfile, so that a module-scoped fixture such as a Slurm
    cluster or the GPU kit's rehearsal is built once, by one worker): the files with a test marked slow go first,
    so that no minutes-long file starts last while the other worker idles (longest first balances workers best).
    The order within a file stays. The workers' order is the one the scheduler follows."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow_files = {i.path for i in items if i.get_closest_marker("slow")}
    items.sort(key=lambda i: i.path not in slow_files)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The embedded demo data (data/demo.py), written once per test session."""
    from gsam.data.demo import write_demo_dataset

    return str(write_demo_dataset(tmp_path_factory.mktemp("demo_data")))


@pytest.fixture(scope="session")
def ddp_ranks(tmp_path_factory):
    """tests/ddp_worker.py under real torchrun (2 gloo processes on the CPU), once per session: what each rank
    saved (the bucketed all-reduce, the analysis, the optimizer scenarios), for test_distributed and
    test_analysis_ddp."""
    import os
    import subprocess
    import sys

    import torch

    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _compose(*overrides: str, return_hydra_config: bool = False, configs=None):
    """configs/config.yaml with ``overrides``, composed by Hydra as train.py does (without running anything);
    ``configs``: another folder of configs (a test's copy) instead of the shipped one."""
    with initialize_config_dir(config_dir=str(configs or ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def compose():
    """``compose(*overrides, return_hydra_config=False, configs=None)``: the shipped configs, composed."""
    return _compose


@pytest.fixture(scope="session")
def demo_config():
    """``demo_config(out, demo_root, *overrides)``: the demo_gsam experiment writing into ``out``, quiet
    (QUIET), with ``overrides`` last so that a test can change any of it."""
    def make(out, demo_root, *overrides):
        return _compose("+experiment=demo_gsam", f"output_dir={out}", f"data.root={demo_root}", *QUIET, *overrides)

    return make
