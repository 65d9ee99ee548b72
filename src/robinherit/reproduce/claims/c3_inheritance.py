"""Claim 3, robustness inheritance (Xing et al., AISTATS 2024, arXiv 2401.15248; observed by Kim et al. 2020,
RoCL): with a frozen encoder and a cleanly trained linear head on a new task, robust accuracy is higher on
adversarially pre-trained features than on clean ones. The theory states it for supervised and for contrastive
pre-training, so it has one row per family: "3" (configs/supervised.yaml) and "3c" (configs/contrastive.yaml).

Effect per seed: clean-head robust accuracy at l2 eps EPS_REF, AT minus clean features. Being less fragile than
clean features is not inheriting robustness, so the clean head on AT features must also keep most of its clean
accuracy under attack.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robinherit.reproduce.spec import EPS_REF, ClaimSpec, Evidence, Figure, SideCondition, Statistic, robust_at

KEPT_UNDER_ATTACK = 0.8  # robust / clean accuracy of the clean head on AT features


class Inheritance(ClaimSpec):
    number = 3
    arms = ("at", "clean")

    def __init__(self, id: str, family: str):
        self.id, self.family = id, family
        self.name = "inheritance" if family == "supervised" else f"inheritance ({family})"

    def statistic(self, ev: Evidence) -> Statistic:
        at, clean = self.runs(ev, "at"), self.runs(ev, "clean")
        a = [robust_at(r, "clean") for r in at]
        c = [robust_at(r, "clean") for r in clean]
        return Statistic(
            f"Inheritance ({self.family} pre-training): with a frozen encoder and a cleanly trained head on a new "
            f"task, robust accuracy at l2 eps {EPS_REF} is higher on adversarially pre-trained features than on "
            "clean ones, and the head on AT features keeps most of its clean accuracy under attack.",
            {"at_features_robust": a, "clean_features_robust": c},
            [x - y for x, y in zip(a, c, strict=True)],
            details={
                "at_features_clean_acc": [r["downstream"]["clean_head"]["clean_acc"] for r in at],
                "clean_features_clean_acc": [r["downstream"]["clean_head"]["clean_acc"] for r in clean],
            },
        )

    def side_condition(self, ev: Evidence, stat: Statistic) -> SideCondition:
        robust = np.mean(stat.per_seed["at_features_robust"])
        kept = float(robust / max(np.mean(stat.details["at_features_clean_acc"]), 1e-12))
        return SideCondition(
            f"robust / clean accuracy of the clean head on AT features >= {KEPT_UNDER_ATTACK} (got {kept:.2f})",
            kept >= KEPT_UNDER_ATTACK,
        )

    def figures(self, row: dict[str, Any], ev: Evidence) -> list[Figure]:
        title = f"Robust accuracy vs eps, {self.family} pre-training"
        return [Figure(title, *robust_curves(self.family, ev.records[self.family]))]


def head_curve(recs: list[dict], head: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eps, mean, 95% half-width over seeds) of a head's robust accuracy."""
    from robinherit.reproduce.figures import mean_ci

    keys = list(recs[0]["downstream"][f"{head}_head"]["robust_acc"])
    vals = np.array([[r["downstream"][f"{head}_head"]["robust_acc"][k] for k in keys] for r in recs])
    mean, half = mean_ci(vals)
    return np.array([float(k) for k in keys]), mean, half


def class_prior(recs: list[dict]) -> float | None:
    """Mean class prior of the runs' downstream test sets (the clean head's record; None where not recorded): the
    robust accuracy of a head that predicts one class, which no attack lowers."""
    priors = [
        r["downstream"]["clean_head"]["class_prior"] for r in recs if "class_prior" in r["downstream"]["clean_head"]
    ]
    return float(np.mean(priors)) if priors else None


def robust_curves(family: str, recs: dict[str, list[dict]]) -> tuple[bytes, str]:
    from robinherit.reproduce.figures import COLORS, plt, png

    fig, ax = plt.subplots(figsize=(6.4, 4))
    styles = {"clean": "-", "adversarial": "--"}
    heads = [h.removesuffix("_head") for h in recs["at"][0]["downstream"]]
    ref: dict[str, float] = {}
    for arm, label in (("at", "AT"), ("clean", "clean")):
        for head in heads:
            x, mean, half = head_curve(recs[arm], head)
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
                ref[arm] = float(np.interp(EPS_REF, x, mean))
    if "certified_acc" in recs["at"][0]["downstream"]["clean_head"]:
        keys = list(recs["at"][0]["downstream"]["clean_head"]["certified_acc"])
        cert = np.array([[r["downstream"]["clean_head"]["certified_acc"][k] for k in keys] for r in recs["at"]])
        ax.plot(
            [float(k) for k in keys],
            cert.mean(axis=0),
            "-.",
            color=COLORS["AT"],
            lw=1,
            alpha=0.7,
            label="AT pre-train + clean head: certified (lower bound)",
        )
    prior = class_prior([r for arm in ("at", "clean") for r in recs[arm]])
    if prior is not None:
        ax.axhline(prior, ls="--", color="#555", lw=1, label=f"class prior ({prior:.2f}): a constant predictor")
    ax.axvline(EPS_REF, color="#999", lw=0.8)
    ax.set_title(f"{family} pre-training")
    ax.set_xlabel("l2 attack budget eps (PGD with restarts); bars: 95% interval over seeds")
    ax.set_ylabel("downstream robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, frameon=False)
    caption = (
        f"Downstream robust accuracy against the attack budget after {family} pre-training (mean and 95% interval "
        f"over seeds): a clean head on adversarially pre-trained features keeps {ref['at']:.2f} at eps {EPS_REF}, "
        f"a clean head on clean features {ref['clean']:.2f}"
        + (f"; dashed: the class prior {prior:.2f}, what a constant predictor keeps." if prior is not None else ".")
    )
    return png(fig), caption


SUPERVISED = Inheritance("3", "supervised")
CONTRASTIVE = Inheritance("3c", "contrastive")
