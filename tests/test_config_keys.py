"""A key nothing reads is refused wherever it is written: in a user's own experiment file under configs/ as on
the command line (the files that only set values declare no key)."""
import shutil

import pytest
from hydra import compose, initialize_config_dir

from gsam.config.checks import ConfigError
from gsam.config.keys import check_known_keys
from support import ROOT


def _configs_with(tmp_path, name: str, text: str):
    """A copy of the shipped configs/ with the user's own experiment file ``name`` added."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "experiment" / f"{name}.yaml").write_text(text)
    return configs


def _composed(configs, *overrides):
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_a_typo_in_a_users_experiment_file_is_refused(tmp_path):
    configs = _configs_with(tmp_path, "my_gsam", "# @package _global_\ndefaults:\n  - override /sam: gsam\n"
                                                 "sam:\n  rho_mx: 0.1\n")
    cfg = _composed(configs, "+experiment=my_gsam")
    with pytest.raises(ConfigError, match=r"sam\.rho_mx: unknown key.*did you mean sam\.rho_m"):
        check_known_keys(cfg, configs)


def test_a_users_experiment_file_with_known_keys_and_timm_kwargs_passes(tmp_path):
    configs = _configs_with(tmp_path, "my_gsam", "# @package _global_\ndefaults:\n  - override /sam: gsam\n"
                                                 "sam:\n  rho_max: 0.1\nmodel:\n  kwargs:\n    drop_path_rate: 0.1\n")
    check_known_keys(_composed(configs, "+experiment=my_gsam"), configs)


@pytest.mark.parametrize("method", ["none", "sam", "asam", "gsam", "xsam", "weighted_gap", "gsam_min_f"])
def test_every_shipped_method_file_passes(compose, method):
    check_known_keys(compose(f"sam={method}"))
    check_known_keys(compose("+experiment=vit_b32_gsam", "+cluster=slurm"))
