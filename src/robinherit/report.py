"""Report of a reproduction: ``report.html`` (self-contained, PNG figures embedded) and ``report.md``.

The claims table comes first; every figure has a one-sentence caption that says what it shows, with the
numbers filled in from the runs.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on a cluster
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from robinherit.purification import loadings
from robinherit.reproduce import EPS_REF, ReproduceResult
from robinherit.store import ResultStore

COLORS = {"AT": "#c0392b", "clean": "#2c7fb8", "e2e": "#555555"}


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% t half-width over ``axis`` (0 half-width for a single seed)."""
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    half = stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, half


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- figures


def fig_purity_hist(records: dict[str, dict[str, list[dict]]]) -> tuple[bytes, str]:
    fams = list(records)
    fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 3.4), squeeze=False)
    parts = []
    for ax, fam in zip(axes[0], fams, strict=True):
        bins = np.linspace(0, 1, 26)
        for kind, label in (("clean", "clean"), ("at", "AT")):
            shares = np.concatenate([r["purification"]["per_node_top1"] for r in records[fam][kind]])
            ax.hist(shares, bins=bins, alpha=0.6, color=COLORS[label], label=f"{label} pre-training", density=True)
        mean_at = np.mean([r["purification"]["top1_share_mean"] for r in records[fam]["at"]])
        mean_cl = np.mean([r["purification"]["top1_share_mean"] for r in records[fam]["clean"]])
        parts.append(f"{fam}: mean top-1 share {mean_cl:.2f} clean vs {mean_at:.2f} AT")
        ax.set_title(f"{fam} pre-training")
        ax.set_xlabel("top-1 share of a node's loading energy")
        ax.set_ylabel("density over nodes (all seeds)")
        ax.legend(frameon=False)
    caption = (
        "Adversarial pre-training moves hidden nodes towards a single true feature (top-1 share near 1), clean "
        f"pre-training leaves them mixed ({'; '.join(parts)})."
    )
    return _png(fig), caption


