"""scripts/setup.sh marks itself done only when everything succeeded: a failed FFCV build (apt locked by another
process, say) must be retried by the next run, never marked done and skipped for good. The packages are installed
once per machine into a base venv in the cache and each checkout's .venv links them. Python, pip and the FFCV step
are stubbed (a copy of the script in a scratch tree; the stub python makes a venv's layout and accepts anything
else), the script's own logic is the real one."""
import os
import shutil
import subprocess
from pathlib import Path

from support import ROOT

STUB_PYTHON = """#!/bin/sh
# `-m venv [--without-pip] DIR`: DIR's layout with this stub as its python; anything else (pip, -VV) succeeds
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    shift 2; [ "$1" = "--without-pip" ] && shift
    mkdir -p "$1/bin" "$1/lib/python3.11/site-packages"; cp "$0" "$1/bin/python"
fi
exit 0
"""


def _tree(tmp_path: Path, ffcv_status: int, name: str = "tree") -> Path:
    tree = tmp_path / name
    (tree / "scripts" / "gpu").mkdir(parents=True)
    (tree / "constraints").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tree / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tree)
    shutil.copy(ROOT / "constraints" / "cpu-dev.txt", tree / "constraints")
    (tree / "scripts" / "install_ffcv.sh").write_text(f"echo 'E: Could not get lock /var/lib/dpkg/lock'\nexit {ffcv_status}\n")
    (tree / "scripts" / "gpu" / "find_python312.sh").write_text("exit 1\n")  # no rehearsal in this test
    python = tmp_path / "python3"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    return tree


def _setup(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": str(tree.parent / "python3"), "GSAM_CACHE": str(tree.parent / "cache")}
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=tree, env=env, capture_output=True, text=True, timeout=60)


def test_a_failed_ffcv_build_is_not_marked_done_and_is_retried(tmp_path):
    tree = _tree(tmp_path, ffcv_status=1)
    first = _setup(tree)
    assert first.returncode == 0, first.stderr
    assert not list((tree / ".venv").glob(".installed-*"))
    assert "setup not marked done: FFCV (exit 1" in first.stderr and "Could not get lock" in first.stderr
    assert (tree / ".venv" / "bin" / "python").exists()  # the folder loader works meanwhile
    second = _setup(tree)  # tried again, not skipped
    assert "setting up .venv" in second.stderr and "setup not marked done" in second.stderr


def test_a_successful_setup_is_marked_done_and_then_skipped(tmp_path):
    tree = _tree(tmp_path, ffcv_status=0)
    first = _setup(tree)
    assert first.returncode == 0 and "setting up .venv" in first.stderr, first.stderr
    assert len(list((tree / ".venv").glob(".installed-*"))) == 1
    assert _setup(tree).stderr == ""  # nothing to do


def test_a_second_checkout_links_the_base_instead_of_installing_again(tmp_path):
    """The base is built once; a second clone's .venv holds the same files (hard links, no copy, no install) and
    the base's commands run with the clone's own python; an older base leaves the cache."""
    first = _tree(tmp_path, ffcv_status=0)
    assert _setup(first).returncode == 0
    (base,) = (p for p in (tmp_path / "cache").glob("venv-cpu-*") if p.is_dir())
    installed = base / "lib" / "python3.11" / "site-packages" / "torch" / "__init__.py"  # as pip would have put it
    installed.parent.mkdir()
    installed.write_text("")
    (base / "bin" / "torchrun").write_text(f"#!{base}/bin/python\nimport sys\n")
    older = tmp_path / "cache" / "venv-cpu-0123456789abcdef"  # a base of an earlier pyproject.toml
    (older / "bin").mkdir(parents=True)
    second = _tree(tmp_path, ffcv_status=0, name="clone")
    res = _setup(second)
    assert not older.exists() and base.exists()  # one base per machine: the cache does not grow with every key
    assert res.returncode == 0 and res.stderr == "", res.stderr
    linked = second / ".venv" / "lib" / "python3.11" / "site-packages" / "torch" / "__init__.py"
    assert linked.stat().st_ino == installed.stat().st_ino
    assert (second / ".venv" / "bin" / "torchrun").read_text() == f"#!{second}/.venv/bin/python\nimport sys\n"
    assert len(list((second / ".venv").glob(".installed-*"))) == 1
