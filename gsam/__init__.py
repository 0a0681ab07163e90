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

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below, for type checkers (and for tests/test_package_layout.py's import graph)
    from gsam.analysis import hessian_max_eigenvalue
    from gsam.optim import (GSAM, MESA, SAM, XSAM, EveryK, GSAMMinF, LookSAM, SharpnessAware, StepClock, StepStats,
                            Vanilla, WeightedGap, lr_at, rho_from_lr)

__version__ = "0.1.0"
__all__ = ["Vanilla", "SAM", "GSAM", "XSAM", "WeightedGap", "GSAMMinF", "EveryK", "LookSAM", "MESA", "SharpnessAware",
           "StepClock", "StepStats", "rho_from_lr", "lr_at", "hessian_max_eigenvalue"]
# imported on first use (PEP 562): both import torch (1.8 s), which the commands that only read results
# (make_table.py, compare_runs.py, select_best.py) and gsam.evaluation's tables never need
_SOURCES = {name: "gsam.optim" for name in __all__}
_SOURCES["hessian_max_eigenvalue"] = "gsam.analysis"


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'gsam' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
