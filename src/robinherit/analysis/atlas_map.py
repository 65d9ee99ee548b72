"""An atlas's outputs (``robinherit.reproduce.atlas``): per claim of Xing et al. (AISTATS 2024, arXiv 2401.15248)
small multiples, one panel per pair of knobs, each cell coloured by its verdict and shaded by its effect size; a
table of every cell; and the boundary of each claim in words, generated from that table.

Rows are the cells' claim rows: ``claim``, ``panel``, ``x_knob``, ``x``, ``y_knob``, ``y``, ``effect``, ``ci95_low``,
``ci95_high``, ``verdict`` (pass, fail or undecided) and ``side_condition_ok``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from robinherit.analysis.export import write_csv, write_parquet
from robinherit.outputs import replace_file, write_text

VERDICT_COLORS = {"pass": "#1a9850", "fail": "#d73027", "undecided": "#9e9e9e"}
FORMATS = ("svg", "pdf", "png")


def _panels(rows: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["panel"], []).append(r)
    return dict(sorted(out.items()))


def _axis(rows: Sequence[dict[str, Any]], key: str) -> list[Any]:
    seen: list[Any] = []
    for r in rows:
        if r[key] not in seen:
            seen.append(r[key])
    return seen


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _draw_panel(ax: Any, rows: Sequence[dict[str, Any]], emax: float) -> None:
    xs, ys = _axis(rows, "x"), _axis(rows, "y")
    for r in rows:
        i, j = xs.index(r["x"]), ys.index(r["y"])
        effect = r["effect"] if _finite(r["effect"]) else 0.0
        alpha = 0.25 + 0.75 * min(1.0, abs(effect) / emax) if emax > 0 else 1.0
        ax.add_patch(
            _rect(
                i,
                j,
                to_rgba(VERDICT_COLORS[r["verdict"]], alpha),
                hatch="//" if r["side_condition_ok"] is False else "",
            )
        )
        ax.text(i, j, f"{effect:+.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(-0.5, len(ys) - 0.5)
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], fontsize=7)
    ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize=7)
    ax.set_xlabel(rows[0]["x_knob"], fontsize=8)
    ax.set_ylabel(rows[0]["y_knob"], fontsize=8)


def _rect(i: int, j: int, color: Any, hatch: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((i - 0.5, j - 0.5), 1, 1, facecolor=color, edgecolor="white", hatch=hatch, lw=1)


def _legend(fig: Figure) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, label=v) for v, c in VERDICT_COLORS.items()]
    handles.append(Patch(facecolor="white", edgecolor="#555", hatch="//", label="side condition fails"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)


def draw_map(rows: Sequence[dict[str, Any]], claims: Sequence[str], names: dict[str, str]) -> Figure:
    """One row of panels per claim; a cell's colour is its verdict, its opacity its |effect| relative to the
    claim's largest, its text the effect (mean paired difference over seeds)."""
    panels = _panels(rows)
    n_cols = max(len(panels), 1)
    fig = Figure(figsize=(3.0 * n_cols, 2.6 * len(claims) + 0.6), layout="constrained")
    axes = fig.subplots(len(claims), n_cols, squeeze=False)
    for ci, cid in enumerate(claims):
        mine = [r for r in rows if r["claim"] == cid]
        emax = max(
            (abs(r["effect"]) for r in mine if r["effect"] is not None and math.isfinite(r["effect"])), default=0
        )
        for pi, (_, prow) in enumerate(panels.items()):
            ax = axes[ci][pi]
            cell_rows = [r for r in prow if r["claim"] == cid]
            if not cell_rows:
                ax.axis("off")
                continue
            _draw_panel(ax, cell_rows, emax)
            if pi == 0:
                ax.set_title(names.get(cid, cid), fontsize=9, loc="left")
    _legend(fig)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """``stem``.svg, .pdf and a 300-dpi .png, each replaced atomically."""
    out = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        out.append(replace_file(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=300)))
    return out


def write_maps(rows: Sequence[dict[str, Any]], out_dir: Path, name: str, names: dict[str, str]) -> list[Path]:
    """The map of every claim (``atlas_map``) and one per claim (``map_claim_<id>``), in each of :data:`FORMATS`."""
    claims = list(dict.fromkeys(r["claim"] for r in rows))
    files = save_figure(draw_map(rows, claims, names), out_dir / "atlas_map")
    for cid in claims:
        files += save_figure(draw_map(rows, [cid], names), out_dir / f"map_claim_{cid}")
    return files


