"""The measurement tests/analysis_ddp_worker.py makes on 2 ranks and test_analysis_ddp.py on one process."""
import torch.nn.functional as F

from gsam import analysis
from support.nets import batch, mlp


def setup():
    """The model (BN with running statistics set by one train-mode pass) and the 4 batches."""
    model = mlp(seed=0, bn=True)
    x, y = batch(seed=1, n=64)
    model.train()
    model(x)
    return model, list(zip(x.split(16), y.split(16)))


def measure(model, batches):
    eig = analysis.dominant_eigenvalue(model, F.cross_entropy, batches, iters=40, tol=0.0, seed=3)
    gaps = analysis.surrogate_gaps(model, F.cross_entropy, batches, [0.05, 0.2])
    d = analysis.gradient_direction(model, F.cross_entropy, batches)
    line = analysis.loss_slice_1d(model, F.cross_entropy, batches, d, [-0.5, 0.0, 0.5])
    return {"eigenvalue": eig.eigenvalue, "iterations": eig.iterations, "gaps": [g.as_dict() for g in gaps],
            "slice": line}
