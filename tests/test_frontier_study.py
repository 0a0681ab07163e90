"""The efficient variants' frontier (scripts/studies/frontier_study.py): each point's setting follows from the study's
minival choices, its runs are the real trainer's on val, its cost is bench_train's measured ratio, and the share of
GSAM's gain is paired seed by seed."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from support import TINY_STUDY_OVERRIDES, load_script
from support.background import job
from support.cli import results_stamps, run_script

frontier = load_script("studies/frontier_study")


def _study(seeds=(0, 1), vanilla=(70.0, 72.0), gsam=(80.0, 78.0)) -> dict:
    runs = {"vanilla": [{"seed": s, "top1": t} for s, t in zip(seeds, vanilla)],
            "gsam": [{"seed": s, "top1": t} for s, t in zip(seeds, gsam)],
            "sam": [{"seed": s, "top1": 75.0} for s in seeds], "xsam": [{"seed": s, "top1": 74.0} for s in seeds]}
    settings = {"vanilla": {}, "sam": {"sam.rho_max": 0.1}, "xsam": {"sam.rho_max": 0.05, "sam.rho_probe": 0.1},
                "gsam": {"sam.rho_max": 0.4, "sam.rho_min": 0.0, "sam.alpha": 0.3}}
    return {"seeds": list(seeds), "select_seed": 100, "settings": settings, "runs": runs}


def _args(*argv):
    old = sys.argv
    sys.argv = ["frontier_study.py", *argv]
    try:
        return frontier.parse()
    finally:
        sys.argv = old


def test_every_point_takes_its_parents_choice_on_minival():
    study, args = _study(), _args("--ks", "2", "5")
    grids = frontier.selection_grid(study, args)
    assert grids["looksam"] == [{"sam.rho_max": 0.1, "sam.k": 5, "sam.alpha": a} for a in (0.1, 0.7)]
    assert [g["sam.start_step"] for g in grids["mesa"]] == [6 * 18, 6 * 18]  # the official epoch 6, in steps
    chosen = {"looksam": {"setting": grids["looksam"][1]}, "mesa": {"setting": grids["mesa"][0]}}
    pts = frontier.points(study, chosen, args)
    assert pts["every_k-2"] == ("every_k", {"sam.rho_max": 0.1, "sam.k": 2})  # SAM's rho
    assert pts["looksam-2"] == ("looksam", {"sam.rho_max": 0.1, "sam.k": 2, "sam.alpha": 0.7})
    # LookGSAM: GSAM's rho_max, rho_min and alpha (named gsam_alpha there), LookSAM's reuse alpha
    assert pts["lookgsam-5"] == ("lookgsam", {"sam.rho_max": 0.4, "sam.rho_min": 0.0, "sam.gsam_alpha": 0.3,
                                              "sam.k": 5, "sam.alpha": 0.7})
    assert pts["mesa"] == ("mesa", grids["mesa"][0]) and len(pts) == 6
    assert frontier.bench_spec(*pts["mesa"])["start_step"] == 0  # the KL term is timed, not skipped


def test_the_share_is_of_the_parents_gain_paired_by_seed_with_a_bootstrap_interval_and_decides_the_goal():
    """every_k, LookSAM and MESA against SAM's gain, LookGSAM against GSAM's (docs/analysis.md §6.3), as the ratio of
    the paired mean gains; the goal is judged on the bootstrap interval of the share."""
    seeds, base = (0, 1, 2), (70.0, 72.0, 71.0)
    study, args = _study(seeds, base, gsam=(80.0, 78.0, 79.0)), _args("--boot", "2000")
    runs = {m: study["runs"][m] for m in frontier.PARENTS}  # SAM 75 at every seed: gains 5, 3, 4
    def at(parent, shares):  # a fraction of the parent's gain at each seed
        return [{"seed": s, "top1": b + f * (p - b)} for s, b, p, f in zip(seeds, base, parent, shares)]

    runs["looksam-5"] = at((75.0,) * 3, (0.5,) * 3)            # half of SAM's gain at every seed: 50% every resample
    runs["lookgsam-5"] = at((80.0, 78.0, 79.0), (0.9,) * 3)    # 90% of GSAM's (gains 10, 6, 8), not of SAM's
    runs["every_k-2"] = at((75.0,) * 3, (1.2, 0.2, 0.8))       # gains 6, 0.6, 3.2 of 5, 3, 4: 9.8 / 12
    cost = {"vanilla": 1.0, "sam": 2.0, "gsam": 2.05, "xsam": 2.3, "looksam-5": 1.2, "lookgsam-5": 1.25,
            "every_k-2": 1.3}
    s = frontier.summarise(runs, cost, args)
    look, lookg, every = (s["points"][p]["share_of_parent_gain"] for p in ("looksam-5", "lookgsam-5", "every_k-2"))
    assert (look["parent"], look["share"], look["ci95"]) == ("sam", pytest.approx(0.5), pytest.approx((0.5, 0.5)))
    assert (lookg["parent"], lookg["share"], lookg["ci95"]) == ("gsam", pytest.approx(0.9), pytest.approx((0.9, 0.9)))
    assert every["share"] == pytest.approx(9.8 / 12)  # the ratio of the paired means, not the mean of the ratios
    assert every["ci95"][0] < 0.8 < every["ci95"][1] and every["n"] == 3 and every["undefined"] == 0
    assert {p: r["goal"] for p, r in s["points"].items()} == {
        "vanilla": None, "sam": None, "gsam": None, "xsam": None,
        "looksam-5": "not reached", "lookgsam-5": "reached", "every_k-2": "undecided"}
    assert s["parent_gains"]["sam"]["mean"] == pytest.approx(4.0) and s["parent_gains"]["gsam"]["mean"] == 8.0
    assert frontier.summarise(runs, cost, args) == s  # the bootstrap is seeded
    table = frontier.markdown(s, {}, {}, args)
    assert "| 50% [50%, 50%] of SAM's | not reached |" in table and "90% [90%, 90%] of GSAM's | reached |" in table
    assert "reached by lookgsam-5; undecided for every_k-2" in table
    assert table.index("| looksam-5 |") < table.index("| lookgsam-5 |") < table.index("| every_k-2 |")  # by cost


def test_a_parent_gain_at_or_below_zero_in_a_resample_makes_that_side_unbounded():
    from gsam.studies.study_runs import paired_share

    rows = lambda xs: [{"seed": i, "top1": x} for i, x in enumerate(xs)]
    # the variant gains +1, 0 over the base, the parent +2, -1: share (1 + 0) / (2 - 1) = 1; a resample of seed 1
    # twice (a quarter of them) has no parent gain, one of seed 0 twice a share of 0.5
    share = paired_share(rows([71.0, 70.0]), rows([72.0, 69.0]), rows([70.0, 70.0]), n_boot=500)
    assert share["share"] == pytest.approx(1.0) and share["undefined"] > 0
    assert share["ci95"] == (pytest.approx(0.5), np.inf)


def test_the_report_again_from_a_finished_frontier_json(tmp_path, monkeypatch):
    """--from-json: a finished frontier's runs and cost give the report again (the share against the parent), nothing
    trained."""
    seeds, base = (0, 1), (70.0, 72.0)
    study = _study(seeds, base)
    runs = {m: study["runs"][m] for m in frontier.PARENTS}
    runs["mesa"] = [{"seed": s, "top1": b + 2.0} for s, b in zip(seeds, base)]  # SAM's gains 5 and 3: 2 of 4
    info = {"seeds": list(seeds), "runs": runs, "settings": study["settings"], "selection": {},
            "cost": {"vanilla": 1.0, "sam": 2.0, "gsam": 2.05, "xsam": 2.3, "mesa": 1.4}}
    (tmp_path / "frontier.json").write_text(json.dumps(info))
    monkeypatch.setattr(sys, "argv", ["frontier_study.py", "--from-json", str(tmp_path / "frontier.json"),
                                      "--boot", "200"])
    frontier.main()
    written = json.loads((tmp_path / "frontier.json").read_text())
    assert written["summary"]["points"]["mesa"]["share_of_parent_gain"]["share"] == pytest.approx(0.5)
    assert written["runs"] == runs and (tmp_path / "frontier.png").stat().st_size > 0
    assert "| mesa | the study's | 1.40 |" in (tmp_path / "frontier.md").read_text()


@job("tiny_frontier")
def _tiny_frontier_run(_folder, _demo, lane):
    """frontier_study.py on the session's tiny study (its choices, its parent runs, its data), as a user runs it after
    the study, then once more: what the first run wrote, and the results.json stamps after each."""
    study_dir, data, _, _ = lane.result("tiny_study")
    argv = ["--study", str(study_dir), "--ks", "2", "--look-alphas", "0.7", "--mesa-decays", "0.99", "--jobs", "1",
            "--cost-steps", "2", "--cost-rounds", "1", "--override", *TINY_STUDY_OVERRIDES, f"data.root={data}"]
    out, written, stamps = study_dir / "frontier", None, []
    for _ in range(2):
        run_script("scripts/studies/frontier_study.py", *argv)
        written = written or {f: (out / f).read_text() for f in ("frontier.json", "frontier.md")}
        stamps.append(results_stamps(out))
    return out, written, stamps


@pytest.fixture(scope="module")
def tiny_frontier(tiny_study, background):
    return background.result("tiny_frontier")


@pytest.mark.slow
def test_a_tiny_frontier_trains_every_point_on_val_and_measures_its_cost(tiny_frontier):
    """On the session's tiny study (its choices, its parent runs, its data), as a user runs it after the study."""
    out, written, (stamps, stamps_again) = tiny_frontier
    info = json.loads(written["frontier.json"])
    assert set(info["runs"]) == {*frontier.PARENTS, "every_k-2", "looksam-2", "lookgsam-2", "mesa"}
    assert all(t["images"] == 285 for c in info["selection"].values() for t in c["tried"])  # chosen on minival
    for p in ("every_k-2", "looksam-2", "lookgsam-2", "mesa"):
        assert [r["seed"] for r in info["runs"][p]] == [0, 1]
        for r in info["runs"][p]:
            assert r["images"] == 355  # reported on val
            cfg = (Path(r["run"]) / "config.yaml").read_text()
            assert f"name: study_{p.split('-')[0]}\n" in cfg and "val_split: val\n" in cfg
        # bench_train's measured step time over vanilla's: a measurement, so a loose bound (3.1 was seen under load)
        assert 0.2 < info["cost"][p] < 10.0
    assert info["cost"]["vanilla"] == 1.0 and info["cost"]["sam"] > 1.0
    assert (out / "frontier.png").stat().st_size > 0 and "| mesa |" in written["frontier.md"]
    assert len(stamps) == 10 and stamps_again == stamps  # a second report reused every finished run
