"""gsam: sharpness-aware training (SAM, ASAM, GSAM, XSAM) for ImageNet in PyTorch.

``import gsam`` gives the optimizers and the analysis tools without importing the trainer.
"""
import os as _os

# data/ and models/ sit beside gsam/ in the checkout and install as gsam.data and gsam.models (pyproject's
# package-dir). An installed copy finds them by that mapping; a checkout used without installing (the GPU kit
# puts only the dependencies on PYTHONPATH) finds them here, as subpackages of gsam and never as top-level names.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and _os.path.isfile(
        _os.path.join(_checkout, "data", "__init__.py")):
    __path__.append(_checkout)  # noqa: F821 (a package's __path__)

from gsam.analysis import hessian_max_eigenvalue
from gsam.optim import (GSAM, MESA, SAM, XSAM, EveryK, GSAMMinF, LookSAM, SharpnessAware, StepClock, StepStats, Vanilla,
                    WeightedGap, lr_at, rho_from_lr)

__version__ = "0.1.0"
__all__ = ["Vanilla", "SAM", "GSAM", "XSAM", "WeightedGap", "GSAMMinF", "EveryK", "LookSAM", "MESA", "SharpnessAware",
           "StepClock", "StepStats", "rho_from_lr", "lr_at", "hessian_max_eigenvalue"]
