"""The process group's variables when launched by Slurm's srun without torchrun."""
import os

from gsam import distributed


def test_slurm_variables_become_torchrun_variables(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # nothing leaks into later tests
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "16")  # an srun step
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-node-07")
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the first node of the list is used
    distributed._slurm_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("5", "16", "1")
    assert os.environ["MASTER_ADDR"] == "gpu-node-07" and os.environ["MASTER_PORT"] == str(20000 + 4242)


def test_torchrun_variables_win_and_single_task_is_left_alone(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    distributed._slurm_env()
    assert os.environ["RANK"] == "0"
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    distributed._slurm_env()
    assert "RANK" not in os.environ


def test_the_batch_script_itself_is_one_process(monkeypatch):
    """`python train.py` in an sbatch script of 8 tasks, without srun: no step variables, one process."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for k in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    distributed._slurm_env()
    assert "RANK" not in os.environ and "WORLD_SIZE" not in os.environ


def test_amp_and_batch_plan_choices():
    import pytest
    import torch

    from gsam.config.checks import ConfigError, amp_dtype, batch_plan

    assert amp_dtype("auto", torch.device("cuda")) == torch.bfloat16  # bf16 by default on GPU
    assert amp_dtype("auto", torch.device("cpu")) is None  # fp32 on CPU
    assert amp_dtype("fp16", torch.device("cuda")) == torch.float16
    plan = batch_plan(4096, 8, 256)  # 8 GPUs: 512 per process as 2 micro-batches of 256
    assert (plan.per_rank, plan.micro, plan.accum) == (512, 256, 2)
    assert batch_plan(4096, 64, 256).accum == 1
    with pytest.raises(ConfigError, match="data.batch_size"):
        batch_plan(4096, 3, 256)
    with pytest.raises(ConfigError, match="data.max_device_batch"):
        batch_plan(4096, 8, 200)
