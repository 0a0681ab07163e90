"""make_table.py and plot_runs.py on runs written in the trainer's formats."""
import csv
import io
import json
from pathlib import Path

import pytest

from gsam.runlog import read_metrics
from gsam.evaluation.tables import TABLE1_METHODS, paper_table1, sam_name, table1_method, table1_models

from support import load_script


def fake_run(folder: Path, model: str, method: str, **cols):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"name": f"{model}_{method}", "model": model, "method": method,
                                                     **cols, "results": {}}))
    lines = [{"kind": "train", "step": s, "loss": 2.0 / s, "perturbed_loss": 2.1 / s, "surrogate_gap": 0.1 / s}
             for s in range(1, 6)]
    lines += [{"kind": "train", "step": 3, "loss": 9.0, "perturbed_loss": 9.5, "surrogate_gap": 0.5},  # after a resume
              {"kind": "val", "step": 5, "top1": cols.get("imagenet", 0.0), "top5": 90.0, "loss": 1.0, "images": 10}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return folder


@pytest.fixture
def make_table(capsys):
    """``make_table(*args)``: scripts/make_table.py's main in this process (no interpreter start-up per call):
    (exit status, stdout, stderr)."""
    main = load_script("make_table").main

    def call(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def test_paper_table1_transcription_spot_checks():
    t = paper_table1()
    assert len(t) == 36  # 12 models x (vanilla, SAM, GSAM)
    assert t["vit_b32", "gsam"] == {"imagenet": 76.8, "real": 82.7, "v2": 63.0, "r": 25.1, "c": 51.7}
    assert t["resnet50", "vanilla"]["c"] == 44.6 and t["mixer_b16", "sam"]["r"] == 24.7
    # the paper's claims: +5.4 over AdamW and +3.2 over SAM on ViT-B/32 (Section 6.1)
    assert round(t["vit_b32", "gsam"]["imagenet"] - t["vit_b32", "vanilla"]["imagenet"], 1) == 5.4
    assert round(t["vit_b32", "gsam"]["imagenet"] - t["vit_b32", "sam"]["imagenet"], 1) == 3.2


def test_the_models_of_table1_are_the_papers():
    """gsam/evaluation/tables.py lists Table 1's models (its Table 4 rows): the paper's 12, each with its file."""
    from support import ROOT

    assert table1_models() == sorted({m for m, _ in paper_table1()}) and len(table1_models()) == 12
    assert all((ROOT / "configs" / "model" / f"{m}.yaml").is_file() for m in table1_models())
    assert [sam_name(m) for m in TABLE1_METHODS] == ["none", "sam", "gsam", "xsam"]
    assert [table1_method(sam_name(m)) for m in TABLE1_METHODS] == list(TABLE1_METHODS)


def test_a_resumed_step_logged_twice_keeps_the_later_record(tmp_path):
    run = fake_run(tmp_path / "r", "vit_b32", "gsam", imagenet=70.0)
    train = read_metrics(run)["train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5] and train[2]["loss"] == 9.0


def test_make_table_puts_ours_beside_the_paper(tmp_path, make_table):
    runs = [fake_run(tmp_path / "a", "vit_b32", "gsam", imagenet=75.3, real=81.0, v2=61.5, r=20.3, r_masked=33.6),
            fake_run(tmp_path / "b", "vit_b32", "xsam", imagenet=76.0),
            fake_run(tmp_path / "c", "resnet50", "vanilla", imagenet=76.5, c=40.1)]
    code, _, err = make_table(*runs, "--out", tmp_path / "t1")
    assert code == 0, err
    md = (tmp_path / "t1.md").read_text().splitlines()
    body = [l for l in md if l.startswith("| ") and "Model" not in l]
    assert [l.split("|")[1:3] for l in body] == [[" resnet50 ", " vanilla "], [" vit_b32 ", " gsam "],
                                                 [" vit_b32 ", " xsam "]]  # the paper's row order
    assert "76.5 / 76.0 (+0.5)" in body[0] and "40.1 / 44.6 (-4.5)" in body[0]
    assert "75.3 / 76.8 (-1.5)" in body[1] and "— / 25.1 (—)" not in body[1]
    cells = [c.strip() for c in body[1].split("|")[1:-1]]
    assert cells[5:7] == ["20.3 / 25.1 (-4.8)", "33.6 / — (—)"]  # R: the 1000-way number against the paper's
    assert "76.0 / — (—)" in body[2]
    assert "Chen et al." not in "\n".join(md)  # no SAM row: no SAM note
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t1.csv").read_text())))
    assert len(rows) == 18  # 3 runs x 6 columns
    r = next(r for r in rows if r["model"] == "vit_b32" and r["method"] == "gsam" and r["column"] == "real")
    assert float(r["ours"]) == 81.0 and float(r["paper"]) == 82.7 and float(r["diff"]) == pytest.approx(-1.7)


def test_variant_and_other_model_runs_are_not_table1_rows(tmp_path, make_table):
    """An efficient variant on a Table 1 model (results.json method looksam) and a model outside Table 1 go in a
    table beside Table 1, after it, and the CSV marks them."""
    runs = [fake_run(tmp_path / "v", "resnet50", "looksam", imagenet=76.4),
            fake_run(tmp_path / "g", "resnet50", "gsam", imagenet=77.0),
            fake_run(tmp_path / "d", "demo_vit", "gsam", imagenet=83.9)]
    code, out, err = make_table(*runs, "--out", tmp_path / "t")
    assert code == 0, err
    table1, beside = out.split("Beside Table 1")
    assert [l.split("|")[1:3] for l in table1.splitlines() if l.startswith("| ") and "Model" not in l] == [
        [" resnet50 ", " gsam "]]
    assert [l.split("|")[1:3] for l in beside.splitlines() if l.startswith("| ") and "Model" not in l] == [
        [" demo_vit ", " gsam "], [" resnet50 ", " looksam "]]
    assert "76.4 / — (—)" in beside
    written = csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text()))
    marks = {(r["model"], r["method"]): r["table1"] for r in written}
    assert marks == {("resnet50", "gsam"): "1", ("resnet50", "looksam"): "0", ("demo_vit", "gsam"): "0"}


def test_make_table_marks_sam_rows_as_not_the_papers_recipe(tmp_path, make_table):
    """Table 1's SAM numbers are Chen et al.'s, with their own rho; ours run a rho of our choice: the row says so."""
    code, out, _ = make_table(fake_run(tmp_path / "s", "vit_b32", "sam", imagenet=72.0))
    assert code == 0
    row = next(l for l in out.splitlines() if l.startswith("| vit_b32 "))
    assert row.split("|")[2] == " sam † " and "72.0 / 73.6 (-1.6)" in row
    assert "† SAM: the paper's number is Chen et al. (2021)'s" in out and "constant ρ of our choice" in out


def test_make_table_refuses_an_older_masked_r(tmp_path, make_table):
    """A results.json with r but no r_masked holds the masked number as r: comparing it with Table 1 is wrong."""
    run = fake_run(tmp_path / "old", "vit_b32", "gsam", imagenet=75.3, r=33.6)
    code, _, err = make_table(run)
    assert code == 2 and "200-class masked ImageNet-R of an older version" in err


def test_make_table_names_a_run_without_results(tmp_path, make_table):
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("name: vit_b32_gsam\n")  # a run that has not ended
    code, _, err = make_table(tmp_path / "unfinished")
    assert code == 2 and "unfinished: no results.json" in err


def test_make_table_skips_folders_that_are_not_runs(tmp_path, make_table):
    """README: `make_table.py outputs/*/` after the demo, whose data folders sit beside its runs."""
    run = fake_run(tmp_path / "demo_gsam", "demo_vit", "gsam", imagenet=83.9)
    (tmp_path / "demo_data" / "train").mkdir(parents=True)
    code, out, err = make_table(tmp_path / "demo_data", run)
    assert code == 0, err
    assert f"skipped {tmp_path / 'demo_data'} (not a run folder" in err and "83.9" in out
    code, _, err = make_table(tmp_path / "demo_data")
    assert code == 2 and "no run folder among" in err


def test_plot_runs_draws_the_logged_numbers(tmp_path, monkeypatch):
    """plot_runs.py's main on two runs: the PNGs at the figures' sizes, and in the figures (kept from being closed)
    each run's logged f, f_p, h per step (the resumed step 3 as re-logged), its eval top-1, and Table 1's bars."""
    from PIL import Image

    plot_runs = load_script("plot_runs")
    figures = []
    monkeypatch.setattr(plot_runs.plt, "close", figures.append)
    runs = [fake_run(tmp_path / "a", "vit_b32", "gsam", imagenet=75.3), fake_run(tmp_path / "b", "vit_b32",
                                                                                  "vanilla", imagenet=70.1)]
    assert plot_runs.main([*map(str, runs), "--out", str(tmp_path / "p"), "--smooth", "1"]) == 0
    curves, bars = figures
    for name, fig in (("curves.png", curves), ("table1_imagenet.png", bars)):
        data = (tmp_path / "p" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = fig.get_size_inches() * 110  # saved at 110 dpi
        assert Image.open(tmp_path / "p" / name).size == (round(width), round(height))
    assert Image.open(tmp_path / "p" / "curves.png").size == (1210, 825)  # 11 x 7.5 inches

    logged = {"train loss f": [2.0, 1.0, 9.0, 0.5, 0.4], "perturbed loss f_p": [2.1, 1.05, 9.5, 2.1 / 4, 2.1 / 5],
              "surrogate gap h": [0.1, 0.05, 0.5, 0.1 / 4, 0.1 / 5], "eval top-1 (%)": None}
    for ax in curves.axes:
        title = ax.get_title()
        assert title in logged
        assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
        for line, top1 in zip(ax.get_lines(), (75.3, 70.1)):
            if logged[title] is None:  # one evaluation, at step 5
                assert list(line.get_xdata()) == [5] and list(line.get_ydata()) == [top1]
            else:
                assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
                assert list(line.get_ydata()) == pytest.approx(logged[title])
    (ax,) = bars.axes
    paper = paper_table1()
    heights = {t.get_text(): sorted(round(b.get_height(), 1) for b in c) for t, c in
               zip(ax.get_legend().get_texts(), ax.containers)}
    assert heights == {"ours": [70.1, 75.3],
                       "paper (Table 1)": sorted([paper["vit_b32", "vanilla"]["imagenet"], 76.8])}
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == ["vit_b32\ngsam", "vit_b32\nvanilla"]


def test_the_bar_chart_has_the_papers_bars_only_where_the_paper_has_numbers(tmp_path):
    plot_runs = load_script("plot_runs")
    from gsam.evaluation.table1 import load_run, rows

    demo = rows([load_run(fake_run(tmp_path / d, "demo_vit", m, imagenet=v))
                 for d, m, v in (("v", "vanilla", 86.5), ("g", "gsam", 83.9))])
    assert plot_runs.bar_series(demo, "imagenet") == {"ours": [86.5, 83.9]}  # no "paper" legend without bars
    paper = rows([load_run(fake_run(tmp_path / "b32", "vit_b32", "gsam", imagenet=75.3))])
    assert plot_runs.bar_series(paper, "imagenet") == {"ours": [75.3], "paper (Table 1)": [76.8]}


def test_compare_runs_names_a_folder_that_is_no_finished_run(tmp_path, capsys):
    """demo.sh's last table: a folder without results.json (a typo, a run still going) is one line naming it,
    exit 2, not a traceback."""
    parse_args = load_script("compare_runs").parse_args
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text("{}")
    assert parse_args([str(tmp_path / "done")]) == [str(tmp_path / "done")]
    with pytest.raises(SystemExit) as stop:
        parse_args([str(tmp_path / "done"), str(tmp_path / "running")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'running'}: no results.json there (not a finished run folder)\n"
