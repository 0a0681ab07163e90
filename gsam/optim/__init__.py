"""The sharpness-aware optimizers. Depends on torch only (no Hydra, timm or data code)."""
from .base import SharpnessAware, StepClock, StepStats
from .baselines import GSAMMinF, WeightedGap
from .every_k import EveryK
from .gsam import GSAM
from .looksam import LookSAM
from .mesa import MESA
from .sam import SAM
from .vanilla import Vanilla
from .schedule import lr_at, rho_from_lr
from .xsam import XSAM
from .registry import Key, Method, register
from . import methods  # noqa: F401  (registers the shipped methods)

__all__ = ["Vanilla", "SAM", "GSAM", "XSAM", "WeightedGap", "GSAMMinF", "EveryK", "LookSAM", "MESA", "SharpnessAware",
           "StepClock", "StepStats", "Method", "Key", "register", "rho_from_lr", "lr_at"]
