"""gsam.run.score in-process (evaluate.py's work, which the CLI tests run in subprocesses): a run's last.pt scored again
gives training's final val; another class count is refused before anything is built; results files are named after
the checkpoint so that nothing overwrites the run's own."""
import json
from pathlib import Path

import pytest

from gsam.config.checks import ConfigError
from gsam.run.experiment import run
from gsam.run.score import results_stem, score_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root, demo_config):
    out = tmp_path_factory.mktemp("scored")
    results = run(demo_config(out, demo_root, "train.max_steps=2", "data.batch_size=32"))
    return out, results


def test_scoring_last_pt_gives_the_final_evaluation_of_training(trained, demo_root, demo_config):
    out, results = trained
    again = score_checkpoint(demo_config(out, demo_root, "train.max_steps=2", "data.batch_size=32"))
    assert again["val"]["top1"] == pytest.approx(results["val"]["top1"]) and again["val"]["images"] == 355
    saved = json.loads((out / "results.json").read_text())
    assert saved["checkpoint"] == str(out / "checkpoints" / "last.pt") and saved["step"] == 2
    assert saved["imagenet"] == pytest.approx(results["val"]["top1"]) and saved["method"] == "gsam"


def test_a_checkpoint_of_another_class_count_is_refused_before_building(trained, demo_root, demo_config):
    out, _ = trained
    with pytest.raises(ConfigError, match=r"was trained with data.num_classes=10, not 12"):
        score_checkpoint(demo_config(out, demo_root, "data.num_classes=12"))


def test_results_are_named_after_the_checkpoint(tmp_path):
    run_dir, other = tmp_path / "mine", tmp_path / "other"
    assert results_stem(run_dir / "checkpoints" / "last.pt", run_dir) == "results"
    assert results_stem(run_dir / "checkpoints" / "top-top1-80.1.pt", run_dir) == "results-top-top1-80.1"
    assert results_stem(other / "checkpoints" / "last.pt", run_dir) == "results-other-last"
    assert results_stem(Path("/ckpts/model.pt"), run_dir) == "results-ckpts-model"
