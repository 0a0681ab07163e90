"""The sharpness-aware optimizers. Depends on torch only (no Hydra, timm or data code)."""
from .base import SharpnessAware, StepStats
from .baselines import GSAMMinF, WeightedGap
from .gsam import GSAM
from .sam import SAM
from .vanilla import Vanilla
from .schedule import lr_at, rho_from_lr
from .xsam import XSAM

__all__ = ["Vanilla", "SAM", "GSAM", "XSAM", "WeightedGap", "GSAMMinF", "SharpnessAware", "StepStats",
           "rho_from_lr", "lr_at"]
