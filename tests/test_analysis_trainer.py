"""The trainer hook analysis.every_n_epochs: sigma_max and h logged as kind "analysis", training unchanged."""
import pytest

from gsam.state.checkpoint import load
from gsam.run.experiment import run
from support.cli import records, train_losses
from support.nets import assert_same_weights


@pytest.mark.slow
def test_hook_logs_sharpness_every_epoch_and_leaves_the_run_bit_for_bit(tmp_path, demo_root, demo_config):
    common = ["model=demo_mixer", "schedule.epochs=2", "data.batch_size=512", "train.log_every=1",
              "analysis.batches=1", "analysis.power_iters=5"]
    run(demo_config(tmp_path / "off", demo_root, *common))
    run(demo_config(tmp_path / "on", demo_root, *common, "analysis.every_n_epochs=1"))
    analysis = records(tmp_path / "on", "analysis")
    assert [r["epoch"] for r in analysis] == [1, 2]
    steps_per_epoch = 1442 // 512
    assert [r["step"] for r in analysis] == [steps_per_epoch, 2 * steps_per_epoch]
    for r in analysis:
        assert r["sigma_max"] > 0 and r["power_iters"] <= 5 and r["rho"] == pytest.approx(0.05)
        assert r["surrogate_gap"] == pytest.approx(r["perturbed_loss"] - r["loss"], rel=1e-6)
        assert r["sharpness"] == pytest.approx(2 * r["surrogate_gap"] / 0.05**2, rel=1e-6)
    assert records(tmp_path / "off", "analysis") == []
    # measuring moves nothing: weights, BN statistics and the random streams are those of the run without it
    a, b = load(tmp_path / "off" / "checkpoints" / "last.pt"), load(tmp_path / "on" / "checkpoints" / "last.pt")
    assert_same_weights(a["model"], b["model"])
    assert train_losses(tmp_path / "off") == train_losses(tmp_path / "on")


def test_bad_analysis_settings_are_clear_errors(tmp_path, demo_root, demo_config):
    with pytest.raises(ValueError, match="analysis.every_n_epochs"):
        run(demo_config(tmp_path, demo_root, "analysis.every_n_epochs=-1", "train.max_steps=1"))
    with pytest.raises(ValueError, match="analysis.batches"):
        run(demo_config(tmp_path, demo_root, "analysis.every_n_epochs=1", "analysis.batches=0", "train.max_steps=1"))
