"""gsam: sharpness-aware training (SAM, ASAM, GSAM, XSAM) for ImageNet in PyTorch.

``import gsam`` gives the optimizers and the analysis tools without importing the trainer.
"""
from .analysis import hessian_max_eigenvalue
from .optim import (GSAM, SAM, XSAM, GSAMMinF, SharpnessAware, StepStats, Vanilla, WeightedGap, lr_at,
                    rho_from_lr)

__version__ = "0.1.0"
__all__ = ["Vanilla", "SAM", "GSAM", "XSAM", "WeightedGap", "GSAMMinF", "SharpnessAware", "StepStats",
           "rho_from_lr", "lr_at", "hessian_max_eigenvalue"]
