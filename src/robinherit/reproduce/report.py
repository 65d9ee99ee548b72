"""Report of a reproduction of Xing et al. (AISTATS 2024, arXiv 2401.15248): ``report.html`` (self-contained,
PNG figures embedded) and ``report.md``.

The claims table comes first, one row per claim of the result, whatever the registry held: passed, failed or
not run (with the reason and the fix). Then the evaluation self-checks, then each claim's figures, drawn by the
claim's own module (:mod:`robinherit.reproduce.claims`); every figure has a one-sentence caption with the
numbers filled in from the runs.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robinherit.outputs import replace_file, write_text
from robinherit.reproduce import CLAIMS, Figure, ReproduceResult
from robinherit.reproduce.timing import html as timing_html
from robinherit.reproduce.timing import markdown as timing_markdown
from robinherit.runs.store import ResultStore

__all__ = ["build_figures", "claims_markdown", "self_check_warnings", "write_report"]

STATUS_TEXT = {"pass": "PASS", "fail": "FAIL", "not run": "NOT RUN"}


def _num(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _fmt_ci(ci: Sequence[float | None]) -> str:
    if any(v is None or not math.isfinite(v) for v in ci):
        return "n/a"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _status(c: dict[str, Any]) -> str:
    return c.get("status") or ("pass" if c["passed"] else "fail")


def claims_markdown(claims: list[dict[str, Any]]) -> str:
    lines = ["| # | claim | passed | effect | 95% CI | p | seeds |", "|---|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(
            f"| {c['id']} | {c['name']} | {STATUS_TEXT[_status(c)]} | {_num(c['effect'], '+.3f')} | "
            f"{_fmt_ci(c['ci95'])} | {_num(c['p_value'], '.2g')} | {c['n_seeds']} |"
        )
    return "\n".join(lines)


def self_check_warnings(result: ReproduceResult) -> list[str]:
    """Every evaluation warning of the runs behind the claims, prefixed with where it came from."""
    out = []
    for fam, arms in result.records.items():
        for arm, recs in arms.items():
            for rec in recs:
                for head, r in rec["downstream"].items():
                    out += [f"{fam} {arm} seed {rec['seed']} {head}: {w}" for w in r.get("warnings", [])]
    return out


def build_figures(result: ReproduceResult, store: ResultStore | None = None) -> list[Figure]:
    """Every figure of the claims that ran, in row order, each drawn by its claim's module. ``store`` is
    accepted for older callers; the figures read the store the result was computed with."""
    figs: list[Figure] = []
    for row in result.claims:
        spec = CLAIMS.get(row["id"])
        if spec is not None and _status(row) != "not run":
            figs += spec.figures(row, result.evidence)
    return figs


def _md_row_note(c: dict[str, Any]) -> list[str]:
    lines = [f"- **{c['id']}. {c['name']}**: {c['statement']}"]
    if _status(c) == "not run":
        lines.append(f"  Not run: {c['reason']}. Fix: {c['fix']}.")
    elif c.get("side_condition"):
        lines.append(f"  Side condition: {c['side_condition']} ({'ok' if c['side_condition_ok'] else 'not met'}).")
    return lines


def _html_row(c: dict[str, Any]) -> str:
    status = _status(c)
    note = ""
    if status == "not run":
        note = f"<br><small><i>not run:</i> {html.escape(c['reason'])}. <i>Fix:</i> {html.escape(c['fix'])}.</small>"
    elif c.get("side_condition"):
        ok = "met" if c["side_condition_ok"] else "NOT met"
        note = f"<br><small><i>side condition ({ok}):</i> {html.escape(c['side_condition'])}</small>"
    css = status.replace(" ", "-")
    return (
        f"<tr class='{css}'><td>{html.escape(str(c['id']))}</td><td><b>{html.escape(c['name'])}</b><br>"
        f"<small>{html.escape(c['statement'])}</small>{note}</td><td class='status'>{STATUS_TEXT[status]}</td>"
        f"<td>{_num(c['effect'], '+.3f')}</td><td>{_fmt_ci(c['ci95'])}</td><td>{_num(c['p_value'], '.2g')}</td>"
        f"<td>{c['n_seeds']}</td></tr>"
    )


def _summary(result: ReproduceResult) -> str:
    mode = "quick" if result.settings["quick"] else "full"
    seeds = ", ".join(str(s) for s in result.settings["seeds"])
    counts = {s: sum(_status(c) == s for c in result.claims) for s in STATUS_TEXT}
    not_run = f", {counts['not run']} not run" if counts["not run"] else ""
    return f"Mode: {mode}; seeds: {seeds}; {counts['pass']}/{len(result.claims)} claims passed{not_run}."


def write_report(result: ReproduceResult, store: ResultStore, out_dir: Path) -> tuple[Path, Path]:
    """report.md and report.html (figures embedded) in ``out_dir``; returns (html, md)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = build_figures(result, store)
    summary = _summary(result)
    warnings = self_check_warnings(result)
    md_path = out_dir / "report.md"
    write_text(md_path, _markdown(result, summary, warnings, figs))
    html_path = out_dir / "report.html"
    write_text(html_path, _html(result, summary, warnings, figs))
    write_figure_files(figs, out_dir / "figures")
    return html_path, md_path


