"""The analysis under real torchrun (2 gloo processes): each rank on half of the batches gives, on
every rank, the one-process numbers on all of them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.analysis_case import measure, setup

HERE = Path(__file__).parent


def test_two_ranks_on_half_the_batches_equal_one_process_on_all(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "analysis_ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import torch

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    single = measure(*setup())
    for r in ranks:
        assert r["iterations"] == single["iterations"] == 40
        assert r["eigenvalue"] == pytest.approx(single["eigenvalue"], rel=1e-10)
        for a, b in zip(r["gaps"], single["gaps"]):
            for k in ("loss", "perturbed_loss", "surrogate_gap", "cos", "grad_norm"):
                assert a[k] == pytest.approx(b[k], rel=1e-9), k
        torch.testing.assert_close(r["slice"], single["slice"], rtol=1e-10, atol=0)
    assert ranks[0]["eigenvalue"] == ranks[1]["eigenvalue"]  # identical on every rank, not just close
    assert ranks[0]["gaps"] == ranks[1]["gaps"]
