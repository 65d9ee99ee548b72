"""Claim 4's statistic on hand-made records: an equivalence test on AT features and a separation from the best
non-degenerate head on clean features; the degenerate flag decides which heads may count."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from robinherit.analysis.clean_head import MARGIN, clean_head_statistic, tost
from robinherit.reproduce import ReproduceSettings
from robinherit.reproduce.claims import c4_clean_head
from robinherit.reproduce.driver import claim_row
from robinherit.reproduce.spec import Evidence

PRIOR = 0.5


def _head(robust: float, clean_acc: float = 0.95, degenerate: bool = False) -> dict:
    return {
        "clean_acc": clean_acc,
        "robust_acc": {"0.25": robust},
        "class_prior": PRIOR,
        "majority_share": 1.0 if degenerate else 0.5,
        "degenerate": degenerate,
    }


def _rec(clean: float, adv: float, *, adv_degenerate: bool = False, clean_degenerate: bool = False) -> dict:
    return {
        "downstream": {
            "clean_head": _head(clean, degenerate=clean_degenerate),
            "adversarial_head": _head(adv, clean_acc=PRIOR if adv_degenerate else 0.9, degenerate=adv_degenerate),
        }
    }


def _row(at: list[dict], clean: list[dict]) -> dict:
    spec = c4_clean_head.CleanHeadIsEnough("4", "supervised", n_tasks=1)  # the run's own task only
    settings = ReproduceSettings(seeds=tuple(range(len(at))), quick=False)
    ev = Evidence(settings, store=None, configs={}, records={"supervised": {"at": at, "clean": clean}})
    return claim_row(spec, ev, tick=lambda _w: None)


# A constant head on clean features: its "robust accuracy" is the class prior, far above the clean head's.
CLEAN_FEATURES = [
    _rec(0.25, 0.52, adv_degenerate=True),
    _rec(0.27, 0.50, adv_degenerate=True),
    _rec(0.24, 0.51, adv_degenerate=True),
]


def test_tost_is_the_90_percent_interval_inside_the_margin():
    d = [0.01, -0.01, 0.02, 0.0]
    out = tost(d, 0.05)
    ref = stats.t.interval(0.90, len(d) - 1, loc=np.mean(d), scale=stats.sem(d))
    assert out["ci"] == pytest.approx(list(ref)) and out["passed"]
    p_low = stats.ttest_1samp(d, -0.05, alternative="greater").pvalue
    p_high = stats.ttest_1samp(d, 0.05, alternative="less").pvalue
    assert out["p_value"] == pytest.approx(max(p_low, p_high)) and out["p_value"] < 0.05
    assert not tost([0.04, 0.06, 0.05], 0.05)["passed"]  # the interval crosses the margin
    assert not tost([0.0], 0.05)["passed"]  # one seed has no interval


def test_claim4_fails_when_the_heads_on_at_features_differ_by_more_than_the_margin():
    at = [_rec(0.80, 0.90), _rec(0.83, 0.92), _rec(0.79, 0.91)]  # the adversarial head adds 0.09-0.12 > 0.05
    row = _row(at, CLEAN_FEATURES)
    eq = row["details"]["equivalence"]
    assert eq["ci"][0] < -MARGIN and not eq["passed"]
    assert row["ci95"][0] > 0 and not row["side_condition_ok"] and not row["passed"]


def test_claim4_passes_when_the_heads_on_at_features_are_within_the_margin():
    at = [_rec(0.97, 0.99), _rec(0.96, 0.98), _rec(0.98, 0.99)]
    row = _row(at, CLEAN_FEATURES)
    eq = row["details"]["equivalence"]
    assert eq["ci"][0] >= -MARGIN and eq["ci"][1] <= MARGIN and row["side_condition_ok"]
    assert row["passed"] and row["status"] == "pass"
    assert "TOST" in row["side_condition"]


def test_a_degenerate_head_on_clean_features_is_never_the_best_head():
    at = [_rec(0.97, 0.99), _rec(0.96, 0.98), _rec(0.98, 0.99)]
    row = _row(at, CLEAN_FEATURES)
    sep = row["details"]["separation"]
    assert sep["best_head_per_task"] == [["clean"]] * 3  # not the constant adversarial head, whose 0.5 is higher
    assert row["per_seed"]["clean_best_nondegenerate_robust"] == pytest.approx([0.25, 0.27, 0.24])
    assert row["per_seed"]["difference"] == pytest.approx([0.97 - 0.25, 0.96 - 0.27, 0.98 - 0.24])
    assert row["details"]["class_prior"]["clean"] == [PRIOR] * 3
    # a non-degenerate adversarial head that is more robust than the clean head is the best head
    honest = [_rec(0.25, 0.40), _rec(0.27, 0.41), _rec(0.24, 0.39)]
    assert _row(at, honest)["per_seed"]["clean_best_nondegenerate_robust"] == pytest.approx([0.40, 0.41, 0.39])


def test_a_robust_non_degenerate_head_on_clean_features_fails_the_claim():
    at = [_rec(0.97, 0.99), _rec(0.96, 0.98), _rec(0.98, 0.99)]
    robust_too = [_rec(0.95, 0.97), _rec(0.97, 0.96), _rec(0.99, 0.98)]
    row = _row(at, robust_too)
    assert not row["details"]["separation"]["passed"] and not row["passed"]


def test_when_every_head_on_clean_features_is_degenerate_the_separation_passes_and_says_why():
    at = [_rec(0.97, 0.99), _rec(0.96, 0.98), _rec(0.98, 0.99)]
    constant = [_rec(0.5, 0.5, adv_degenerate=True, clean_degenerate=True)] * 3
    row = _row(at, constant)
    sep = row["details"]["separation"]
    assert sep["passed"] and "no head on clean features is both non-degenerate and robust" in sep["note"]
    assert sep["best_head_per_task"] == [[None]] * 3 and row["passed"]
    assert math.isnan(row["effect"])  # no number was compared
    # some seeds without a non-degenerate head leave the interval, and the details name them
    mixed = [constant[0], *CLEAN_FEATURES[1:]]
    sep = _row(at, mixed)["details"]["separation"]
    assert sep["seeds_left_out"] == [0] and len(sep["differences"]) == 2 and "left out" in sep["note"]


def test_a_degenerate_head_on_at_features_fails_the_equivalence():
    at = [_rec(0.52, 0.5, adv_degenerate=True, clean_degenerate=True)] * 3  # two constant heads are "equal"
    out = clean_head_statistic(at, CLEAN_FEATURES)
    assert out["equivalence"]["ci"] == pytest.approx([0.02, 0.02]) and out["equivalence"]["degenerate_heads"] == 6
    assert not out["equivalence"]["passed"] and not out["passed"]


def test_the_statistic_reads_extra_tasks_and_refuses_records_without_the_flag():
    at = [_rec(0.97, 0.99), _rec(0.96, 0.98), _rec(0.98, 0.99)]
    extra = [[{"index": 1, "clean": _head(0.9), "adversarial": _head(0.95)}] for _ in range(3)]
    extra_clean = [[{"index": 1, "clean": _head(0.2), "adversarial": _head(0.5, PRIOR, degenerate=True)}]] * 3
    out = clean_head_statistic(at, CLEAN_FEATURES, extra, extra_clean)
    assert out["n_tasks"] == [2, 2, 2]
    assert out["equivalence"]["differences"] == pytest.approx([(-0.02 - 0.05) / 2, (-0.02 - 0.05) / 2, -0.03])
    assert out["separation"]["best_head_per_task"] == [["clean", "clean"]] * 3
    old = [
        {"downstream": {"clean_head": {"robust_acc": {"0.25": 0.9}}, "adversarial_head": {"robust_acc": {"0.25": 0.9}}}}
    ]
    with pytest.raises(ValueError, match="no 'degenerate' flag"):
        clean_head_statistic(old, old)