def write_figure_files(figs: list, folder: Path) -> list[Path]:
    """Every figure of the report as ``NN-title.png`` (300 dpi), ``.svg`` and ``.pdf`` in ``folder``, each replaced
    atomically."""
    paths = []
    for i, f in enumerate(figs, 1):
        slug = re.sub(r"[^a-z0-9]+", "-", f.title.lower()).strip("-")[:60]
        for ext in ("png", "svg", "pdf"):
            data = f.png if ext == "png" else getattr(f.png, ext, None)
            if data is not None:
                paths.append(replace_file(folder / f"{i:02d}-{slug}.{ext}", lambda tmp, d=data: tmp.write_bytes(d)))
    return paths


def _markdown(result: ReproduceResult, summary: str, warnings: list[str], figs: list) -> str:
    md = [
        "# robinherit reproduction report",
        "",
        summary,
        "",
        claims_markdown(result.claims),
        "",
        "A claim passes when its 95% interval over seeds excludes zero in the claimed direction and its side "
        "condition (if any) holds.",
        "",
    ]
    for c in result.claims:
        md += _md_row_note(c)
    md.append("")
    md.append(f"Self-checks: {len(warnings)} warning(s)." + "".join(f"\n- {w}" for w in warnings))
    md.append("")
    for f in figs:
        md.append(f"- *{f.title}*: {f.caption}")
    if result.timing:
        md += ["", *timing_markdown(result.timing)]
    return "\n".join(md) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.4em; text-align: left; vertical-align: top; }
tr.pass td.status { color: #1a7f37; font-weight: bold; } tr.fail td.status { color: #c0392b; font-weight: bold; }
tr.not-run td.status { color: #8a6d00; font-weight: bold; }
figure { margin: 2em 0; } img { max-width: 100%; } figcaption { color: #444; font-size: 0.95em; }
small { color: #555; }
"""


def _html(result: ReproduceResult, summary: str, warnings: list[str], figs: list) -> str:
    check_html = (
        "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
        if warnings
        else "<p>No evaluation self-check fired (robust &le; clean, non-increasing in eps, within budget, "
        "no vanishing gradients, certified &le; attacked).</p>"
    )
    sections = [_html_figure(i, f) for i, f in enumerate(figs, 1)]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>robinherit reproduction report</title>
<style>{_STYLE}</style></head><body>
<h1>robinherit reproduction report</h1>
<table id="claims"><thead><tr><th>#</th><th>claim</th><th>result</th><th>effect</th><th>95% CI</th><th>p</th>
<th>seeds</th></tr></thead><tbody>
{"".join(_html_row(c) for c in result.claims)}
</tbody></table>
<p>{html.escape(summary)} A claim passes when its 95% t interval over seeds excludes zero in the claimed direction
and its side condition (if any) holds; p is a one-sided paired t test. Robust accuracy: l2 PGD with random
restarts, worst case per example.</p>
<h2>Self-checks</h2>
{check_html}
{"".join(sections)}
{timing_html(result.timing)}
</body></html>
"""


def _html_figure(i: int, f: Any) -> str:
    b64 = base64.b64encode(f.png).decode()
    return (
        f"<figure id='fig{i}'><h3>Figure {i}. {html.escape(f.title)}</h3>"
        f"<img alt='{html.escape(f.title)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
    )
