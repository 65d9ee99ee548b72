"""How a claim is decided: a paired comparison over seeds.

The claims are those of Xing, Lin, Song, Xu, Zeng, Cheng, "Better Representations via Adversarial Training in
Pre-Training: A Theoretical Perspective" (AISTATS 2024, arXiv 2401.15248), listed in docs/theory.md. The same seed
gives both arms the same dictionary, tasks and data, so each seed contributes one difference in the claimed
direction: ``effect`` is their mean, ``ci95`` a t interval over seeds, ``p_value`` a one-sided one-sample t
test. A claim passes only when its interval excludes zero in the claimed direction and its side condition holds,
unless it decides its effect itself where there is no number to compare (``decision``; claim 4 when every head on
clean features is degenerate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from robinherit.analysis.stats import t_interval

NAN = float("nan")


def paired_stats(diffs: Sequence[float]) -> tuple[float, tuple[float, float], float]:
    """Mean difference, 95% t interval over seeds, one-sided p value for "difference > 0"."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return NAN, (NAN, NAN), NAN
    if n == 1:
        # One seed says nothing about the spread: an interval that excludes no effect, so the claim cannot pass.
        return float(d.mean()), (float("-inf"), float("inf")), NAN
    mean, lo, hi = t_interval(d)
    if float(d.std(ddof=1)) == 0.0:
        # Identical differences on every seed: the interval collapses to the point.
        return mean, (mean, mean), 0.0 if mean > 0 else 1.0
    p = float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)
    return mean, (lo, hi), p


@dataclass
class Claim:
    """One row of claims.json: a claim's per-seed values and their paired differences, decided by
    :func:`paired_stats` and its side condition.

    ``id`` names the row ("3c": claim 3 on contrastive pre-training); ``number`` is the claim's number in
    docs/theory.md, which ``--claims`` selects; ``family`` the base config the row's runs come from, if any.
    """

    id: str
    number: int
    name: str
    statement: str
    per_seed: dict[str, list[float]]
    differences: list[float]
    family: str | None = None
    side_condition: str | None = None
    side_ok: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    decision: bool | None = None  # the claim's own verdict on its effect (spec.Statistic.decision); None: lo > 0

    def to_dict(self) -> dict[str, Any]:
        effect, (lo, hi), p = paired_stats(self.differences)
        effect_ok = lo > 0 if self.decision is None else self.decision
        passed = bool(effect_ok and self.side_ok)
        return {
            "id": self.id,
            "claim": self.number,
            "family": self.family,
            "name": self.name,
            "statement": self.statement,
            "status": "pass" if passed else "fail",
            "passed": passed,
            "effect": effect,
            "ci95": [lo, hi],
            "p_value": p,
            "n_seeds": len(self.differences),
            "per_seed": {**self.per_seed, "difference": self.differences},
            "side_condition": self.side_condition,
            "side_condition_ok": self.side_ok,
            "details": self.details,
        }


def not_run_row(
    id: str, number: int, name: str, family: str | None, statement: str, reason: str, fix: str
) -> dict[str, Any]:
    """The row of a claim whose inputs cannot exist here (a missing optional dependency or data set): in
    claims.json and the report like any other, never dropped, with why and how to make it run. Its numbers
    are NaN (null in claims.json) so that a consumer that formats every row still works."""
    return {
        "id": id,
        "claim": number,
        "family": family,
        "name": name,
        "statement": statement,
        "status": "not run",
        "passed": False,
        "effect": NAN,
        "ci95": [NAN, NAN],
        "p_value": NAN,
        "n_seeds": 0,
        "per_seed": {},
        "side_condition": None,
        "side_condition_ok": False,
        "details": {},
        "reason": reason,
        "fix": fix,
    }
