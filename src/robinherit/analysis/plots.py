"""Phase diagrams from stored runs: a metric against one config path (line) or two (heatmap), with the mean
and an interval over seeds, saved as PNG and SVG.

Paths are dotted: ``pretrain.eps`` (a config path; ``config.pretrain.eps`` works too) and
``downstream.clean_head.robust_acc.0.25`` (a path into the record; keys that contain dots, such as the
budgets ``0.25``, are matched whole, and numerically, so ``robust_acc.1.0`` finds the key ``1``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from robinherit.analysis.stats import t_interval
from robinherit.errors import RobinheritError
from robinherit.outputs import replace_file
from robinherit.paths import as_float, flatten, get_path


class PlotError(RobinheritError):
    pass


class Kind(str, Enum):
    line = "line"
    heatmap = "heatmap"


class XScale(str, Enum):
    linear = "linear"
    log = "log"  # positive x only
    symlog = "symlog"  # log-like, with 0 allowed: for grids such as 0, 0.01, 0.03, 0.1, 0.3
    category = "category"  # evenly spaced, labelled with the values


class Interval(str, Enum):
    ci95 = "ci95"  # Student-t 95% interval of the mean over seeds
    sd = "sd"  # mean +- one standard deviation
    range = "range"  # min to max over seeds


def axis_value(record: dict[str, Any], path: str) -> Any:
    """A config path (``pretrain.eps``) or any record path (``config.pretrain.eps``, ``seed``)."""
    for tree, p in ((record.get("config", {}), path), (record, path)):
        try:
            return get_path(tree, p)
        except KeyError:
            continue
    raise PlotError(
        f"'{path}' is neither a config path nor a record path; config paths look like pretrain.eps, "
        f"record sections are {', '.join(sorted(record))}"
    )


def metric_value(record: dict[str, Any], path: str) -> float:
    try:
        value = get_path(record, path)
    except KeyError:
        raise PlotError(f"metric '{path}' is not in the records; {_suggest(record, path)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlotError(
            f"metric '{path}' is not a number (it is {type(value).__name__}); pick a leaf such as "
            "purification.top1_share_mean or downstream.clean_head.robust_acc.0.25"
        )
    return float(value)


def _suggest(record: dict[str, Any], path: str) -> str:
    # Offer the leaves under the deepest prefix that exists, so a typo is fixed at once.
    parts = path.split(".")
    for n in range(len(parts) - 1, -1, -1):
        node = get_path(record, ".".join(parts[:n]), None)
        if isinstance(node, dict):
            prefix = ".".join(parts[:n])
            keys = [f"{prefix}.{k}" if prefix else k for k in node]
            return "valid here: " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")
    return "see `robinherit show RUN_ID` for the record layout"


# name -> (values over seeds) -> (low, high)
def _ci95(v: np.ndarray) -> tuple[float, float]:
    _, lo, hi = t_interval(v)
    return lo, hi


def _sd(v: np.ndarray) -> tuple[float, float]:
    m, s = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return m - s, m + s


INTERVALS: dict[Interval, Callable[[np.ndarray], tuple[float, float]]] = {
    Interval.ci95: _ci95,
    Interval.sd: _sd,
    Interval.range: lambda v: (float(v.min()), float(v.max())),
}


@dataclass(frozen=True)
class Cell:
    """One (x, hue) point of a diagram: the metric's mean and interval over its runs (seeds)."""

    x: Any
    hue: Any
    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...]


