"""scripts/setup.sh marks itself done only when everything succeeded: a failed FFCV build (apt locked by another
process, say) must be retried by the next run, never marked done and skipped for good. The pip and FFCV steps are stubbed (a copy of the
script in a scratch tree whose .venv/bin/python accepts anything), the script's own logic is the real one."""
import shutil
import subprocess
from pathlib import Path

from support import ROOT


def _tree(tmp_path: Path, ffcv_status: int) -> Path:
    tree = tmp_path / "tree"
    (tree / "scripts" / "gpu").mkdir(parents=True)
    (tree / "constraints").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tree / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tree)
    shutil.copy(ROOT / "constraints" / "cpu-dev.txt", tree / "constraints")
    (tree / "scripts" / "install_ffcv.sh").write_text(f"echo 'E: Could not get lock /var/lib/dpkg/lock'\nexit {ffcv_status}\n")
    (tree / "scripts" / "gpu" / "find_python312.sh").write_text("exit 1\n")  # no rehearsal in this test
    venv = tree / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\nexit 0\n")  # pip install ... 'succeeds' at once
    (venv / "python").chmod(0o755)
    return tree


def _setup(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=tree, capture_output=True, text=True, timeout=60)


def test_a_failed_ffcv_build_is_not_marked_done_and_is_retried(tmp_path):
    tree = _tree(tmp_path, ffcv_status=1)
    first = _setup(tree)
    assert first.returncode == 0, first.stderr
    assert not list((tree / ".venv").glob(".installed-*"))
    assert "setup not marked done: FFCV (exit 1" in first.stderr and "Could not get lock" in first.stderr
    second = _setup(tree)  # tried again, not skipped
    assert "setting up .venv" in second.stderr and "setup not marked done" in second.stderr


def test_a_successful_setup_is_marked_done_and_then_skipped(tmp_path):
    tree = _tree(tmp_path, ffcv_status=0)
    first = _setup(tree)
    assert first.returncode == 0 and "setting up .venv" in first.stderr, first.stderr
    assert len(list((tree / ".venv").glob(".installed-*"))) == 1
    assert _setup(tree).stderr == ""  # nothing to do
