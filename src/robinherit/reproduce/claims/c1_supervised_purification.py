"""Claim 1, supervised purification (Xing et al., AISTATS 2024, arXiv 2401.15248, after Allen-Zhu & Li 2020,
"Feature purification"): adversarial pre-training makes hidden nodes pick one true feature each.

Effect per seed: the mean top-1 share of a node's loadings on the true features, AT minus clean pre-training.
"Purer" alone is not purification (a linear network trained adversarially is a little purer than one trained
cleanly, yet no node is pure), so most AT nodes must also be pure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robinherit.evaluation.purity import loadings
from robinherit.reproduce.spec import AT_EPS, ClaimSpec, Evidence, Figure, SideCondition, Statistic

PURE_MAJORITY = 0.5  # share of AT nodes with top-1 share > 0.5 that "most nodes are pure" asks for


class Purification(ClaimSpec):
    arms = ("at", "clean")

    def __init__(self, id: str, number: int, family: str):
        self.id, self.number, self.family = id, number, family
        self.name = f"{family} purification"

    def statistic(self, ev: Evidence) -> Statistic:
        at, clean = self.runs(ev, "at"), self.runs(ev, "clean")
        a = [r["purification"]["top1_share_mean"] for r in at]
        c = [r["purification"]["top1_share_mean"] for r in clean]
        return Statistic(
            f"{self.name.capitalize()}: adversarial pre-training (eps {AT_EPS}) purifies hidden nodes: a higher "
            "mean top-1 share of loadings on the true features than clean pre-training, with most AT nodes pure.",
            {"at_top1_share": a, "clean_top1_share": c},
            [x - y for x, y in zip(a, c, strict=True)],
            details={
                "at_frac_pure_0.5": [r["purification"]["frac_pure"]["0.5"] for r in at],
                "clean_frac_pure_0.5": [r["purification"]["frac_pure"]["0.5"] for r in clean],
            },
        )

    def side_condition(self, ev: Evidence, stat: Statistic) -> SideCondition:
        mean_pure = float(np.mean(stat.details["at_frac_pure_0.5"]))
        return SideCondition(
            f"mean share of AT nodes with top-1 share > 0.5 is >= {PURE_MAJORITY} (got {mean_pure:.2f})",
            mean_pure >= PURE_MAJORITY,
        )

    def figures(self, row: dict[str, Any], ev: Evidence) -> list[Figure]:
        recs = ev.records[self.family]
        out = [Figure(f"Purity histogram, {self.family} pre-training", *purity_hist(self.family, recs))]
        heat = heatmaps(self.family, recs, ev)
        return out + ([Figure(f"Loading heatmaps, {self.family} pre-training", *heat)] if heat else [])


def purity_hist(family: str, recs: dict[str, list[dict]]) -> tuple[bytes, str]:
    from robinherit.reproduce.figures import ARM_LABELS, COLORS, plt, png

    fig, ax = plt.subplots(figsize=(5, 3.4))
    bins = np.linspace(0, 1, 26)
    for arm, label in ARM_LABELS:
        shares = np.concatenate([r["purification"]["per_node_top1"] for r in recs[arm]])
        ax.hist(shares, bins=bins, alpha=0.6, color=COLORS[label], label=f"{label} pre-training", density=True)
    mean_at = np.mean([r["purification"]["top1_share_mean"] for r in recs["at"]])
    mean_cl = np.mean([r["purification"]["top1_share_mean"] for r in recs["clean"]])
    ax.set_title(f"{family} pre-training")
    ax.set_xlabel("top-1 share of a node's loading energy")
    ax.set_ylabel("density over nodes (all seeds)")
    ax.legend(frameon=False)
    caption = (
        f"{family.capitalize()} pre-training: adversarial training moves hidden nodes towards a single true feature "
        f"(top-1 share near 1), clean training leaves them mixed (mean top-1 share {mean_cl:.2f} clean vs "
        f"{mean_at:.2f} AT)."
    )
    return png(fig), caption


def _sorted_abs_loadings(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """|alpha| of each node, rows normalised, nodes sorted by their strongest feature then by purity."""
    alpha = loadings(torch.as_tensor(w), torch.as_tensor(m)).numpy()
    a = np.abs(alpha) / np.abs(alpha).max(axis=1, keepdims=True).clip(1e-12)
    share = (alpha**2).max(axis=1) / (alpha**2).sum(axis=1).clip(1e-12)
    order = np.lexsort((-share, np.abs(alpha).argmax(axis=1)))
    return a[order]


def heatmaps(family: str, recs: dict[str, list[dict]], ev: Evidence) -> tuple[bytes, str] | None:
    """Seed 0's loadings, clean and AT side by side (None when the store has no encoder artifacts)."""
    from robinherit.reproduce.figures import ARM_LABELS, plt, png

    panels = []
    for arm, label in ARM_LABELS:
        rec = recs[arm][0]
        art = ev.store.artifact(rec["run_id"], "encoder")
        if art is not None:
            panels.append((f"{family}, {label} (seed {rec['seed']})", _sorted_abs_loadings(art["W"], art["M"])))
    if not panels:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
    for i, (ax, (title, a)) in enumerate(zip(axes.flat, panels, strict=False)):
        im = ax.imshow(a, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("true feature j")
        if i == 0:
            ax.set_ylabel("hidden node\n(sorted by strongest feature)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label="|loading| / max |loading| of the node")
    caption = (
        "Loadings |M^+ w_i| of every hidden node on every true feature: after adversarial pre-training each row has "
        "one bright entry (a purified node); after clean pre-training rows are smeared over many features."
    )
    return png(fig), caption


CLAIM = Purification("1", 1, "supervised")