def aggregate(
    records: list[dict[str, Any]],
    *,
    x: str,
    y: str,
    hue: str | None = None,
    interval: Interval | str = Interval.ci95,
) -> list[Cell]:
    """Group runs by (x, hue), one value of ``y`` per run, and summarise each group over its seeds.

    Refuses groups whose runs differ in any other config path than the seed: averaging over, say, two
    methods would be a silent mistake. Filter the records first (``--where``) or use that path as hue.
    """
    if not records:
        raise PlotError("no runs to plot: the store (or the sweep's runs in it) is empty; run the sweep first")
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for rec in records:
        metric_value(rec, y)  # a wrong metric path is the likelier mistake: report it first
        key = (_hashable(axis_value(rec, x)), _hashable(axis_value(rec, hue)) if hue else None)
        groups.setdefault(key, []).append(rec)
    ignore = {"seed", "device", _config_key(x), *([_config_key(hue)] if hue else [])}
    for key, recs in groups.items():
        flats = [flatten(r["config"], leaf=lambda v: repr(v) if isinstance(v, list) else v) for r in recs]
        varying = sorted(p for p in flats[0] if p not in ignore and len({repr(f.get(p)) for f in flats}) > 1)
        if varying:
            raise PlotError(
                f"runs at {x}={key[0]}" + (f", {hue}={key[1]}" if hue else "") + f" differ in {', '.join(varying)} "
                "besides the seed; averaging them would mix conditions. Filter with --where PATH=VALUE or use one "
                "of them as --hue"
            )
    summarise = INTERVALS[Interval(interval)]
    cells = []
    for (xv, hv), recs in groups.items():
        vals = np.array([metric_value(r, y) for r in recs])
        low, high = summarise(vals)
        cells.append(Cell(xv, hv, float(vals.mean()), low, high, len(vals), tuple(vals.tolist())))
    return sorted(cells, key=lambda c: (_sort_key(c.hue), _sort_key(c.x)))


def _config_key(path: str) -> str:
    return path.removeprefix("config.")


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float) else (1, str(v))


def filter_records(records: list[dict[str, Any]], where: list[str]) -> list[dict[str, Any]]:
    """Keep runs whose config path equals the value in each ``PATH=VALUE`` (values parsed as YAML)."""
    import yaml

    out = records
    for item in where:
        if "=" not in item:
            raise PlotError(f"--where '{item}' is not of the form PATH=VALUE, e.g. --where pretrain.method=supervised")
        path, _, text = item.partition("=")
        want = yaml.safe_load(text)
        out = [r for r in out if _equal(axis_value(r, path.strip()), want)]
    return out


