"""The analysis scripts as a user runs them (scripts/studies/*.py's main with its command line), on the cheapest one: the
2-D toy of GSAM's Fig. 3. What they share (gsam.studies.cli: the run folder, the JSON with its command, the PNG)
is checked on the files written."""
import json
import sys

import numpy as np
import pytest

from support import load_script


@pytest.mark.slow  # 400 steps x 8 runs and a figure: ~10 s
def test_toy_trajectories_writes_its_runs_their_summary_and_the_figure(tmp_path, monkeypatch):
    argv = ["toy_trajectories.py", "--out", str(tmp_path / "toy"), "--steps", "400", "--starts", "2", "--draw", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    load_script("studies/toy_trajectories").main()
    saved = json.loads((tmp_path / "toy" / "toy_trajectories.json").read_text())
    assert saved["meta"]["command"] == " ".join(argv) and saved["steps"] == 400
    runs = saved["runs"]
    assert sorted({r["method"] for r in runs}) == ["GSAM", "SAM", "SGD", "XSAM"] and len(runs) == 8
    for method, counts in saved["summary"].items():  # each start ends in exactly one place
        assert sum(counts.values()) == 2
        assert counts == {k: sum(r["method"] == method and r["ends_in"] == k for r in runs)
                          for k in ("sharp", "flat", "neither")}
    sharp = np.array(saved["wells"][0]["center"])
    for r in runs:  # the recorded distance is the end point's
        assert r["distance_to_sharp_minimum"] == pytest.approx(float(np.linalg.norm(np.array(r["end"]) - sharp)))
    assert saved["summary"]["SGD"]["sharp"] == 2  # plain SGD from next to the sharp well falls into it

    from PIL import Image

    with Image.open(tmp_path / "toy" / "toy_trajectories.png") as png:  # one panel (--draw 1) at 90 dpi
        assert png.size == (round(5.2 * 90), round(4.6 * 90))
