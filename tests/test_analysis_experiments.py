"""The small experiments behind docs/analysis.md: their qualitative results, asserted where robust."""
import json
import math

import pytest
import torch

from gsam.analysis import surrogate_gap
from gsam.studies.synthetic import teacher_task, train_full_batch
from gsam.studies.toy import sharp_and_flat, trajectory
from gsam.studies.stats import epoch_means, strictly_decreasing, window_mean
from gsam.studies.trainer_runs import find_alpha_runs, logged, run_dir, train_alpha_runs
from support.cli import QUIET, train_beside


def final_gap(alpha, seed=1, rho=0.1):
    model, batches, criterion = teacher_task(seed)
    train_full_batch(model, batches, criterion, {"name": "gsam", "rho_max": rho, "alpha": alpha}, steps=400)
    return surrogate_gap(model, criterion, batches, rho).surrogate_gap


def test_larger_alpha_gives_a_smaller_surrogate_gap_fig9():
    """Fig. 9 / Thm 5.3 on the noise-free synthetic task (full batch, float64: deterministic). The strict
    ordering held for 5 of seeds 0-5 (seed 0 swaps alpha 0.1 and 0.2); alpha 0.3 < alpha 0 for all 6.
    On the small MLP of the analysis demo task it does not hold (docs/analysis.md)."""
    gaps = [final_gap(a) for a in (0.0, 0.1, 0.2, 0.3)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 0.95 * gaps[0]  # a real difference (~11%), not a tie broken by rounding


SEED_FIG9_TRAINER = 0


@pytest.mark.slow
def test_larger_alpha_gives_a_smaller_logged_gap_in_the_demo_trainer_fig9(tmp_path, demo_root):
    """Fig. 9 as the paper measures it: the per-step minibatch gap h the trainer logs, in the shipped
    demo run (demo_gsam: tiny ViT, AdamW, rho 0.05 -> 0.01), shortened to 3 epochs (the ordering already holds
    there; 10 epochs gave 7.5% between alpha 0 and 0.3, 2026-11-27). Its mean over the run is strictly decreasing
    in alpha for this seed; the seeds tried are in docs/analysis.md."""
    alphas = (0.0, 0.1, 0.2, 0.3)
    shortened = ["schedule.epochs=3", "train.eval_every_epochs=3"]
    # the last two alphas train in processes of their own meanwhile; train_alpha_runs then finds them finished
    waits = [train_beside(run_dir(tmp_path, SEED_FIG9_TRAINER, a), demo_root, *shortened, f"sam.alpha={a}",
                          f"seed={SEED_FIG9_TRAINER}") for a in alphas[2:]]
    overrides = [f"data.root={demo_root}", *QUIET, *shortened]
    train_alpha_runs("demo_gsam", tmp_path, alphas[:2], [SEED_FIG9_TRAINER], overrides)
    for wait in waits:
        wait()
    runs = train_alpha_runs("demo_gsam", tmp_path, alphas, [SEED_FIG9_TRAINER], overrides)
    logs = [logged(runs[(SEED_FIG9_TRAINER, a)]) for a in alphas]
    assert all(len(steps) == 33 for steps, _, _ in logs)  # 3 epochs of 11 steps, each logged once
    means = [window_mean(h) for _, h, _ in logs]
    assert strictly_decreasing(means), means
    # a real effect, not a tie broken by noise: 8.8% at 3 epochs, seed 0, 1 and 2 torch threads alike (2026-12-07:
    # 0.05407 / 0.0526 / 0.05085 / 0.0493)
    assert means[-1] < 0.95 * means[0], means


def test_trainer_runs_summaries(tmp_path):
    rec = lambda step, h, epoch: json.dumps({"kind": "train", "step": step, "surrogate_gap": h, "epoch": epoch})
    # a run resumed after step 2 logs steps 2 and 3 again: each step counts once, the last record wins
    lines = [rec(1, 0.1, 0), rec(2, 0.2, 0), rec(3, 9.0, 1), json.dumps({"kind": "val", "step": 3}),
             rec(2, 0.2, 0), rec(3, 0.4, 1), rec(4, 0.6, 1)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    steps, h, epochs = logged(tmp_path)
    assert steps == [1, 2, 3, 4] and h == [0.1, 0.2, 0.4, 0.6] and epochs == [0, 0, 1, 1]
    assert epoch_means(h, epochs) == ([0, 1], [pytest.approx(0.15), pytest.approx(0.5)])
    with pytest.raises(ValueError, match="no training records"):
        logged(tmp_path, key="sharpness")
    with pytest.raises(FileNotFoundError, match="trainer run folder"):
        logged(tmp_path / "nowhere")
    assert window_mean([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2 / 3) == 5.5
    assert window_mean([1.0, 2.0, 3.0]) == 2.0
    with pytest.raises(ValueError, match="start < end"):
        window_mean([1.0], 0.5, 0.5)
    assert strictly_decreasing([3, 2, 1]) and not strictly_decreasing([3, 3, 1])


@pytest.mark.slow  # 4,000 optimizer steps on the 2-D toy: ~10 s
def test_toy_sgd_falls_into_the_sharp_well_xsam_reaches_the_flat_one_sam_gsam_stall():
    """From a start 0.2 from the sharp minimum (its gradient points into it): SGD converges there, XSAM
    (explicit search of the ascent direction) reaches the flat minimum, and SAM and GSAM stop where
    the perturbed point w + rho g/||g|| sits at the sharp minimum (grad f(w_adv) = 0, a SAM fixed
    point): at distance rho from it. Held for all 8 starts around the circle at rho 0.35 and 0.5."""
    fn = sharp_and_flat()
    sharp = torch.tensor(fn.wells[0].center, dtype=torch.float64)
    rho = 0.35
    start = (0.5 + 0.2 * math.cos(math.pi / 4), 0.4 + 0.2 * math.sin(math.pi / 4))
    methods = {"sgd": {"name": "none"}, "sam": {"name": "sam", "rho_max": rho},
               "gsam": {"name": "gsam", "rho_max": rho, "alpha": 0.3},
               "xsam": {"name": "xsam", "rho_max": rho, "rho_probe": 2 * rho, "search_every": 1}}
    ends = {name: trajectory(fn, start, m, lr=0.01, steps=1000)[-1] for name, m in methods.items()}
    assert fn.well_of(ends["sgd"].tolist()) == 0
    assert fn.well_of(ends["xsam"].tolist(), within=0.5) == 1
    for name in ("sam", "gsam"):
        assert fn.well_of(ends[name].tolist()) == -1
        assert (ends[name] - sharp).norm().item() == pytest.approx(rho, abs=0.01)


def test_find_alpha_runs_reads_existing_runs_and_refuses_a_mixed_set(tmp_path):
    from omegaconf import OmegaConf

    def run(name, **changes):
        cfg = {"seed": 0, "name": name, "output_dir": str(tmp_path / name), "train": {"progress": True},
               "sam": {"name": "gsam", "alpha": 0.0, "rho_max": 0.05}, "optimizer": {"lr": 0.003}}
        for key, value in changes.items():
            section, field = key.split("__") if "__" in key else (None, key)
            (cfg[section] if section else cfg)[field] = value
        (tmp_path / name).mkdir()
        OmegaConf.save(OmegaConf.create(cfg), tmp_path / name / "config.yaml")
        return tmp_path / name

    a = run("a")
    b = run("b", sam__alpha=0.2, train__progress=False)  # the progress bar cannot change the numbers
    c = run("c", seed=1, sam__alpha=0.2)
    assert find_alpha_runs([a, b, c]) == {(0, 0.0): a, (0, 0.2): b, (1, 0.2): c}
    d = run("d", sam__alpha=0.3, optimizer__lr=0.01)
    with pytest.raises(ValueError, match="differ in optimizer.lr"):
        find_alpha_runs([a, d])
    with pytest.raises(ValueError, match="both seed 0, alpha 0.0"):
        find_alpha_runs([a, run("e")])
    e = run("f", sam={"name": "sam", "rho_max": 0.05})
    with pytest.raises(ValueError, match="has no alpha"):
        find_alpha_runs([e])
