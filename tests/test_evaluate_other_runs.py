"""evaluate.py on a checkpoint that is not this run's own last.pt: its results go to a file named after it; a
checkpoint of another experiment, or of another class count than data.num_classes, is refused."""
import json
import shutil

import pytest

from support.inproc import run_main


@pytest.mark.slow
def test_another_runs_checkpoint_does_not_overwrite_this_runs_results(tmp_path, demo_root):
    mine, other = tmp_path / "mine", tmp_path / "other"
    for out, seed in ((mine, 0), (other, 1)):
        done = run_main("train.py", out, demo_root, "train.max_steps=2", "data.batch_size=64", f"seed={seed}")
        assert done.returncode == 0, done.stderr[-2000:]
    before = (mine / "results.json").read_text()
    done = run_main("evaluate.py", mine, demo_root, f"eval.checkpoint={other / 'checkpoints' / 'last.pt'}", "seed=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (mine / "results.json").read_text() == before
    theirs = json.loads((mine / "results-other-last.json").read_text())
    assert theirs["checkpoint"] == str(other / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_a_checkpoint_of_another_model_or_method_is_refused(tmp_path, demo_root):
    other = tmp_path / "other"
    done = run_main("train.py", other, demo_root, "train.max_steps=1", "data.batch_size=64", "sam=sam", "name=x")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_main("evaluate.py", tmp_path / "mine", demo_root, f"eval.checkpoint={other / 'checkpoints' / 'last.pt'}",
                   "model=demo_mixer")
    assert done.returncode == 2
    line = done.stderr.strip()
    assert line.count("\n") == 0 and "model.name" in line and "method" in line and "another experiment" in line
    assert not (tmp_path / "mine" / "results-other-last.json").exists()


@pytest.mark.slow
def test_a_checkpoint_or_data_whose_class_count_differs_from_data_num_classes_is_refused(tmp_path, demo_root):
    """evaluate.py builds as train.py does: the class count of the checkpoint and of the data folder must both
    be data.num_classes. Before, a data folder with fewer classes than the head was scored without a word."""
    run = tmp_path / "run"
    done = run_main("train.py", run, demo_root, "train.max_steps=1", "data.batch_size=64")
    assert done.returncode == 0, done.stderr[-2000:]
    last = run / "checkpoints" / "last.pt"
    done = run_main("evaluate.py", tmp_path / "twelve", demo_root, f"eval.checkpoint={last}", "data.num_classes=12")
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0 and "data.num_classes=10, not 12" in line and str(last) in line
    eight = tmp_path / "eight_digits"  # the demo data without two of its ten class folders
    shutil.copytree(demo_root, eight, ignore=shutil.ignore_patterns("digit_8", "digit_9"))
    done = run_main("evaluate.py", tmp_path / "eight", eight, f"eval.checkpoint={last}")
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0 and "data.num_classes=10 but the data has 8 classes" in line
    assert not list((tmp_path / "eight").glob("results*")) and not list((tmp_path / "twelve").glob("results*"))
