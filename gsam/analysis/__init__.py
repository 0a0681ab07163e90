"""Sharpness analysis, torch only: sigma_max by power iteration, the surrogate gap h and 2h/rho^2,
cos(g, g_p), loss-surface slices, and the trainer's hook that logs them (``monitor``). The tasks, runs and
output files of the analysis scripts are in ``gsam.studies``; nothing here imports them, the trainer,
data, models, Hydra or matplotlib (tests/test_package_layout.py).

Every measurement takes a model, a criterion ``criterion(model(x), y)`` and a fixed list of
``(x, y)`` batches, runs in eval mode, restores the weights and modes, and agrees across
data-parallel ranks (each rank passes its own batches).
"""
from .gap import Gap, surrogate_gap, surrogate_gaps
from .hessian import Eigen, dominant_eigenvalue, hessian_max_eigenvalue
from .surface import (DIRECTIONS, direction, g_perp_direction, gradient_direction, loss_slice_1d, loss_slice_2d,
                      random_filter_normalized_direction)

__all__ = ["Gap", "surrogate_gap", "surrogate_gaps", "Eigen", "dominant_eigenvalue", "hessian_max_eigenvalue",
           "DIRECTIONS", "direction", "g_perp_direction", "gradient_direction", "loss_slice_1d", "loss_slice_2d",
           "random_filter_normalized_direction"]
