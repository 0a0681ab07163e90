"""The analysis under real torchrun (2 gloo processes, tests/ddp_worker.py): each rank on half of the batches
gives, on every rank, the one-process numbers on all of them."""
import pytest
import torch

from support.analysis_case import measure, setup


@pytest.mark.slow  # the session's torchrun fixture (ddp_ranks): ~15 s
def test_two_ranks_on_half_the_batches_equal_one_process_on_all(ddp_ranks):
    ranks = [r["analysis"] for r in ddp_ranks]
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
