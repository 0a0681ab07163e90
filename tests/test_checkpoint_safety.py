"""Checkpoints never run code: a crafted last.pt or eval.checkpoint= file is refused in one line, and what the
trainer writes loads with torch.load(weights_only=True)."""
import os

import pytest
import torch

from support.inproc import run_main


class RunsCode:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_line_error(done, *names):
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0, line
    assert all(str(n) in line for n in names), line
    return line


@pytest.mark.slow
def test_a_crafted_last_pt_is_refused_not_run(tmp_path, demo_root):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": {}, "loop": {}, "config": {}, "payload": RunsCode(marker)}, ckpt)
    line = _one_line_error(run_main("train.py", tmp_path / "run", demo_root, "train.max_steps=1"), ckpt)
    assert "refused" in line
    assert not marker.exists()
    assert ckpt.exists()  # the user's file is not deleted


@pytest.mark.slow
def test_a_crafted_eval_checkpoint_is_refused_not_run(tmp_path, demo_root):
    marker, ckpt = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save(RunsCode(marker), ckpt)
    _one_line_error(run_main("evaluate.py", tmp_path / "run", demo_root, f"eval.checkpoint={ckpt}"), ckpt)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("content", [{"weights": torch.zeros(3)}, [1, 2, 3]])
def test_a_file_that_is_not_a_gsam_checkpoint_is_one_line(tmp_path, demo_root, content):
    ckpt = tmp_path / "foreign.pt"
    torch.save(content, ckpt)
    line = _one_line_error(run_main("evaluate.py", tmp_path / "run", demo_root, f"eval.checkpoint={ckpt}"), ckpt)
    assert "not a gsam checkpoint" in line


@pytest.mark.slow
def test_what_the_trainer_writes_loads_with_weights_only(tmp_path, demo_root):
    done = run_main("train.py", tmp_path, demo_root, "train.max_steps=2", "data.batch_size=64")
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["loop"]["step"] == 2 and state["config"]["seed"] == 0
    assert isinstance(state["rng"][0]["numpy"][1], list)  # numpy's key as a list, not an ndarray
    for top in (tmp_path / "checkpoints").glob("top-*.pt"):
        torch.load(top, weights_only=True)
