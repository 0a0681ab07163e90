"""Table 6 of the GSAM paper (App. C.2, ViT-B/32 in GSAM's own recipe) as ready experiments: its four arms compose
with Table 1's recipe and differ only in rho's schedule and the ascent, scripts/sweep.py sweep=table6 runs them, and
make_table.py lays them out beside the paper's numbers, which also stand beside Table 1's ViT-B/32 cells."""
import csv
import io
import json

import pytest
from omegaconf import OmegaConf

from gsam.config.keys import check_known_keys
from gsam.evaluation.tables import TABLE6_ARMS, table6_experiments
from support import ROOT, load_script

sweep = load_script("sweep")
# (sam.name, rho_max, rho_min, alpha) of each arm: the constant arms at the SAM row's rho, the decayed ones on
# Table 4's ViT-B/32 schedule 0.6 -> 0.1, the ascent at Table 4's alpha 0.6
ARMS = {"const_rho": ("sam", 0.15, 0.15, None), "const_rho_ascent": ("gsam", 0.15, 0.15, 0.6),
        "decayed_rho": ("gsam", 0.6, 0.1, 0.0), "decayed_rho_ascent": ("gsam", 0.6, 0.1, 0.6)}


def _without_run_keys(cfg) -> dict:
    """The config without what names the run (name, output folder)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in out.items() if k not in ("name", "output_dir")}


def test_the_four_arms_compose_in_table1s_recipe_and_differ_only_in_rho_and_the_ascent(compose):
    assert table6_experiments() == [f"vit_b32_table6_{arm}" for arm in ARMS]
    gsam_row = _without_run_keys(compose("+experiment=vit_b32_gsam"))
    for arm, (name, rho_max, rho_min, alpha) in ARMS.items():
        cfg = compose(f"+experiment=vit_b32_table6_{arm}")
        check_known_keys(cfg)
        assert cfg.name == f"vit_b32_table6_{arm}" and cfg.output_dir == f"outputs/vit_b32_table6_{arm}"
        assert (cfg.sam.name, cfg.sam.rho_max, cfg.sam.rho_min, cfg.sam.get("alpha")) == (name, rho_max, rho_min,
                                                                                            alpha)
        mine = _without_run_keys(cfg)
        assert {k: v for k, v in mine.items() if k != "sam"} == {k: v for k, v in gsam_row.items() if k != "sam"}
    assert _without_run_keys(compose("+experiment=vit_b32_table6_decayed_rho_ascent")) == gsam_row  # GSAM's row
    sam_row = _without_run_keys(compose("+experiment=vit_b32_sam"))
    assert _without_run_keys(compose("+experiment=vit_b32_table6_const_rho")) == sam_row  # and SAM's


def test_the_files_are_what_the_generator_writes():
    make_experiments = load_script("dev/make_experiments")
    for arm in TABLE6_ARMS:
        path = ROOT / "configs" / "experiment" / f"vit_b32_table6_{arm}.yaml"
        assert path.read_text() == make_experiments.table6_experiment(arm)


def test_sweep_table6_runs_the_four_arms(capsys):
    """Expanded by Hydra's own override parser over the config repository, as a -m sweep does; on Slurm and here."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    command = sweep.sweep_command(["sweep=table6", "hydra.launcher.partition=gpu"])
    experiments, = (a for a in command if a.startswith("+experiment="))
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "configs")))
    override, = OverridesParser.create(config_loader=loader).parse_overrides([experiments])
    assert list(override.sweep_string_iterator()) == table6_experiments()
    assert "sweep=table6" in command and sweep.TABLE1 not in command
    assert sweep.main(["sweep=table6", "--local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "hydra.sweep.dir=multirun/table6" in out and f"+experiment={','.join(table6_experiments())}" in out


def _run(folder, name, method, top1):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"name": name, "model": "vit_b32", "method": method,
                                                     "imagenet": top1, "results": {}}))
    return folder


def test_make_table_lays_out_table6_beside_the_papers_numbers(tmp_path, capsys):
    """The Table 6 runs get their own layout (two of them are (vit_b32, gsam) runs, as Table 1's GSAM row); Table 1's
    ViT-B/32 runs fill the arms they are; the Table 1 cells of ViT-B/32 show Table 6's in-recipe numbers and the
    SAM row stays marked as Chen et al.'s."""
    runs = [_run(tmp_path / "v", "vit_b32_vanilla", "vanilla", 71.0), _run(tmp_path / "s", "vit_b32_sam", "sam", 75.0),
            _run(tmp_path / "g", "vit_b32_gsam", "gsam", 76.1),
            _run(tmp_path / "a", "vit_b32_table6_const_rho_ascent", "gsam", 75.9),
            _run(tmp_path / "d", "vit_b32_table6_decayed_rho", "gsam", 75.2)]
    assert load_script("make_table").main([*map(str, runs), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    table1, table6 = out.split("Table 6 (ViT-B/32 in GSAM's recipe")
    assert "| vit_b32 | sam † | 75.0 / 73.6 (+1.4); Table 6: 75.8 (-0.8) |" in table1
    assert "| vit_b32 | gsam | 76.1 / 76.8 (-0.7); Table 6: 76.8 (-0.7) |" in table1
    assert "| vit_b32 | vanilla | 71.0 / 71.4 (-0.4); Table 6: 72.0 (-1.0) |" in table1
    assert "Chen et al. (2021)'s" in table1 and "table6" not in table1.split("Each cell")[0]  # not Table 1 rows
    assert "| constant ρ (SAM) | vit_b32_sam | 75.0 / 75.8 (-0.8) |" in table6
    assert "| constant ρ + ascent | vit_b32_table6_const_rho_ascent | 75.9 / 76.2 (-0.3) |" in table6
    assert "| decayed ρ_t | vit_b32_table6_decayed_rho | 75.2 / 75.8 (-0.6) |" in table6
    assert "| decayed ρ_t + ascent (GSAM) | vit_b32_gsam | 76.1 / 76.8 (-0.7) |" in table6
    assert "| ascent at constant ρ | +0.9 | +0.4 |" in table6 and "| ascent at decayed ρ_t | +0.9 | +1.0 |" in table6
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    arms = {r["method"]: float(r["paper"]) for r in rows if r["method"].startswith("table6:")}
    assert arms == {"table6:vanilla": 72.0, "table6:const_rho": 75.8, "table6:const_rho_ascent": 76.2,
                    "table6:decayed_rho": 75.8, "table6:decayed_rho_ascent": 76.8}
    assert len(rows) == 3 * 6 + 5  # Table 1's three rows by 6 columns, Table 6's five arms by ImageNet


@pytest.mark.parametrize("name", ["vit_b32_table6_other", "vit_s16_table6_const_rho"])
def test_a_run_named_like_no_table6_arm_is_laid_out_as_any_run(tmp_path, capsys, name):
    run = _run(tmp_path / "x", name, "gsam", 70.0)
    assert load_script("make_table").main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "Table 6 (ViT-B/32" not in out and "| vit_b32 | gsam | 70.0 / 76.8 (-6.8); Table 6: 76.8 (-6.8) |" in out