def _equal(a: Any, b: Any) -> bool:
    fa, fb = as_float(a), as_float(b)
    if fa is not None and fb is not None and not isinstance(a, str):
        return fa == fb
    return str(a) == str(b)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot(
    records: list[dict[str, Any]],
    *,
    x: str,
    y: str,
    hue: str | None = None,
    kind: Kind | str = Kind.line,
    interval: Interval | str = Interval.ci95,
    out: str | Path,
    title: str | None = None,
    xscale: XScale | str = XScale.linear,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> tuple[list[Path], list[Cell]]:
    """Draw the diagram and save ``out`` as a 300-dpi .png, .svg and .pdf; returns the files and the plotted cells.
    Axes are labelled with the config fields' descriptions (``config --explain``) unless ``xlabel``/``ylabel``
    say otherwise."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed on a cluster node
    import matplotlib.pyplot as plt

    kind, interval, xscale = Kind(kind), Interval(interval), XScale(xscale)
    if kind == Kind.heatmap and hue is None:
        raise PlotError("a heatmap needs two config paths: --x for columns and --hue for rows")
    cells = aggregate(records, x=x, y=y, hue=hue, interval=interval)
    n_seeds = sorted({c.n for c in cells})
    seeds_txt = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}-{n_seeds[-1]}"
    fig, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    if kind == Kind.line:
        _draw_line(ax, cells, hue, xscale)
        ax.set_xlabel(xlabel or axis_label(x))
        ax.set_ylabel(ylabel or axis_label(y))
        ax.grid(alpha=0.3)
        subtitle = f"mean and {interval.value} over {seeds_txt} seeds"
    else:
        _draw_heatmap(fig, ax, cells, y)
        ax.set_xlabel(xlabel or axis_label(x))
        ax.set_ylabel(ylabel or (axis_label(hue) if hue else ""))
        subtitle = f"mean over {seeds_txt} seeds (cell text: mean, {interval.value} below)"
    ax.set_title((title + "\n" if title else "") + subtitle, fontsize=10)
    return save_figure(fig, out), cells


FIGURE_FORMATS = ("png", "svg", "pdf")
FIGURE_DPI = 300  # a raster a paper can print; the SVG and PDF are vectors


def save_figure(fig: Any, out: str | Path) -> list[Path]:
    """``fig`` as ``out``.png (300 dpi), ``out``.svg and ``out``.pdf (a .png, .svg or .pdf suffix on ``out`` is
    dropped first), its folder made; the figure is closed. Returns the paths."""
    import matplotlib.pyplot as plt

    stem = Path(out)
    stem = stem.with_suffix("") if stem.suffix.lower().lstrip(".") in FIGURE_FORMATS else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = [stem.with_suffix(f".{fmt}") for fmt in FIGURE_FORMATS]
    for path, fmt in zip(files, FIGURE_FORMATS, strict=True):
        # each written beside its final name and renamed over it: a full disk leaves the old figure whole
        replace_file(path, lambda tmp, fmt=fmt: fig.savefig(tmp, dpi=FIGURE_DPI, format=fmt))
    plt.close(fig)
    return files


def axis_label(path: str) -> str:
    """An axis label for a config path or metric: the field's description with the path beside it (a metric, which
    has no description, keeps its path)."""
    from robinherit.config.io import describe_path

    text = describe_path(path)
    return f"{text} ({path.removeprefix('config.')})" if text else path


def _draw_line(ax: Any, cells: list[Cell], hue: str | None, xscale: XScale) -> None:
    hues = list(dict.fromkeys(c.hue for c in cells))
    numeric = all(isinstance(c.x, int | float) and not isinstance(c.x, bool) for c in cells)
    if xscale != XScale.category and not numeric:
        xscale = XScale.category  # text values (an Enum such as pretrain.method) have no numeric axis
    numeric = xscale != XScale.category
    xs_all = sorted({c.x for c in cells}, key=_sort_key)
    for h in hues:
        cs = [c for c in cells if c.hue == h]
        pos = [c.x if numeric else xs_all.index(c.x) for c in cs]
        label = f"{hue}={_fmt(h)}" if hue else None
        (line,) = ax.plot(pos, [c.mean for c in cs], marker="o", label=label)
        low, high = [c.low for c in cs], [c.high for c in cs]
        if all(0 <= c.mean <= 1 for c in cells):  # a share or an accuracy: its band cannot leave [0, 1]
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        ax.fill_between(pos, low, high, color=line.get_color(), alpha=0.2)
    if not numeric:
        ax.set_xticks(range(len(xs_all)), [_fmt(v) for v in xs_all])
    elif xscale == XScale.log:
        if min(xs_all) <= 0:
            raise PlotError("--xscale log needs x > 0; use --xscale symlog when the grid includes 0")
        ax.set_xscale("log")
    elif xscale == XScale.symlog:
        # linear below the smallest non-zero |x|, logarithmic above: every grid value gets its own room
        nonzero = [abs(v) for v in xs_all if v != 0]
        ax.set_xscale("symlog", linthresh=min(nonzero) if nonzero else 1.0)
        ax.set_xticks(xs_all, [_fmt(v) for v in xs_all])
    if hue:
        ax.legend(fontsize=8)


def _draw_heatmap(fig: Any, ax: Any, cells: list[Cell], y: str) -> None:
    xs = sorted({c.x for c in cells}, key=_sort_key)
    hs = sorted({c.hue for c in cells}, key=_sort_key)
    grid = np.full((len(hs), len(xs)), np.nan)  # (rows = hue values, cols = x values)
    by_pos = {}
    for c in cells:
        i, j = hs.index(c.hue), xs.index(c.x)
        grid[i, j] = c.mean
        by_pos[i, j] = c
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label=y)
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs])
    ax.set_yticks(range(len(hs)), [_fmt(v) for v in hs])
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    mid = (lo + hi) / 2
    for (i, j), c in by_pos.items():
        text = f"{c.mean:.2f}\n[{c.low:.2f}, {c.high:.2f}]" if c.n > 1 else f"{c.mean:.2f}"
        color = "black" if c.mean > mid else "white"  # viridis is light at the top
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
