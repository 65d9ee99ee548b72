"""Claim 4's statistic, "a clean head is enough" (Xing, Lin, Song, Xu, Zeng, Cheng, AISTATS 2024, arXiv 2401.15248;
the SLF / ALF protocols of robust self-supervised benchmarks), read off run records so that any study can decide it.

Two parts, each paired over seeds (the same seed gives both pre-training arms the same data and tasks):

1. **Equivalence on AT features.** Clean minus adversarial head robust accuracy, by two one-sided tests (TOST,
   Schuirmann 1987): the part passes when the 90% t interval of the mean difference lies inside
   [-margin, +margin] (each one-sided test at 0.05), and neither head on AT features is degenerate.
2. **Separation on clean features.** The clean head's robust accuracy on AT features minus that of the best
   *non-degenerate* head on clean features, same task: the part passes when the 95% t interval lies above 0.

A head is degenerate when its predictions are (nearly) one class or its clean accuracy is (nearly) the class prior
(the record's ``degenerate`` flag, ``evaluation.robust.prediction_balance``): its "robust accuracy" is that of a
constant predictor, which no attack can lower, so a verdict resting on it would report the class prior as
robustness. A degenerate head on clean features is therefore never the best head there; tasks without a
non-degenerate head there drop out of their seed's mean, seeds without one drop out of the interval, and when no
head on clean features is non-degenerate at all, part 2 passes on that: no head there is both non-degenerate and
robust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from robinherit.analysis.stats import t_interval
from robinherit.records import eps_key

MARGIN = 0.05  # the largest robust-accuracy difference between the heads on AT features that counts as "the same"
EQUIVALENCE_LEVEL = 0.90  # TOST at alpha 0.05: both one-sided tests hold iff the 90% interval is inside the margin
SEPARATION_LEVEL = 0.95
HEADS = ("clean", "adversarial")
NO_HEAD_NOTE = (
    "no head on clean features is both non-degenerate and robust: every one is degenerate (a constant predictor), "
    "so none is compared"
)

Task = dict[str, dict[str, Any]]  # head kind -> that head's evaluation (robust_acc, clean_acc, degenerate, ...)


def _undecidable(d: np.ndarray) -> dict[str, Any]:
    """Fewer than two differences: no interval, so no test can pass."""
    mean = float(d.mean()) if d.size else math.nan
    return {"mean": mean, "ci": [-math.inf, math.inf], "p_value": math.nan, "passed": False}


def tost(diffs: Sequence[float], margin: float, level: float = EQUIVALENCE_LEVEL) -> dict[str, Any]:
    """Two one-sided t tests of "|mean difference| < margin": the mean, the ``level`` t interval, the TOST p value
    (the larger of the two one-sided p values) and whether the interval lies inside [-margin, margin]. One value
    has no interval (it never passes); identical values an interval of one point."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return _undecidable(d)
    mean, lo, hi = t_interval(d, level=level)
    if float(d.std(ddof=1)) == 0.0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        above = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
        below = stats.ttest_1samp(d, margin, alternative="less").pvalue
        p = float(max(above, below))
    return {"mean": mean, "ci": [lo, hi], "p_value": p, "passed": bool(-margin <= lo and hi <= margin)}


def separation(diffs: Sequence[float], level: float = SEPARATION_LEVEL) -> dict[str, Any]:
    """Mean, ``level`` t interval and one-sided p of "mean difference > 0"; passes when the interval lies above 0."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return _undecidable(d)
    mean, lo, hi = t_interval(d, level=level)
    if float(d.std(ddof=1)) == 0.0:
        return {"mean": mean, "ci": [mean, mean], "p_value": 0.0 if mean > 0 else 1.0, "passed": mean > 0}
    p = float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)
    return {"mean": mean, "ci": [lo, hi], "p_value": p, "passed": bool(lo > 0)}


def own_task(record: dict[str, Any]) -> Task:
    """A run record's heads on its own downstream task, by head kind."""
    return {k.removesuffix("_head"): v for k, v in record["downstream"].items()}


def _robust(head: dict[str, Any], eps: float) -> float:
    return float(head["robust_acc"][eps_key(eps)])


def _degenerate(head: dict[str, Any], where: str) -> bool:
    if "degenerate" not in head:
        raise ValueError(
            f"a head on {where} has no 'degenerate' flag (evaluated before records carried it): claim 4 cannot tell "
            "a constant predictor from a robust one; recompute the runs with a fresh results store"
        )
    return bool(head["degenerate"])


