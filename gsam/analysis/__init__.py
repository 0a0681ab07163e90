"""Sharpness analysis: sigma_max by power iteration, the surrogate gap h and 2h/rho^2, cos(g, g_p),
loss-surface slices, 2-D toy problems, and the small demo task the scripts and tests run on.

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
