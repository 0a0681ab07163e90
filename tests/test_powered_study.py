"""The powered study (scripts/studies/powered_study.py, docs/analysis.md §6.4): its teacher-student task (data/teacher.py) is
deterministic, exactly balanced, clean and flip-symmetric, and the memory loader serves it as the folder loader would;
the selection rules (the edge rule, the equal budgets, the alpha stage) on synthetic numbers; the statistics; and the
study end to end at a tiny size through the real trainer."""
import json
import math

import numpy as np
import pytest
import torch

from gsam.data.teacher import (MemoryLoader, TaskSpec, Teacher, read_split, teacher_input, write_teacher_dataset)
from support import load_script
from support.background import job
from support.cli import run_script

TINY = TaskSpec(calibration=2_000)


@pytest.fixture(scope="module")
def study():
    return load_script("studies/powered_study")


def _arrays(root):
    return {s: read_split(root, s) for s in ("train", "minival", "val")}


def test_the_task_is_one_seed_balanced_clean_and_symmetric_under_the_flip(tmp_path):
    root = write_teacher_dataset(tmp_path / "a", train=40, minival=20, val=30, spec=TINY)
    first = _arrays(root)
    again = _arrays(write_teacher_dataset(tmp_path / "b", train=40, minival=20, val=30, spec=TINY))
    bigger = _arrays(write_teacher_dataset(tmp_path / "c", train=60, minival=20, val=30, spec=TINY))
    other = _arrays(write_teacher_dataset(tmp_path / "d", train=40, minival=20, val=30,
                                          spec=TaskSpec(seed=1, calibration=2_000)))
    for s in first:  # the same seed, the same bytes; a split does not depend on another split's size
        assert all(torch.equal(u, v) for u, v in zip(first[s], again[s]))
        assert not torch.equal(first[s][0], other[s][0])
    assert torch.equal(first["val"][0], bigger["val"][0]) and torch.equal(first["minival"][1], bigger["minival"][1])
    for s, n in (("train", 40), ("minival", 20), ("val", 30)):
        x, y = first[s]
        assert x.dtype == torch.uint8 and tuple(x.shape) == (n, 16, 16, 3)
        assert np.bincount(y.numpy(), minlength=10).tolist() == [n // 10] * 10  # exactly balanced
    teacher, offsets = Teacher(TINY), np.array(json.loads((root / "teacher.json").read_text())["offsets"])
    x, y = first["val"]
    pixels = teacher_input(x.numpy())
    for view in (pixels, pixels.flip(-1)):  # every label is the teacher's, on the image and on its mirror image
        assert np.array_equal((teacher.symmetric_scores(view).numpy() - offsets).argmax(1), y.numpy())
    with pytest.raises(ValueError, match=r"data.teacher.val=25: must be a positive multiple of num_classes=10"):
        write_teacher_dataset(tmp_path / "e", train=40, minival=20, val=25, spec=TINY)


def test_the_memory_loader_gives_the_folder_loaders_tensors_and_flips_by_seed_epoch_and_image(tmp_path):
    from PIL import Image

    from gsam.data.folder import eval_transform

    x, y = read_split(write_teacher_dataset(tmp_path, train=40, minival=20, val=30, spec=TINY), "val")
    half = (0.5, 0.5, 0.5)
    evaluation = MemoryLoader(x, y, train=False, batch=16, mean=half, std=half, rank=0, world=1, seed=0)
    xb, yb, idx = next(iter(evaluation))
    pil = eval_transform(16, half, half, crop_pct=1.0)  # the folder loader's eval pipeline on the same pixels
    assert torch.equal(xb, torch.stack([pil(Image.fromarray(x[i].numpy(), mode="RGB")) for i in idx.tolist()]))
    assert torch.equal(yb, y[idx]) and len(evaluation) == 2

    def epoch(start, batch=8):
        loader = MemoryLoader(x, y, train=True, batch=batch, mean=half, std=half, rank=0, world=1, seed=3)
        loader.sampler.set_epoch(2, start_batch=start)
        return [b[0] for b in loader]

    whole, resumed = epoch(0), epoch(1)
    assert len(whole) == 3 and all(torch.equal(a, b) for a, b in zip(whole[1:], resumed))  # a resumed epoch
    assert torch.equal(torch.cat(whole), torch.cat(epoch(0, batch=6))[:24])  # other batches: each image's own flip
    unflipped = MemoryLoader(x, y, train=False, batch=30, mean=half, std=half, rank=0, world=1, seed=0)
    plain = next(iter(unflipped))[0]
    again = MemoryLoader(x, y, train=True, batch=8, mean=half, std=half, rank=0, world=1, seed=3)
    again.sampler.set_epoch(2)
    order = list(again.sampler)
    flipped = [not torch.equal(img, plain[i]) for img, i in zip(torch.cat(whole), order)]
    assert 0 < sum(flipped) < len(flipped)  # some images flipped, some not


def test_an_optimum_at_a_grid_edge_extends_the_grid_and_each_schedule_gets_the_same_runs(study):
    """Synthetic minival top-1 (no training): SAM's optimum above its grid, the decayed schedule's below its grid."""
    def top1(setting):
        r, f = setting["sam.rho_max"], setting["sam.rho_min"] / setting["sam.rho_max"]
        opt = 0.9 if f == 1 else 0.02  # constant rho: above the grid's top 0.4; decayed: below its bottom 0.05
        return 80 - math.log2(r / opt) ** 2 - (0 if f == 1 else 4 * (f - 0.5) ** 2)

    rounds = []

    def evaluate(jobs):
        rounds.append([n for n, _ in jobs])
        return [top1(s) for _, s in jobs]

    done = study.search_rounds({"constant": study.constant_search([0.025, 0.05, 0.1, 0.2, 0.4], 10, 2),
                                "decayed": study.decayed_search([0.05, 0.1, 0.2, 0.4, 0.8], 10, 2)}, evaluate)
    const = [t["setting"]["sam.rho_max"] for t in done["constant"]["tried"]]
    assert const[:7] == [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]  # two extensions up; the optimum is then inside
    below, above = round(math.sqrt(0.8 * 0.4), 6), round(math.sqrt(0.8 * 1.6), 6)
    assert const[7:] == [below, above, round(math.sqrt(0.8 * below), 6)]  # the rest bisects around the best, 0.8
    dec = done["decayed"]["tried"]
    assert [t["setting"]["sam.rho_max"] for t in dec[:7]] == [0.05, 0.1, 0.2, 0.4, 0.8, 0.025, 0.0125]  # down twice
    assert [t["setting"]["sam.rho_min"] for t in dec[7:9]] == [round(0.025 * 0.25, 6), round(0.025 * 0.5, 6)]
    assert len(const) == len(dec) == 10  # the same number of tuning runs for both schedules
    assert all(t["setting"]["sam.alpha"] == 0.0 for t in dec + done["constant"]["tried"])
    assert all(t["setting"]["sam.rho_min"] == t["setting"]["sam.rho_max"] for t in done["constant"]["tried"])
    assert rounds[0] == ["constant"] * 5 + ["decayed"] * 5  # both searches share every round
    assert done["constant"]["setting"]["sam.rho_max"] == max(done["constant"]["tried"], key=lambda t: t["top1"])[
        "setting"]["sam.rho_max"]


def test_the_edge_rule_stops_at_its_cap_and_ties_go_to_the_smaller_value(study):
    assert study.best({0.1: 80.0, 0.2: 81.0, 0.4: 81.0}) == 0.2
    assert study.extension({0.1: 80.0, 0.2: 81.0, 0.4: 81.0}) is None  # the tie is inside
    assert study.extension({0.1: 80.0, 0.2: 79.0}) == 0.05 and study.extension({0.1: 79.0, 0.2: 80.0}) == 0.4
    assert study.bisections({0.1: 79.0, 0.2: 80.0, 0.4: 78.0}, 2) == [round(math.sqrt(0.02), 6),
                                                                     round(math.sqrt(0.08), 6)]
    rising = lambda jobs: [100 * s["sam.rho_max"] for _, s in jobs]  # noqa: E731 (the larger the better: the top edge)
    done = study.search_rounds({"constant": study.constant_search([0.1, 0.2, 0.4], 6, 2)}, rising)
    assert [t["setting"]["sam.rho_max"] for t in done["constant"]["tried"]] == [0.1, 0.2, 0.4, 0.8, 1.6,
                                                                               round(math.sqrt(0.8 * 1.6), 6)]
    assert done["constant"]["setting"]["sam.rho_max"] == 1.6  # still at the edge after the cap: reported as it is


def test_the_ascent_arm_takes_the_best_alpha_above_zero_and_the_report_pairs_by_seed(study):
    schedule = {"sam.rho_max": 0.2, "sam.rho_min": 0.0, "sam.alpha": 0.0}
    def peak(jobs):
        return [80.0 if s["sam.alpha"] == 0.6 else 80 - (s["sam.alpha"] - 0.3) ** 2 for _, s in jobs]

    done = study.search_rounds({"decayed": study.alpha_search(schedule, [0.1, 0.3, 0.6, 1.0])}, peak)
    assert done["decayed"]["setting"] == {**schedule, "sam.alpha": 0.3}  # 0.3 and 0.6 tie at 80: the smaller
    runs = {"a": [{"seed": s, "top1": 70 + s + 1.0 + 0.1 * (s % 2)} for s in range(8)],
            "b": [{"seed": s, "top1": 70 + s} for s in reversed(range(8))]}
    d = study.paired_difference(runs["a"], runs["b"])
    p = study.power([1.0 + 0.1 * (s % 2) for s in range(8)])
    assert d["mean"] == pytest.approx(1.05) and d["wins"] == 8 and p["n"] == 8
    assert p["detectable_80"] == pytest.approx((2.3646 + 0.8960) * p["sd"] / math.sqrt(8), rel=1e-3)
    assert study.verdict(d).startswith("seen")
    assert study.verdict({"mean": 0.2, "ci95": 0.5}).startswith("not resolved: the interval holds 0; it excludes "
                                                                 "effects above +0.70")
    assert study.verdict({"mean": -1.0, "ci95": 0.5}).startswith("contradicted")


@job("tiny_powered_study")
def _tiny_powered_study_run(tmp_path, _demo, _lane):
    """scripts/studies/powered_study.py at a tiny size through the real trainer, as a user runs it."""
    out = tmp_path / "study"
    run_script("scripts/studies/powered_study.py", "--out", str(out), "--jobs", "1", "--seeds", "0", "1", "--rho-grid",
               "0.05", "0.1", "--rho-max-grid", "0.1", "0.2", "--budget", "4", "--extensions", "1", "--alphas", "0.3",
               "--override", "schedule.epochs=1", "schedule.warmup_steps=1", f"data.root={tmp_path / 'data'}",
               "data.teacher.train=520", "data.teacher.minival=100", "data.teacher.val=200",
               "data.teacher.calibration=2000")
    return out


@pytest.fixture(scope="module")
def tiny_powered_study(background):
    return background.result("tiny_powered_study")


@pytest.mark.slow
def test_a_tiny_study_selects_on_minival_and_reports_on_val_through_the_trainer(tiny_powered_study, study):
    out = tiny_powered_study
    info = json.loads((out / "study.json").read_text())
    sel = info["selection"]
    assert len(sel["constant"]["tried"]) == len(sel["decayed"]["tried"]) == 4
    assert all(len(sel[k]["tried"]) == 1 for k in ("constant_alpha", "decayed_alpha"))
    assert set(info["runs"]) == {"vanilla", "const", "const_ascent", "decayed", "decayed_ascent", "decayed_alpha0",
                                 "decayed_alpha0.3"}
    assert info["runs"]["decayed_alpha0.3"] == info["runs"]["decayed_ascent"]  # the same runs, not trained twice
    for k in ("constant", "decayed"):
        assert all(t["top1"] is not None for t in sel[k]["tried"])
    select_runs = list((out / "select").iterdir())
    assert all((d / "config.yaml").read_text().count("val_split: minival") == 1 for d in select_runs if d.is_dir())
    for arm, rs in info["runs"].items():
        assert [r["seed"] for r in rs] == [0, 1] and all(r["images"] == 200 for r in rs)  # reported on val
    assert " - ".join(study.PRIMARY) + " (primary)" in (out / "study.md").read_text()
    assert (out / "study.png").stat().st_size > 0
