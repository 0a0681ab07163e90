"""The small-scale study (scripts/studies/small_scale_study.py) and its data: the label noise of data/demo.py, the clean
minival it picks hyper-parameters on, and the study itself at a tiny size through the real trainer."""
import json
from pathlib import Path

import numpy as np
import pytest

from gsam.data.demo import noisy_targets, write_demo_dataset


def test_noisy_targets_flips_the_share_asked_and_never_to_the_true_class():
    targets = np.arange(1000) % 10
    noisy = noisy_targets(targets, 0.4, seed=0)
    flipped = noisy != targets
    assert flipped.sum() == 400  # exactly round(0.4 n): a flip can never land on the true class
    assert set(noisy[flipped].tolist()) == set(range(10))  # every wrong class is reachable
    assert np.array_equal(noisy, noisy_targets(targets, 0.4, seed=0))  # one fixed draw per noise seed
    assert not np.array_equal(noisy, noisy_targets(targets, 0.4, seed=1))
    with pytest.raises(ValueError, match="label_noise"):
        noisy_targets(targets, 1.0, seed=0)


def _files(root: Path, split: str) -> dict[str, int]:
    """file name -> the class folder it is filed under."""
    return {p.name: int(p.parent.name.removeprefix("digit_")) for p in (root / split).glob("*/*.JPEG")}


def test_study_data_is_noisy_in_train_only_and_a_clean_rewrite_leaves_no_stale_file(tmp_path):
    from sklearn.datasets import load_digits

    true = load_digits().target
    root = write_demo_dataset(tmp_path / "d", image_size=8, label_noise=0.4, minival=True)
    train, minival, val = (_files(root, s) for s in ("train", "minival", "val"))
    assert (len(train), len(minival), len(val)) == (1157, 285, 355)  # val as the demo's; minival 20% of its train
    true_of = {f: int(true[int(f[7:12])]) for f in {**train, **minival, **val}}
    assert all(minival[f] == true_of[f] for f in minival) and all(val[f] == true_of[f] for f in val)
    wrong = {f for f in train if train[f] != true_of[f]}
    assert len(wrong) == round(0.4 * 1157)
    listed = json.loads((root / "noisy_labels.json").read_text())
    assert {r["file"] for r in listed} == wrong and all(train[r["file"]] == r["given"] for r in listed)
    write_demo_dataset(root, image_size=8)  # the same folder, clean and without minival: rewritten whole
    clean = _files(root, "train")
    assert len(clean) == 1797 - 355 and all(clean[f] == true_of[f] for f in clean)
    assert not (root / "minival").exists()


@pytest.mark.slow
def test_tiny_study_selects_on_minival_and_reports_on_val(tiny_study):
    study, out, _, _, (stamps, stamps_again) = tiny_study  # the study's command line, once per session (then again)
    info = json.loads((out / "study.json").read_text())
    assert set(info["runs"]) == set(study.REPORTED) and all(len(r) == 2 for r in info["runs"].values())
    sel = info["selection"]
    assert [len(sel[m]["tried"]) for m in study.METHODS] == [1, 2, 3, 2]  # vanilla, sam, gsam (2 rho + 1 alpha), xsam
    gsam = [t["setting"] for t in sel["gsam"]["tried"]]
    assert all(s["sam.rho_min"] == 0.0 for s in gsam)  # rho_t decays with the lr to 0, never constant
    assert [s["sam.rho_max"] for s in gsam[:2]] == [0.05, 0.1] and {s["sam.alpha"] for s in gsam[:2]} == {0.1}
    first = sel["gsam"]["tried"][:2]
    rho_choice = first[max(range(2), key=lambda i: (first[i]["top1"], -i))]["setting"]
    assert gsam[2] == {**rho_choice, "sam.alpha": 0.3}  # the alpha stage at GSAM's own rho_max
    sam_rho = sel["sam"]["setting"]["sam.rho_max"]
    assert info["settings"][study.ABLATION] == {"sam.rho_max": sam_rho, "sam.rho_min": sam_rho,
                                                "sam.alpha": sel["gsam"]["setting"]["sam.alpha"]}
    for m, chosen in sel.items():
        assert all(t["images"] == 285 for t in chosen["tried"])  # chosen on minival ...
        assert chosen["minival_top1"] == max(t["top1"] for t in chosen["tried"])
    for m, runs in info["runs"].items():
        for r in runs:
            assert r["images"] == 355  # ... reported on val
            assert r["sigma_max"] > 0 and r["power_iteration_converged"] is not None
            cfg = (Path(r["run"]) / "config.yaml").read_text()
            assert "val_split: val\n" in cfg and f"seed: {r['seed']}\n" in cfg
    top1 = [r["top1"] for r in info["runs"]["sam"]]
    assert info["summary"]["sam"]["top1"][0] == pytest.approx(np.mean(top1))
    assert info["summary"]["sam"]["top1"][1] == pytest.approx(np.std(top1, ddof=1))
    assert info["summary"]["sam"]["top1_ci95"] == pytest.approx(12.706 * np.std(top1, ddof=1) / np.sqrt(2), rel=1e-4)
    diff = [a["top1"] - b["top1"] for a, b in zip(info["runs"]["gsam"], info["runs"]["sam"])]
    assert info["differences"]["gsam - sam"]["mean"] == pytest.approx(np.mean(diff))
    table = (out / "study.md").read_text()
    assert all(f"| {m} |" in table for m in study.REPORTED) and (out / "study.png").stat().st_size > 0
    assert "| gsam - gsam_const_rho_at_sam_rho |" in table and "— (not selected)" in table
    assert len(stamps) == 18 and stamps_again == stamps  # a second report reused every finished run
