"""The summaries the analysis scripts report: rank correlation, means over windows and epochs of a logged
series, and the strict ordering Fig. 9's claim is about."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 2 points."""

    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = x.argsort(kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def window_mean(values: Sequence[float], start: float = 0.0, end: float = 1.0) -> float:
    """Mean over the fraction [start, end) of the run, e.g. (2/3, 1) for the last third."""
    if not 0 <= start < end <= 1:
        raise ValueError(f"need 0 <= start < end <= 1, got {start}, {end}")
    n = len(values)
    part = values[int(round(start * n)):max(int(round(end * n)), int(round(start * n)) + 1)]
    return sum(part) / len(part)


def epoch_means(values: Sequence[float], epochs: Sequence[int]) -> tuple[list[int], list[float]]:
    """The per-epoch mean of a logged series (the curve Fig. 9 draws, without the minibatch noise)."""
    sums: dict[int, list[float]] = {}
    for v, e in zip(values, epochs):
        sums.setdefault(e, []).append(v)
    keys = sorted(sums)
    return keys, [sum(sums[e]) / len(sums[e]) for e in keys]


def strictly_decreasing(xs: Sequence[float]) -> bool:
    return all(a > b for a, b in zip(xs, xs[1:]))
