"""The efficient variants' frontier (scripts/frontier_study.py): each point's setting follows from the study's
minival choices, its runs are the real trainer's on val, its cost is bench_train's measured ratio, and the share of
GSAM's gain is paired seed by seed."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from support import load_script

frontier = load_script("frontier_study")


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


def test_the_share_of_gsams_gain_is_paired_by_seed_and_the_goal_needs_both_cost_and_share():
    study, args = _study(), _args()
    runs = {m: study["runs"][m] for m in frontier.PARENTS}
    runs["cheap"] = [{"seed": 0, "top1": 78.0}, {"seed": 1, "top1": 77.6}]    # +6.8 of GSAM's +8.0: 85%
    runs["costly"] = [{"seed": 0, "top1": 80.0}, {"seed": 1, "top1": 78.0}]   # all of it, at 1.5x
    runs["weak"] = [{"seed": 0, "top1": 73.0}, {"seed": 1, "top1": 74.0}]     # +2.5: 31%
    cost = {"vanilla": 1.0, "sam": 2.0, "gsam": 2.05, "xsam": 2.3, "cheap": 1.25, "costly": 1.5, "weak": 1.1}
    s = frontier.summarise(runs, cost, args)
    assert s["gsam_gain"] == pytest.approx(8.0)
    cheap = s["points"]["cheap"]
    assert cheap["minus_vanilla"]["mean"] == pytest.approx(6.8) and cheap["share_of_gsam_gain"] == pytest.approx(0.85)
    assert cheap["ci95"] == pytest.approx(12.706 * np.std([78.0, 77.6], ddof=1) / np.sqrt(2), rel=1e-4)
    assert [p for p, r in s["points"].items() if r["goal"]] == ["cheap"]
    table = frontier.markdown(s, {}, {}, args)
    assert "reached by cheap" in table and "| cheap | the study's | 1.25 | 77.80 ± 0.28 |" in table
    assert table.index("| weak |") < table.index("| cheap |") < table.index("| costly |")  # sorted by cost


@pytest.mark.slow
def test_a_tiny_frontier_trains_every_point_on_val_and_measures_its_cost(tmp_path, monkeypatch):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "study.json").write_text(json.dumps(_study()))
    argv = ["frontier_study.py", "--study", str(study_dir), "--ks", "2", "--look-alphas", "0.7", "--mesa-decays",
            "0.99", "--jobs", "1", "--cost-steps", "2", "--cost-rounds", "1", "--override", "schedule.epochs=1",
            "data.batch_size=512", "analysis.batches=1", "analysis.power_iters=3", f"data.root={tmp_path / 'data'}"]
    monkeypatch.setattr(sys, "argv", argv)
    frontier.main()
    out = study_dir / "frontier"
    info = json.loads((out / "frontier.json").read_text())
    assert set(info["runs"]) == {*frontier.PARENTS, "every_k-2", "looksam-2", "lookgsam-2", "mesa"}
    assert all(t["images"] == 285 for c in info["selection"].values() for t in c["tried"])  # chosen on minival
    for p in ("every_k-2", "looksam-2", "lookgsam-2", "mesa"):
        assert [r["seed"] for r in info["runs"][p]] == [0, 1]
        for r in info["runs"][p]:
            assert r["images"] == 355  # reported on val
            cfg = (Path(r["run"]) / "config.yaml").read_text()
            assert f"name: study_{p.split('-')[0]}\n" in cfg and "val_split: val\n" in cfg
        assert 0.5 < info["cost"][p] < 3.0  # bench_train's measured step time over vanilla's
    assert info["cost"]["vanilla"] == 1.0 and info["cost"]["sam"] > 1.0
    assert (out / "frontier.png").stat().st_size > 0 and "| mesa |" in (out / "frontier.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/results.json")}
    frontier.main()  # a second report reuses every finished run
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/results.json")} == stamps
