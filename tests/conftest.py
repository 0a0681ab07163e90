"""Fixtures shared by the whole suite: the demo data and the Hydra composition of the shipped configs.
Plain helper code (models, reference computations, train.py as a subprocess) lives in the ``support`` package."""
from __future__ import annotations

import copy
import functools
import os

import pytest

# One torch thread in every test and in every process a test starts (the environment is inherited), set once here
# and in scripts/test.sh: on 2 cores with anything else running, 2 intra-op threads make small trainings 2.5-19x
# slower, and the results of a training (the thresholds of the accuracy tests) must not depend on the machine's core
# count. ``_one_thread`` checks that no test leaves another count behind for the tests after it.
THREADS = int(os.environ.get("GSAM_TEST_THREADS", "1"))  # 2: the check that a verdict holds at 2 threads too
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402 - after the environment above, which torch reads when it starts its pool

torch.set_num_threads(THREADS)

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from support import ROOT
from support.cli import QUIET


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with THREADS torch threads, and a test (or the library code it calls) that changes the
    count fails here rather than changing the results of the tests that run after it."""
    torch.set_num_threads(THREADS)
    yield
    assert torch.get_num_threads() == THREADS, f"the test left torch at {torch.get_num_threads()} threads"


FAST_BUDGET_S = 90  # the `--fast` tier's budget (scripts/test.sh --fast)
UNMARKED_LIMIT_S = 10  # a test over this belongs in the slow tier, or should get cheaper
_seconds: dict[str, list] = {}  # nodeid -> [seconds of setup + call + teardown, marked slow]


def pytest_runtest_logreport(report):
    entry = _seconds.setdefault(report.nodeid, [0.0, "slow" in report.keywords])
    entry[0] += report.duration


def pytest_terminal_summary(terminalreporter):
    """A report to read, never a failure (a timing on a shared machine cannot fail a build): each test outside the
    slow tier that took over UNMARKED_LIMIT_S, one line each, and the fast tier's total against its budget."""
    fast = {k: s for k, (s, slow) in _seconds.items() if not slow}
    if not fast:
        return
    write = terminalreporter.write_line
    terminalreporter.section("test time guard")
    for nodeid, s in sorted(fast.items(), key=lambda kv: -kv[1]):
        if s > UNMARKED_LIMIT_S:
            write(f"not marked slow and over {UNMARKED_LIMIT_S} s: {nodeid} ({s:.1f} s)")
    total = sum(fast.values())
    write(f"fast tier (not marked slow): {len(fast)} tests, {total:.0f} s of its {FAST_BUDGET_S} s budget"
          + (" - OVER" if total > FAST_BUDGET_S else ""))


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The embedded demo data (data/demo.py), written once per test session."""
    from gsam.data.demo import write_demo_dataset

    return str(write_demo_dataset(tmp_path_factory.mktemp("demo_data")))


@pytest.fixture(scope="session")
def demo_betons(demo_root, tmp_path_factory):
    """The demo data's train and val betons, as data.loader=ffcv writes them on first use, once per session (tests
    that damage a beton copy it first)."""
    from pathlib import Path

    from gsam.data.build import _write_demo_betons

    out = tmp_path_factory.mktemp("demo_betons")
    _write_demo_betons(Path(demo_root), out)
    return out


@pytest.fixture(scope="session")
def ddp_ranks(tmp_path_factory):
    """tests/ddp_worker.py under real torchrun (2 gloo processes on the CPU), once per session: what each rank
    saved (the bucketed all-reduce, the analysis, the optimizer scenarios, BatchNorm's running statistics), for
    test_distributed, test_analysis_ddp and test_bn_stats."""
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
    ``configs``: another folder of configs (a test's copy) instead of the shipped one. The shipped configs'
    compositions are made once per session (a composition reads some 40 YAML files: 0.2 s) and each caller gets
    its own copy to change."""
    if configs is not None:
        return _compose_now(overrides, return_hydra_config, str(configs))
    return copy.deepcopy(_compose_shipped(tuple(overrides), return_hydra_config))


@functools.lru_cache(maxsize=None)
def _compose_shipped(overrides: tuple, return_hydra_config: bool):
    return _compose_now(overrides, return_hydra_config, str(ROOT / "configs"))


def _compose_now(overrides, return_hydra_config: bool, config_dir: str):
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
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


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """scripts/studies/small_scale_study.py at a tiny size through the real trainer, once per session: its folder (study.json,
    every run) and its data, for test_small_scale_study and for the tiny frontier built on it (test_frontier_study),
    which reuses both rather than writing data and parent numbers of its own."""
    import sys

    from support import TINY_STUDY_OVERRIDES, load_script

    study = load_script("studies/small_scale_study")
    root = tmp_path_factory.mktemp("tiny_study")
    out, data = root / "study", root / "data"
    argv = ["small_scale_study.py", "--out", str(out), "--jobs", "1", "--seeds", "0", "1", "--rhos", "0.05", "0.1",
            "--alphas", "0.1", "0.3", "--gsam-rho-alpha", "0.1", "--override", *TINY_STUDY_OVERRIDES, f"data.root={data}"]
    saved = sys.argv
    sys.argv = argv
    try:
        study.main()
    finally:
        sys.argv = saved
    return study, out, data, argv
