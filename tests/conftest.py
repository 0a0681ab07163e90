"""Fixtures shared by the whole suite: the demo data, the Hydra composition of the shipped configs, and the background
lane (support.background) that starts the programs behind the selected slow fixtures when the session starts.
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
from support.background import JOBS, Lane, job
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
_LANES: list[Lane] = []  # the session's background lane (the `background` fixture)


def pytest_runtest_logreport(report):
    entry = _seconds.setdefault(report.nodeid, [0.0, "slow" in report.keywords])
    entry[0] += report.duration


def pytest_terminal_summary(terminalreporter):
    """A report to read, never a failure (a timing on a shared machine cannot fail a build): each test outside the
    slow tier that took over UNMARKED_LIMIT_S, one line each, the fast tier's total against its budget, and the wall
    time of each background job (support.background), which no test's duration shows."""
    fast = {k: s for k, (s, slow) in _seconds.items() if not slow}
    if not fast and not _LANES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("test time guard")
    for nodeid, s in sorted(fast.items(), key=lambda kv: -kv[1]):
        if s > UNMARKED_LIMIT_S:
            write(f"not marked slow and over {UNMARKED_LIMIT_S} s: {nodeid} ({s:.1f} s)")
    total = sum(fast.values())
    write(f"fast tier (not marked slow): {len(fast)} tests, {total:.0f} s of its {FAST_BUDGET_S} s budget"
          + (" - OVER" if total > FAST_BUDGET_S else ""))
    for lane in _LANES:  # the background jobs' time is no test's: shown here, so that its growth shows too
        for name, s in lane.seconds.items():
            write(f"background job {name}: {s:.1f} s (beside the tests)")


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


@job("ddp_ranks")
def _ddp_ranks_run(out, _demo, _lane):
    """tests/ddp_worker.py under real torchrun (2 gloo processes on the CPU)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def ddp_ranks(background):
    """What each rank of tests/ddp_worker.py saved, once per session (the bucketed all-reduce, the analysis, the
    optimizer scenarios, BatchNorm's running statistics), for test_distributed, test_analysis_ddp and test_bn_stats."""
    out = background.result("ddp_ranks")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory):
    """support.background's lane: the programs behind the selected tests' slow fixtures, started now, one after
    another in the order of their first test (ties: registration order), while the tests run."""
    lane = Lane(tmp_path_factory.mktemp, lambda: request.getfixturevalue("demo_root"), request.session.items)
    _LANES.append(lane)
    first: dict[str, int] = {}
    for i, item in enumerate(request.session.items):
        for name in JOBS.keys() & set(item.fixturenames):
            first.setdefault(name, i)
    order = list(JOBS)
    for name in sorted(first, key=lambda n: (first[n], order.index(n))):
        lane.start(name)
    yield lane
    lane.close()


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


@job("tiny_study")
def _tiny_study_run(root, _demo, _lane):
    """scripts/studies/small_scale_study.py at a tiny size through the real trainer, as a user runs it (--jobs 1: every
    run in the study's process), then once more: the second report must reuse every finished run."""
    from support import TINY_STUDY_OVERRIDES
    from support.cli import results_stamps, run_script

    out, data = root / "study", root / "data"
    argv = ["small_scale_study.py", "--out", str(out), "--jobs", "1", "--seeds", "0", "1", "--rhos", "0.05", "0.1",
            "--alphas", "0.1", "0.3", "--gsam-rho-alpha", "0.1", "--override", *TINY_STUDY_OVERRIDES, f"data.root={data}"]
    stamps = []
    for _ in range(2):
        run_script(f"scripts/studies/{argv[0]}", *argv[1:])
        stamps.append(results_stamps(out))
    return out, data, argv, stamps


@pytest.fixture(scope="session")
def tiny_study(background):
    """The tiny study's folder (study.json, every run), its data, its command line and the results.json stamps after
    its first and its second report: for test_small_scale_study and for the tiny frontier built on it
    (test_frontier_study), which reuses both rather than writing data and parent numbers of its own."""
    from support import load_script

    return (load_script("studies/small_scale_study"), *background.result("tiny_study"))
