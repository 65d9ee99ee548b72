"""Does one metric predict another across runs? Spearman's rank correlation with a bootstrap interval, and a
scatter figure: e.g. whether a pre-trained encoder's purity (``purification.top1_share_mean``) predicts how
robust a clean head on its features is (``downstream.clean_head.robust_acc.0.1``) across a sweep of AT budgets.

Spearman's rho (scipy.stats.spearmanr) asks for a monotone relation, not a linear one, so it is the same for any
increasing rescaling of either metric. The interval resamples runs with replacement (scipy.stats.bootstrap,
paired: a run's two metrics stay together; the percentile interval over the resamples that have a rho, since one
with a constant metric has none), so it reflects how many runs the estimate rests on; a sweep's seeds are
resampled as independent runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robinherit.analysis.plots import PlotError, _hashable, _sort_key, axis_value, metric_value, save_figure


@dataclass(frozen=True)
class Correlation:
    x: str
    y: str
    n: int
    rho: float
    ci95: tuple[float, float]
    p_value: float
    points: list[tuple[float, float]] = field(repr=False)
    groups: list[Any] = field(repr=False)  # the value of ``color_by`` per point (None without one)

    def summary(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "y": self.y,
            "n_runs": self.n,
            "spearman_rho": round(self.rho, 4),
            "ci95": [round(v, 4) for v in self.ci95],
            "p_value": float(f"{self.p_value:.3g}"),
        }


def spearman(xs: np.ndarray, ys: np.ndarray) -> float:
    from scipy import stats

    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return float("nan")  # a constant metric has no ranks to correlate
    return float(stats.spearmanr(xs, ys).statistic)


def correlate(
    records: list[dict[str, Any]],
    x: str,
    y: str,
    *,
    color_by: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> Correlation:
    """Spearman's rho between metrics ``x`` and ``y`` over ``records`` (one point per run), its 95% bootstrap
    interval over runs and its permutation-free p-value (scipy's t approximation)."""
    from scipy import stats

    if len(records) < 4:
        raise PlotError(f"{len(records)} runs are too few to correlate; a rank correlation needs at least 4")
    xs = np.array([metric_value(r, x) for r in records])
    ys = np.array([metric_value(r, y) for r in records])
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        const = x if np.ptp(xs) == 0 else y
        raise PlotError(f"'{const}' is the same in every run ({xs[0] if const == x else ys[0]:g}); nothing to rank")
    res = stats.spearmanr(xs, ys)
    with warnings.catch_warnings():
        # scipy warns of a degenerate distribution when some resamples are NaN; they are left out below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = _bootstrap(xs, ys, resamples, seed)
    # scipy's percentile interval is NaN as soon as one resample is (a resample with a constant metric has no
    # ranks); the interval is taken over the resamples that have a rho
    low, high = np.nanpercentile(boot.bootstrap_distribution, [2.5, 97.5])
    groups = [axis_value(r, color_by) for r in records] if color_by else [None] * len(records)
    return Correlation(
        x,
        y,
        len(records),
        float(res.statistic),
        (float(low), float(high)),
        float(res.pvalue),
        list(zip(xs.tolist(), ys.tolist(), strict=True)),
        groups,
    )


def _bootstrap(xs: np.ndarray, ys: np.ndarray, resamples: int, seed: int) -> Any:
    from scipy import stats

    return stats.bootstrap(
        (xs, ys),
        spearman,  # nan for a resample in which one metric is constant
        paired=True,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )


def scatter(c: Correlation, out: str | Path, *, color_by: str | None = None, title: str | None = None) -> list[Path]:
    """The runs as points (coloured by ``color_by``'s value), with rho and its interval in the title; PNG + SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 4.0), layout="constrained")
    pts = np.array(c.points)
    groups = [_hashable(g) for g in c.groups]  # a list-valued path (e.g. data.pretrain_classes) as a tuple
    values = sorted({g for g in groups if g is not None}, key=_sort_key)
    if values:
        cmap = plt.get_cmap("viridis", max(len(values), 2))
        for i, v in enumerate(values):
            sel = np.array([g == v for g in groups])
            ax.scatter(pts[sel, 0], pts[sel, 1], s=28, color=cmap(i), label=f"{color_by} = {v}")
        ax.legend(fontsize=8)
    else:
        ax.scatter(pts[:, 0], pts[:, 1], s=28, color="#2c7fb8")
    ax.set_xlabel(c.x)
    ax.set_ylabel(c.y)
    head = f"Spearman rho = {c.rho:+.2f} [{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}], {c.n} runs"
    ax.set_title(f"{title}\n{head}" if title else head, fontsize=9)
    return save_figure(fig, out)