def write_table(rows: list[dict[str, Any]], stem: Path) -> list[Path]:
    """Every cell's rows as CSV, and as Parquet where pyarrow is installed."""
    files = [write_csv(rows, stem.with_suffix(".csv"))]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return files
    return [*files, write_parquet(rows, stem.with_suffix(".parquet"))]


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _where(knob: str, chosen: list[Any], values: list[Any]) -> str:
    """``chosen`` (a subset of ``values``, in their order) in words: all, one, a tail, a head, or a list."""
    if chosen == values:
        return f"at every {knob}"
    if len(chosen) == 1:
        return f"at {knob} = {chosen[0]}"
    if _numeric(values) and values == sorted(values):
        if chosen == values[len(values) - len(chosen) :]:
            return f"when {knob} >= {chosen[0]}"
        if chosen == values[: len(chosen)]:
            return f"when {knob} <= {chosen[-1]}"
    return f"when {knob} in {{{', '.join(str(v) for v in chosen)}}}"


def _panel_sentence(name: str, rows: list[dict[str, Any]]) -> str:
    xk, yk = rows[0]["x_knob"], rows[0]["y_knob"]
    xs, ys = _axis(rows, "x"), _axis(rows, "y")
    verdict = {(r["x"], r["y"]): r["verdict"] for r in rows}
    side = sum(1 for r in rows if r["verdict"] == "pass" and r["side_condition_ok"] is False)
    tail = f" Its side condition fails in {side} of the passing cells." if side else ""
    head = f"{name}, over {xk} x {yk}:"
    if all(v == "pass" for v in verdict.values()):
        return f"{head} passes in every cell.{tail}"
    parts = []
    for kind in ("fail", "undecided"):
        by_y = {y: [x for x in xs if verdict.get((x, y)) == kind] for y in ys}
        texts = {y: _where(xk, chosen, xs) for y, chosen in by_y.items() if chosen}
        if not texts:
            continue
        word = "fails" if kind == "fail" else "undecided"
        if len(texts) == len(ys) and len(set(texts.values())) == 1:
            parts.append(f"{word} {next(iter(texts.values()))}, whatever {yk}")
        else:
            parts.append(f"{word} " + " and ".join(f"{t} ({yk} = {y})" for y, t in texts.items()))
    rest = "passes elsewhere" if any(v == "pass" for v in verdict.values()) else "passes nowhere"
    return f"{head} " + "; ".join(parts) + f"; {rest}.{tail}"


def boundary_sentences(rows: Sequence[dict[str, Any]], names: dict[str, str]) -> list[str]:
    """Per claim and panel, where the claim fails or is undecided, in words."""
    out = []
    for cid in dict.fromkeys(r["claim"] for r in rows):
        for _, prow in _panels([r for r in rows if r["claim"] == cid]).items():
            out.append(_panel_sentence(names.get(cid, f"claim {cid}"), prow))
    return out


def _fmt(v: Any) -> str:
    return f"{v:+.3f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def write_summary(
    path: Path, spec: Any, rows: list[dict[str, Any]], boundary: list[str], runs: Any, seconds: float
) -> Path:
    """``atlas.md``: what ran, the boundary in words, and every cell's verdict."""
    lines = [
        f"# Atlas {spec.name}",
        "",
        spec.description.strip(),
        "",
        f"{len(runs.cells)} cells, seeds {list(spec.seeds)}, {runs.total} runs ({runs.ran} computed by this call, the "
        f"rest from the store), {seconds:.0f} s. Budget: eps_rel {spec.eps_rel} of the feature scale unless a panel "
        "sets it.",
        "",
        "## Where each claim holds",
        "",
        *[f"- {s}" for s in boundary],
        "",
        "## Cells",
        "",
        "| claim | x | y | effect | 95% CI | verdict | side condition |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['claim']} | {r['x_knob']} = {r['x']} | {r['y_knob']} = {r['y']} | {_fmt(r['effect'])} | "
            f"[{_fmt(r['ci95_low'])}, {_fmt(r['ci95_high'])}] | {r['verdict']} | {r['side_condition_ok']} |"
        )
    return write_text(path, "\n".join(lines) + "\n")
