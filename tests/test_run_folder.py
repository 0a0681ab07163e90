"""One run per folder, and logs that survive a crash before the first checkpoint: a fresh run over an old one is
refused (or the existing run set aside with train.resume=restart), a rerun without last.pt logs its steps once, and a
record cut short is dropped, never joined to the next one."""
import json

import pytest

from gsam.config.checks import ConfigError
from gsam.state.run_folder import prepare_folder
from gsam.runlog import RunLogger, read_records
from support.cli import train_steps
from support.inproc import run_main

RUN = ["train.max_steps=2", "train.keep_top_k=1"]


def _summary_rows(out):
    return (out / "summary.csv").read_text().strip().splitlines()[1:]


@pytest.mark.slow
def test_a_rerun_without_last_pt_logs_its_steps_once(tmp_path, demo_root):
    assert run_main("train.py", tmp_path, demo_root, *RUN).returncode == 0
    for p in (tmp_path / "checkpoints").iterdir():  # as a crash before the first checkpoint leaves the folder
        p.unlink()
    done = run_main("train.py", tmp_path, demo_root, *RUN)
    assert done.returncode == 0, done.stderr[-2000:]
    assert train_steps(tmp_path) == [1, 2]
    assert len(_summary_rows(tmp_path)) == 1


@pytest.mark.slow
def test_a_fresh_run_over_a_finished_one_is_refused_or_set_aside(tmp_path, demo_root):
    assert run_main("train.py", tmp_path, demo_root, *RUN).returncode == 0
    old = (tmp_path / "metrics.jsonl").read_text()
    refused = run_main("train.py", tmp_path, demo_root, "train.max_steps=1", "train.resume=false")
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr[-2000:]
    assert f"output_dir={tmp_path} holds a run" in refused.stderr and "train.resume=restart" in refused.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == old  # nothing touched
    done = run_main("train.py", tmp_path, demo_root, "train.max_steps=1", "train.resume=restart")
    assert done.returncode == 0, done.stderr[-2000:]
    [aside] = tmp_path.glob("previous-*")
    assert (aside / "metrics.jsonl").read_text() == old and (aside / "checkpoints" / "last.pt").is_file()
    assert train_steps(tmp_path) == [1] and train_steps(aside) == [1, 2]


def test_resume_false_on_an_empty_folder_or_one_without_a_run_is_a_fresh_run(tmp_path):
    (tmp_path / ".lock").write_text("pid 1\n")
    (tmp_path / "metrics.jsonl").write_text("")
    assert prepare_folder(tmp_path, False) is None
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    with pytest.raises(ConfigError, match="holds a run"):
        prepare_folder(tmp_path, False)


def test_a_record_cut_short_is_dropped_on_read_and_never_joined_to_the_next(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "train", "st')  # kill -9
    assert read_records(tmp_path) == [{"kind": "train", "step": 1}]
    logger = RunLogger(tmp_path, enabled=True, wandb_cfg=None, config={})
    logger.log(2, {"loss": 1.0})
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert logger.position == {"metrics": 2, "summary": 0}
