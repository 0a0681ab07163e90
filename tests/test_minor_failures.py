"""Small failures, each a clear line or a fix: periods of 0 or below, AdamW betas of
the wrong length, GSAM's alpha >= 1, a single signal name, the signals a run stops on, and checkpoints that do
not fit the model, lack their step or carry a non-finite optimizer state."""
import signal

import pytest
import torch

from gsam.state.checkpoint import CheckpointError, load, load_weights
from gsam.config.checks import ConfigError, check
from gsam.state.preemption import Preemption


@pytest.mark.parametrize("value", [0, -10])
def test_a_checkpoint_period_of_zero_or_below_is_refused(compose, value):
    with pytest.raises(ConfigError, match=rf"train.checkpoint_every_steps={value}: expected an integer >= 1"):
        check(compose(f"train.checkpoint_every_steps={value}"))


def test_adamw_betas_of_the_wrong_length_are_one_line(compose):
    with pytest.raises(ConfigError, match=r"optimizer.betas=.*expected two numbers in \[0, 1\)"):
        check(compose("optimizer=adamw", "optimizer.betas=[0.9]"))


def test_gsam_alpha_of_one_or_more_is_said(compose):
    with pytest.warns(UserWarning, match=r"sam.alpha=1.5 >= 1"):
        check(compose("sam=gsam", "sam.alpha=1.5"))


def test_a_single_signal_name_is_that_signal_and_the_defaults_cover_usr1_and_hup(compose):
    assert Preemption("USR2", torch.device("cpu")).signals == [signal.SIGUSR2]
    defaults = Preemption(compose().train.preempt_signals, torch.device("cpu")).signals
    assert {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP} <= set(defaults)


def _checkpoint(path, **changes):
    model = torch.nn.Linear(3, 2)
    state = {"model": model.state_dict(), "loop": {"step": 5, "epoch": 0, "batch_in_epoch": 5}, "config": {},
             "optimizer": {"state": {0: {"exp_avg": torch.zeros(2, 3)}}, "param_groups": []}, **changes}
    torch.save(state, path)
    return path


def test_a_checkpoint_of_another_shape_is_one_line_naming_it(tmp_path):
    path = _checkpoint(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} does not fit this model \(size mismatch for "
                                              r"weight.*and 1 more\)") as e:
        load_weights(torch.nn.Linear(3, 4), load(path)["model"], path)
    assert "\n" not in str(e.value)


def test_a_checkpoint_whose_loop_has_no_step_is_refused(tmp_path):
    path = _checkpoint(tmp_path / "last.pt", loop={"epoch": 1, "batch_in_epoch": 0})
    with pytest.raises(CheckpointError, match=r"loop position has no integer step"):
        load(path)


def test_a_checkpoint_with_a_nan_optimizer_state_is_refused(tmp_path):
    nan = {"state": {0: {"exp_avg": torch.full((2, 3), float("nan"))}}, "param_groups": []}
    path = _checkpoint(tmp_path / "last.pt", optimizer=nan)
    with pytest.raises(CheckpointError, match=r"optimizer state is not finite"):
        load(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "under_a_file", "dangling_link"])
def test_an_output_dir_that_cannot_be_a_folder_is_one_line_and_left_alone(tmp_path, kind):
    """Hydra makes output_dir before the trainer runs: a file, a path under a file or a link to nothing there is
    refused first, in one line naming it, and the file or link is left as it was."""
    from support.inproc import run_main

    target = tmp_path / "occupied"
    if kind == "dangling_link":
        target.symlink_to(tmp_path / "nowhere")
    else:
        target.write_text("a user's file")
    out = target / "run" if kind == "under_a_file" else target
    done = run_main("train.py", out, tmp_path / "no_data")
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: output_dir={out}"), line
    assert (target.is_symlink() and not target.exists()) if kind == "dangling_link" else \
        target.read_text() == "a user's file"
