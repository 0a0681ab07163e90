"""The sharpness-aware optimizers. Depends on torch only (no Hydra, timm or data code)."""
from .base import SharpnessAware, StepStats
from .baselines import GSAMMinF, WeightedGap
from .every_k import EveryK
from .gsam import GSAM
from .looksam import LookSAM
from .mesa import MESA
from .sam import SAM
from .vanilla import Vanilla
from .schedule import lr_at, rho_from_lr
from .xsam import XSAM

__all__ = ["Vanilla", "SAM", "GSAM", "XSAM", "WeightedGap", "GSAMMinF", "EveryK", "LookSAM", "MESA", "SharpnessAware",
           "StepStats", "rho_from_lr", "lr_at"]