def _best_head(task: Task, eps: float) -> tuple[str | None, float]:
    """The non-degenerate head with the highest robust accuracy (None, NaN where every head is degenerate)."""
    heads = {k: h for k, h in task.items() if isinstance(h, dict) and "robust_acc" in h}  # not a task's "index"
    ok = {k: _robust(h, eps) for k, h in heads.items() if not _degenerate(h, "clean features")}
    if not ok:
        return None, math.nan
    kind = max(ok, key=lambda k: ok[k])
    return kind, ok[kind]


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def clean_head_statistic(
    records_at: Sequence[dict[str, Any]],
    records_clean: Sequence[dict[str, Any]],
    extra_at: Sequence[Sequence[Task]] | None = None,
    extra_clean: Sequence[Sequence[Task]] | None = None,
    *,
    eps: float = 0.25,
    margin: float = MARGIN,
) -> dict[str, Any]:
    """Claim 4 on paired run records (one per seed, AT and clean pre-training in the same seed order), each with a
    clean and an adversarial head evaluated at ``eps``; ``extra_*`` optionally adds per seed further downstream tasks
    on the same encoders (each a dict head kind -> evaluation with ``robust_acc``, ``clean_acc``, ``degenerate``,
    ``class_prior``), the same tasks in both arms. Each seed's numbers are means over its tasks.

    Returns ``passed`` (both parts), ``equivalence`` (part 1: per-seed clean minus adversarial head differences on
    AT features, their mean, ``ci`` at 90%, TOST ``p_value``, ``passed``), ``separation`` (part 2: per-seed clean head
    on AT features minus the best non-degenerate head on clean features, ``ci`` at 95%, ``passed``, ``note``,
    ``seeds_left_out``), ``per_seed`` (each head's robust accuracy and the best head's), ``class_prior`` and
    ``degenerate`` (per arm, head and task), and the ``margin`` and ``eps`` used."""
    if len(records_at) != len(records_clean):
        raise ValueError(f"{len(records_at)} AT records against {len(records_clean)} clean ones: pair them by seed")
    tasks = {
        "at": [[own_task(r), *(extra_at[s] if extra_at else [])] for s, r in enumerate(records_at)],
        "clean": [[own_task(r), *(extra_clean[s] if extra_clean else [])] for s, r in enumerate(records_clean)],
    }
    at_clean = [[_robust(t["clean"], eps) for t in seed] for seed in tasks["at"]]
    at_adv = [[_robust(t["adversarial"], eps) for t in seed] for seed in tasks["at"]]
    degenerate_at = sum(_degenerate(t[h], "AT features") for seed in tasks["at"] for t in seed for h in HEADS)
    best = [[_best_head(t, eps) for t in seed] for seed in tasks["clean"]]
    eq_diffs = [float(np.mean(np.subtract(c, a))) for c, a in zip(at_clean, at_adv, strict=True)]
    equivalence = tost(eq_diffs, margin) | {"differences": eq_diffs, "degenerate_heads": degenerate_at}
    equivalence["passed"] = equivalence["passed"] and degenerate_at == 0
    part2 = _separation_part(at_clean, best)
    return {
        "passed": bool(equivalence["passed"] and part2["passed"]),
        "margin": margin,
        "eps": eps,
        "n_tasks": [len(seed) for seed in tasks["at"]],
        "equivalence": equivalence,
        "separation": part2,
        "per_seed": {
            "at_clean_head_robust": [float(np.mean(c)) for c in at_clean],
            "at_adversarial_head_robust": [float(np.mean(a)) for a in at_adv],
            "clean_clean_head_robust": [_mean_of(seed, "clean", eps) for seed in tasks["clean"]],
            "clean_adversarial_head_robust": [_mean_of(seed, "adversarial", eps) for seed in tasks["clean"]],
            "clean_best_nondegenerate_robust": [_nanmean([v for _, v in seed]) for seed in best],
        },
        "class_prior": {arm: [_prior(seed) for seed in tasks[arm]] for arm in tasks},
        "degenerate": {
            arm: {h: [[bool(t[h].get("degenerate")) for t in s] for s in tasks[arm]] for h in HEADS} for arm in tasks
        },
    }


def _separation_part(at_clean: list[list[float]], best: list[list[tuple[str | None, float]]]) -> dict[str, Any]:
    """Part 2 from the clean head's robust accuracy on AT features and the best non-degenerate head on clean
    features, per seed and task: tasks without such a head drop out of their seed's mean, seeds without one out of
    the interval, and with none at all the part passes on that (``note`` says so)."""
    per_seed = [
        _nanmean([c - v for c, (_, v) in zip(cs, bs, strict=True)]) for cs, bs in zip(at_clean, best, strict=True)
    ]
    kept = [d for d in per_seed if not math.isnan(d)]
    part = separation(kept) | {
        "differences": kept,
        "seeds_left_out": [s for s, d in enumerate(per_seed) if math.isnan(d)],
        "best_head_per_task": [[kind for kind, _ in seed] for seed in best],
        "note": "",
    }
    if not kept:
        part |= {"passed": True, "note": NO_HEAD_NOTE}
    elif part["seeds_left_out"]:
        part["note"] = f"seeds {part['seeds_left_out']} have no non-degenerate head on clean features: left out"
    return part


def _mean_of(seed: Sequence[Task], head: str, eps: float) -> float:
    return float(np.mean([_robust(t[head], eps) for t in seed]))


def _prior(seed: Sequence[Task]) -> float:
    """The class prior of a seed's downstream test sets (mean over its tasks; NaN where not recorded)."""
    return _nanmean([float(t["clean"].get("class_prior", math.nan)) for t in seed])


__all__ = ["MARGIN", "clean_head_statistic", "own_task", "separation", "tost"]