def _sorted_abs_loadings(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """|alpha| of each node, rows normalised, nodes sorted by their strongest feature then by purity."""
    alpha = loadings(torch.as_tensor(w), torch.as_tensor(m)).numpy()
    a = np.abs(alpha) / np.abs(alpha).max(axis=1, keepdims=True).clip(1e-12)
    share = (alpha**2).max(axis=1) / (alpha**2).sum(axis=1).clip(1e-12)
    order = np.lexsort((-share, alpha.__abs__().argmax(axis=1)))
    return a[order]


def fig_heatmaps(records: dict[str, dict[str, list[dict]]], store: ResultStore) -> tuple[bytes, str] | None:
    panels = []
    for fam in records:
        for kind, label in (("clean", "clean"), ("at", "AT")):
            rec = records[fam][kind][0]
            art = store.artifact(rec["run_id"], "encoder")
            if art is not None:
                panels.append((f"{fam}, {label} (seed {rec['seed']})", _sorted_abs_loadings(art["W"], art["M"])))
    if not panels:
        return None
    cols = 2
    rows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.8 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45)  # room for each row's x label under the next row's titles
    for i, (ax, (title, a)) in enumerate(zip(axes.flat, panels, strict=False)):
        im = ax.imshow(a, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("true feature j")
        if i % cols == 0:
            ax.set_ylabel("hidden node\n(sorted by strongest feature)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label="|loading| / max |loading| of the node")
    caption = (
        "Loadings |M^+ w_i| of every hidden node on every true feature: after adversarial pre-training each row has "
        "one bright entry (a purified node); after clean pre-training rows are smeared over many features."
    )
    return _png(fig), caption


def _curve(recs: list[dict], head: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = list(recs[0]["downstream"][f"{head}_head"]["robust_acc"])
    vals = np.array([[r["downstream"][f"{head}_head"]["robust_acc"][k] for k in keys] for r in recs])
    mean, half = mean_ci(vals)
    return np.array([float(k) for k in keys]), mean, half


def fig_robust_curves(records: dict[str, dict[str, list[dict]]], e2e: list[dict]) -> tuple[bytes, str]:
    sup = records["supervised"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    styles = {"clean": "-", "adversarial": "--"}
    heads = [h.removesuffix("_head") for h in sup["at"][0]["downstream"]]
    at_ref = cl_ref = None
    for kind, label in (("at", "AT"), ("clean", "clean")):
        for head in heads:
            x, mean, half = _curve(sup[kind], head)
            ax.errorbar(
                x,
                mean,
                yerr=half,
                fmt=styles.get(head, ":"),
                marker="o",
                ms=3,
                capsize=2,
                color=COLORS[label],
                label=f"{label} pre-train + {head} head",
            )
            if head == "clean":
                ref = float(np.interp(EPS_REF, x, mean))
                at_ref, cl_ref = (ref, cl_ref) if kind == "at" else (at_ref, ref)
    if "certified_acc" in sup["at"][0]["downstream"]["clean_head"]:
        keys = list(sup["at"][0]["downstream"]["clean_head"]["certified_acc"])
        cert = np.array([[r["downstream"]["clean_head"]["certified_acc"][k] for k in keys] for r in sup["at"]])
        ax.plot(
            [float(k) for k in keys],
            cert.mean(axis=0),
            "-.",
            color=COLORS["AT"],
            lw=1,
            alpha=0.7,
            label="AT pre-train + clean head: certified (lower bound)",
        )
    if e2e:
        keys = list(e2e[0]["robust_acc"])
        vals = np.array([[e["robust_acc"][k] for k in keys] for e in e2e])
        mean, half = mean_ci(vals)
        x = np.array([float(k) for k in keys])
        ax.errorbar(
            x,
            mean,
            yerr=half,
            fmt=":",
            lw=2,
            capsize=2,
            color=COLORS["e2e"],
            label="end-to-end AT on the downstream task",
        )
    ax.axvline(EPS_REF, color="#999", lw=0.8)
    ax.set_xlabel("l2 attack budget eps (PGD with restarts); bars: 95% interval over seeds")
    ax.set_ylabel("downstream robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7.5, frameon=False)
    caption = (
        f"Downstream robust accuracy against the attack budget (mean and 95% interval over seeds): a clean head on "
        f"adversarially pre-trained features ({at_ref:.2f} at eps {EPS_REF}) tracks end-to-end adversarial training, "
        f"while a clean head on clean features collapses ({cl_ref:.2f})."
    )
    return _png(fig), caption


def fig_mechanism(mechanism: list[dict]) -> tuple[bytes, str]:
    gammas = np.array(mechanism[0]["gammas"])
    rob = np.array([m["robust"] for m in mechanism])
    cln = np.array([m["clean"] for m in mechanism])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for vals, label, color in ((cln, "clean accuracy", "#777"), (rob, f"robust accuracy (eps {EPS_REF})", "#c0392b")):
        mean, half = mean_ci(vals)
        ax.errorbar(gammas, mean, yerr=half, marker="o", capsize=3, color=color, label=label)
    ax.set_xlabel("gamma: weight of the shared dense direction v added to every pure node")
    ax.set_ylabel("downstream accuracy (clean head)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False)
    mean = rob.mean(axis=0)
    caption = (
        f"Pure nodes w_i = M_i are robust ({mean[0]:.2f} at gamma 0); mixing one shared dense direction into every "
        f"node lowers robust accuracy step by step to {mean[-1]:.2f} at gamma {gammas[-1]:g}, while clean accuracy "
        "stays high: the non-robustness of clean features is the dense mixture."
    )
    return _png(fig), caption


def fig_cost(claim: dict[str, Any]) -> tuple[bytes, str]:
    ps = claim["per_seed"]
    head_t, e2e_t = np.array(ps["clean_head_seconds"]), np.array(ps["end_to_end_at_seconds"])
    d = claim["details"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = ["clean head on\nAT features", "end-to-end AT\non downstream"]
    for ax, vals, ylabel in (
        (axes[0], [head_t, e2e_t], "downstream wall time (s)"),
        (axes[1], [[d["clean_head_grad_evals"]], [d["end_to_end_grad_evals"]]], "example-gradient evaluations"),
    ):
        means = [float(np.mean(v)) for v in vals]
        ax.bar(labels, means, color=[COLORS["AT"], COLORS["e2e"]])
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        for i, v in enumerate(means):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    frac = float(np.mean(head_t / e2e_t))
    caption = (
        f"Cost of a robust downstream model once a robust encoder exists: a clean head takes {frac:.1%} of the wall "
        f"time of end-to-end adversarial training on the downstream task (robust accuracy at eps {EPS_REF}: "
        f"{np.mean(ps['inheritance_robust']):.2f} vs {np.mean(ps['end_to_end_robust']):.2f})."
    )
    return _png(fig), caption


def fig_real(real: dict[str, Any], claim: dict[str, Any]) -> tuple[bytes, str]:
    ps = claim["per_seed"]
    a, c = np.array(ps["at_pretrain_robust"]), np.array(ps["clean_pretrain_robust"])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, (vals, label) in enumerate(((c, "clean"), (a, "AT"))):
        mean, half = mean_ci(vals[:, None])
        ax.bar(i, mean[0], yerr=half[0], capsize=4, color=COLORS[label])
        ax.scatter(np.full(vals.size, i), vals, color="k", s=12, zorder=3)
    ax.set_xticks([0, 1], ["clean pre-training", "AT pre-training"])
    ax.set_ylabel(f"robust accuracy, clean head ({real.get('norm', '')} eps {real.get('eps', '')})")
    ax.set_ylim(0, 1.02)
    caption = (
        f"Real data ({real.get('attack', 'attack')}): a clean head on adversarially pre-trained features reaches "
        f"{a.mean():.2f} robust accuracy vs {c.mean():.2f} on clean features (per-seed points shown)."
    )
    return _png(fig), caption


# --------------------------------------------------------------------------------------------- writers


def _fmt_ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def claims_markdown(claims: list[dict[str, Any]]) -> str:
    lines = ["| # | claim | passed | effect | 95% CI | p | seeds |", "|---|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(
            f"| {c['id']} | {c['name']} | {'PASS' if c['passed'] else 'FAIL'} | {c['effect']:+.3f} | "
            f"{_fmt_ci(c['ci95'])} | {c['p_value']:.2g} | {c['n_seeds']} |"
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


def build_figures(result: ReproduceResult, store: ResultStore) -> list[tuple[str, bytes, str]]:
    """(title, png, caption) for every figure the result supports."""
    figs: list[tuple[str, bytes, str]] = []
    by_id = {c["id"]: c for c in result.claims}
    if result.records:
        figs.append(("Purity histograms", *fig_purity_hist(result.records)))
        hm = fig_heatmaps(result.records, store)
        if hm is not None:
            figs.append(("Loading heatmaps", *hm))
    if "supervised" in result.records:
        figs.append(("Robust accuracy vs eps", *fig_robust_curves(result.records, result.end_to_end)))
    if result.mechanism:
        figs.append(("Mechanism: pure nodes plus a shared dense mixture", *fig_mechanism(result.mechanism)))
    if 6 in by_id:
        figs.append(("Cost: inheritance vs end-to-end adversarial training", *fig_cost(by_id[6])))
    if result.real is not None and 7 in by_id:
        figs.append(("Real data", *fig_real(result.real, by_id[7])))
    return figs


def write_report(result: ReproduceResult, store: ResultStore, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = build_figures(result, store)
    mode = "quick" if result.settings["quick"] else "full"
    seeds = ", ".join(str(s) for s in result.settings["seeds"])
    n_pass = sum(c["passed"] for c in result.claims)

    md = [
        "# robinherit reproduction report",
        "",
        f"Mode: {mode}; seeds: {seeds}; {n_pass}/{len(result.claims)} claims passed.",
        "",
        claims_markdown(result.claims),
        "",
        "A claim passes when its 95% interval over seeds excludes zero in the claimed direction and its side "
        "condition (if any) holds.",
        "",
    ]
    for c in result.claims:
        md.append(f"- **{c['id']}. {c['name']}**: {c['statement']}")
        if c.get("side_condition"):
            md.append(f"  Side condition: {c['side_condition']} ({'ok' if c['side_condition_ok'] else 'not met'}).")
    md.append("")
    warnings = self_check_warnings(result)
    md.append(f"Self-checks: {len(warnings)} warning(s)." + "".join(f"\n- {w}" for w in warnings))
    md.append("")
    for title, _png_bytes, caption in figs:
        md.append(f"- *{title}*: {caption}")
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    rows = []
    for c in result.claims:
        status = "pass" if c["passed"] else "fail"
        side = ""
        if c.get("side_condition"):
            ok = "met" if c["side_condition_ok"] else "NOT met"
            side = f"<br><small><i>side condition ({ok}):</i> {html.escape(c['side_condition'])}</small>"
        rows.append(
            f"<tr class='{status}'><td>{c['id']}</td><td><b>{html.escape(c['name'])}</b><br>"
            f"<small>{html.escape(c['statement'])}</small>{side}</td><td class='status'>{status.upper()}</td>"
            f"<td>{c['effect']:+.3f}</td><td>{_fmt_ci(c['ci95'])}</td><td>{c['p_value']:.2g}</td>"
            f"<td>{c['n_seeds']}</td></tr>"
        )
    check_html = (
        "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
        if warnings
        else "<p>No evaluation self-check fired (robust &le; clean, non-increasing in eps, within budget, "
        "no vanishing gradients, certified &le; attacked).</p>"
    )
    sections = []
    for i, (title, png, caption) in enumerate(figs, 1):
        b64 = base64.b64encode(png).decode()
        sections.append(
            f"<figure id='fig{i}'><h3>Figure {i}. {html.escape(title)}</h3>"
            f"<img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>robinherit reproduction report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.92em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.4em; text-align: left; vertical-align: top; }}
tr.pass td.status {{ color: #1a7f37; font-weight: bold; }} tr.fail td.status {{ color: #c0392b; font-weight: bold; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #444; font-size: 0.95em; }}
small {{ color: #555; }}
</style></head><body>
<h1>robinherit reproduction report</h1>
<table id="claims"><thead><tr><th>#</th><th>claim</th><th>result</th><th>effect</th><th>95% CI</th><th>p</th>
<th>seeds</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<p>Mode: {mode}; seeds: {seeds}; {n_pass}/{len(result.claims)} claims passed. A claim passes when its 95% t interval
over seeds excludes zero in the claimed direction and its side condition (if any) holds; p is a one-sided paired t
test. Robust accuracy: l2 PGD with random restarts, worst case per example.</p>
<h2>Self-checks</h2>
{check_html}
{"".join(sections)}
</body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return html_path, md_path
