"""What the trainer does at each step, read back from the files of one short demo run: the ρ it logs is the
schedule's, bf16 autocast trains on the CPU, and its checkpoint is something the analysis can measure."""

import pytest
import torch
import torch.nn.functional as F

import gsam
from gsam import models
from gsam.state.checkpoint import load
from gsam.run.experiment import run
from support.cli import records
from support.nets import assert_same_weights

# 5 GSAM steps of the tiny ViT, each logged: 2 warm-up steps, then the start of the linear decay. One
# perturbation group (sam.m=null) keeps it cheap; the schedule spans the epoch's 1442 // 64 = 22 steps.
SHORT = ["data.batch_size=64", "sam.m=null", "train.max_steps=5", "schedule.epochs=1", "schedule.warmup_steps=2",
         "train.log_every=1"]
STEPS_PER_EPOCH = 1442 // 64


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, demo_root, demo_config):
    """(output dir, config) of the fp32 run, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("short") / "fp32"
    cfg = demo_config(out, demo_root, *SHORT)
    run(cfg)
    return out, cfg


def test_logged_rho_of_each_step_is_the_schedules(short_run):
    """README: ρ_t from the absolute lr (Algorithm 1, step 0). Step s (1-based in metrics.jsonl) ran with
    lr_at(s - 1) and rho_from_lr of that lr, computed here from the config's numbers alone."""
    out, cfg = short_run
    logged = records(out)
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5]
    for r in logged:
        lr = gsam.lr_at(r["step"] - 1, total_steps=STEPS_PER_EPOCH, warmup_steps=2, lr_max=3e-3, lr_min=3e-5)
        rho = gsam.rho_from_lr(lr, lr_max=3e-3, lr_min=3e-5, rho_max=0.05, rho_min=0.01)
        assert r["lr"] == pytest.approx(lr, rel=1e-12)
        assert r["rho"] == pytest.approx(rho, rel=1e-12)
    rhos = [r["rho"] for r in logged]
    # the first warm-up step runs at half the peak lr: ρ interpolates between the (lr_min, ρ_min), (lr_max, ρ_max)
    assert rhos[0] == pytest.approx(0.01 + 0.04 * (1.5e-3 - 3e-5) / (3e-3 - 3e-5), rel=1e-12)
    assert rhos[1] == pytest.approx(0.05, rel=1e-9) and rhos[2] == pytest.approx(0.05, rel=1e-9)
    assert rhos[2] > rhos[3] > rhos[4] > 0.01  # decaying with the lr
    assert (cfg.sam.rho_max, cfg.sam.rho_min, cfg.optimizer.lr, cfg.optimizer.lr_min) == (0.05, 0.01, 3e-3, 3e-5)


def test_bf16_autocast_trains_on_the_cpu(short_run, demo_root, demo_config, tmp_path):
    """train.amp=bf16 (README: bf16 autocast) on the CPU: every step taken and finite, the losses those of the
    fp32 run to bf16's precision but not equal to them (so autocast really ran), the evaluation complete."""
    out32, _ = short_run
    results = run(demo_config(tmp_path, demo_root, *SHORT, "train.amp=bf16"))
    fp32, bf16 = records(out32), records(tmp_path)
    assert [r["step"] for r in bf16] == [1, 2, 3, 4, 5]
    assert not any(r["skipped"] for r in bf16) and bf16[-1]["bad_steps"] == 0
    for a, b in zip(fp32, bf16):
        assert b["loss"] == pytest.approx(a["loss"], abs=0.05)
    assert [r["loss"] for r in bf16] != [r["loss"] for r in fp32]
    assert results["val"]["images"] == 355
    weights = load(tmp_path / "checkpoints" / "last.pt")["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())  # the weights stay fp32


def test_checkpoint_task_measures_the_trainers_checkpoint(short_run, demo_root):
    """gsam.studies.checkpoint_task (the loss-surface and sharpness scripts' input): the run's weights, a seeded
    subset of its training images with the eval transform, and its loss."""
    from torchvision import datasets

    from gsam.studies.checkpoint_task import checkpoint_task
    from gsam.data.folder import eval_transform

    out, cfg = short_run
    path = out / "checkpoints" / "last.pt"
    model, batches, criterion = checkpoint_task(path, images=20, batch_size=8, data_root=demo_root, seed=3)
    saved = load(path)["model"]
    assert_same_weights(model.state_dict(), saved)
    assert [tuple(x.shape) for x, _ in batches] == [(8, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)]
    # the images are the seeded subset of train/, centre-cropped and normalised as for evaluation
    dc = models.model_data_config(model)
    ds = datasets.ImageFolder(f"{demo_root}/train", transform=eval_transform(32, dc["mean"], dc["std"], 1.0))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3))[:20].tolist()
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert y.tolist() == [ds.targets[i] for i in order]
    torch.testing.assert_close(x[0], ds[order[0]][0], rtol=0, atol=1e-6)
    again = checkpoint_task(path, images=20, batch_size=8, data_root=demo_root, seed=3)[1]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # the same images on every call
    model.eval()
    with torch.no_grad():
        assert criterion(model(x), y).item() == pytest.approx(F.cross_entropy(model(x), y).item())  # softmax loss
    assert cfg.model.loss == "softmax"
