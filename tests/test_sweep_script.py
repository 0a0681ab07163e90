"""scripts/sweep.py and the Slurm configs without a cluster: one-line errors before anything is submitted,
the Table 1 default, the git-ignored local file, and the per-job output dir / wandb group of a sweep."""
import shutil
import subprocess

import pytest

from gsam.evaluation.tables import TABLE1_METHODS, table1_models
from support import ROOT, load_script

sweep = load_script("sweep")


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


@pytest.mark.parametrize("args,needle", [
    (["data.root=/d"], "hydra.launcher.partition is not set: pass hydra.launcher.partition=NAME"),
    (["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"],
     "hydra.launcher.tasks_per_node=8 but gpus_per_node=4"),
    (["hydra.launcher.partition=gpu", "+cluster=slurm"], "cluster=... is set by scripts/sweep.py itself"),
])
def test_bad_launcher_settings_are_one_line_errors(fake_sbatch, capsys, args, needle):
    assert sweep.main(["--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.strip().count("\n") == 0


def test_no_sbatch_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    assert sweep.main(["--dry-run", "hydra.launcher.partition=gpu"]) == 2
    err = capsys.readouterr().err
    assert "sbatch not found" in err and err.strip().count("\n") == 0


def test_default_is_the_whole_table1_and_a_glob_replaces_it(fake_sbatch, capsys):
    assert sweep.main(["--dry-run", "hydra.launcher.partition=gpu", "data.root=/d"]) == 0
    out = capsys.readouterr().out
    table1 = ",".join(f"{m}_{k}" for m in ("resnet50", "resnet101") for k in TABLE1_METHODS)
    assert f"train.py -m +cluster=slurm +experiment={table1}," in out
    assert "mixer_b16_xsam hydra.launcher.partition=gpu data.root=/d" in out
    assert sweep.main(["--dry-run", "hydra.launcher.partition=gpu", "+experiment=glob(vit_*_gsam)"]) == 0
    out = capsys.readouterr().out
    assert "'+experiment=glob(vit_*_gsam)'" in out and "resnet50_vanilla" not in out


def test_the_table1_sweep_is_the_48_experiments():
    """Expanded by Hydra's own override parser over the config repository, as a -m sweep does."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "configs")))
    override, = OverridesParser.create(config_loader=loader).parse_overrides([sweep.TABLE1])
    names = list(override.sweep_string_iterator())
    assert sorted(names) == sorted(f"{m}_{k}" for m in table1_models() for k in TABLE1_METHODS)


def test_local_file_gives_partition_account_and_the_command_line_wins(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "local").mkdir(exist_ok=True)
    (configs / "local" / "slurm.yaml").write_text("partition: big\naccount: proj7\nqos: high\n")
    launcher = sweep.launcher_config([], configs)
    assert (launcher.partition, launcher.account, launcher.qos) == ("big", "proj7", "high")
    assert launcher.tasks_per_node == 8 and launcher.gpus_per_node == 8 and launcher.signal_delay_s == 180
    launcher = sweep.launcher_config(["hydra.launcher.partition=small"], configs)
    assert (launcher.partition, launcher.account) == ("small", "proj7")
    assert sweep.launcher_config([], ROOT / "configs").partition is None  # no local file in the repo


def test_local_configs_are_git_ignored():
    out = subprocess.run(["git", "check-ignore", "configs/local/slurm.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0


def test_a_sweep_job_gets_its_own_dir_and_the_sweep_group(compose):
    cfg = compose("+cluster=slurm", "+experiment=vit_b32_gsam", "sweep=table1", return_hydra_config=True)
    from omegaconf import OmegaConf

    assert cfg.hydra.sweep.dir == "multirun/table1"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}_${name}"  # per job: 7_vit_b32_gsam
    assert OmegaConf.to_container(cfg)["output_dir"] == "${hydra:runtime.output_dir}"  # = sweep.dir/subdir
    assert cfg.logger.wandb.group == "table1"
    assert cfg.hydra.launcher.additional_parameters.requeue is True
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_app_b1_search_stages_are_one_command_each(fake_sbatch, capsys):
    """search=NAME model=M: the row's experiment, App. B.1's grid as a Hydra sweep, chosen on minival. GSAM's
    rho_max grid keeps Table 4's rho_min (0.2 for ViT-B/16) and drops the points below it."""
    assert sweep.main(["search=gsam_rho", "model=vit_b16", "hydra.launcher.partition=gpu", "--dry-run"]) == 0
    cmd = capsys.readouterr().out.split()
    assert cmd[cmd.index("+cluster=slurm") + 1:] == [
        "+experiment=vit_b16_gsam", "data.val_split=minival", "sweep=search_gsam_rho_vit_b16",
        "sam.rho_max=0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8", "hydra.launcher.partition=gpu"]
    assert sweep.main(["search=sam_rho", "model=resnet50", "--local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "hydra.sweep.dir=multirun/search_sam_rho_resnet50" in out and "+cluster" not in out
    assert "+experiment=resnet50_sam" in out and "sam.rho_max=0.01,0.02,0.03,0.04,0.05" in out
    assert sweep.main(["search=vanilla_lr_wd", "model=mixer_b16", "--local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "optimizer.lr=1e-3,3e-3,1e-2,3e-2" in out and "optimizer.weight_decay=0.003,0.03,0.3" in out


@pytest.mark.parametrize("args,needle", [
    (["search=sam_rho"], "search=sam_rho needs model=NAME"),
    (["search=rho", "model=vit_b32"], "search=rho: expected one of vanilla_lr_wd, sam_rho, gsam_rho, gsam_alpha"),
    (["search=gsam_alpha", "model=vit_b99"], "model=vit_b99: no experiment vit_b99_gsam"),
    (["search=gsam_alpha", "model=vit_b32", "sam.alpha=0.1"], "search=gsam_alpha sweeps sam.alpha"),
])
def test_a_bad_search_is_one_line(capsys, args, needle):
    assert sweep.main([*args, "--local", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def _search_run(folder, split: str, rho: float, top1: float):
    import json

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model:\n  short: vit_b32\ndata:\n  val_split: {split}\n"
                                        f"sam:\n  rho_max: {rho}\n  rho_min: 0.1\n  alpha: 0.6\n")
    (folder / "results.json").write_text(json.dumps({"model": "vit_b32", "method": "gsam",
                                                     "results": {"val": {"top1": top1}}}))
    return folder


def test_select_best_chooses_on_minival_only(tmp_path, capsys):
    runs = [_search_run(tmp_path / "0", "minival", 0.3, 70.0), _search_run(tmp_path / "1", "minival", 0.5, 72.5),
            _search_run(tmp_path / "2", "val", 0.6, 99.0)]  # the best number, but on val: never chosen
    assert load_script("select_best").main([str(r) for r in runs]) == 0
    out, err = capsys.readouterr()
    assert "| vit_b32 | gsam | 0.5 | 72.50 | **best** |" in out and "| 0.3 | 70.00 |  |" in out
    assert "vit_b32 gsam: sam.rho_max=0.5 (minival top-1 72.50" in out and "99.00" not in out
    assert "evaluated on val, not minival" in err
    assert load_script("select_best").main([str(runs[2])]) == 2
