"""The one t interval of the package: the two-sided Student t interval of a mean over seeds (Student 1908),
used by the plots, the reproduce figures, the claims' decisions and the scripts' tables alike.

With fewer than two values there is no spread to estimate: the half-width is 0 (the interval is the mean itself);
a caller that must not read that as certainty (a claim's decision) treats one seed itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def t_half_width(values: np.ndarray, axis: int = 0, level: float = 0.95) -> np.ndarray:
    """Half-width of the ``level`` t interval of the mean over ``axis``: t quantile x sample sd / sqrt(n); zeros
    (the mean's shape) for fewer than two values."""
    from scipy import stats  # scipy only where an interval is asked for

    n = values.shape[axis]
    if n < 2:
        return np.zeros_like(values.mean(axis=axis))
    return stats.t.ppf((1 + level) / 2, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the ``level`` t interval of the mean of ``values`` (low = high = mean for one
    value)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    half = float(t_half_width(v, level=level))
    return mean, mean - half, mean + half


__all__ = ["t_half_width", "t_interval"]
