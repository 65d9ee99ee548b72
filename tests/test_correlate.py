"""Rank correlation across runs: Spearman's rho with a bootstrap interval over runs, its figure, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from robinherit.analysis.correlate import correlate
from robinherit.analysis.plots import PlotError
from robinherit.cli import app
from robinherit.runs.store import ResultStore


def records(xs, ys, eps=None):
    eps = eps if eps is not None else [0.0] * len(xs)
    return [
        {
            "run_id": f"r{i:03d}",
            "seed": i,
            "config": {"pretrain": {"eps": e, "method": "supervised"}},
            "purification": {"top1_share_mean": float(x)},
            "downstream": {"clean_head": {"robust_acc": {"0.1": float(y)}}},
        }
        for i, (x, y, e) in enumerate(zip(xs, ys, eps, strict=True))
    ]


X, Y = "purification.top1_share_mean", "downstream.clean_head.robust_acc.0.1"


def test_a_monotone_relation_has_rho_one_and_an_interval_that_excludes_zero():
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, 15)
    ys = np.exp(3 * xs) + rng.normal(0, 0.05, 15)  # monotone, not linear: rank correlation ~ 1
    c = correlate(records(xs, ys), X, Y, resamples=500)
    assert c.rho > 0.95 and c.ci95[0] > 0.7 and c.ci95[0] <= c.rho <= c.ci95[1] and c.n == 15
    anti = correlate(records(xs, -ys), X, Y, resamples=500)
    assert anti.rho == pytest.approx(-c.rho) and anti.ci95[1] < -0.7


def test_independent_metrics_give_an_interval_around_zero():
    rng = np.random.default_rng(1)
    c = correlate(records(rng.uniform(size=30), rng.uniform(size=30)), X, Y, resamples=500)
    assert c.ci95[0] < 0 < c.ci95[1] and abs(c.rho) < 0.4


def test_too_few_runs_or_a_constant_metric_is_a_clear_error():
    with pytest.raises(PlotError, match="too few"):
        correlate(records([0.1, 0.2, 0.3], [1, 2, 3]), X, Y)
    with pytest.raises(PlotError, match="same in every run"):
        correlate(records([0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1]), X, Y)
    with pytest.raises(PlotError, match="not in the records"):
        correlate(records([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]), "purification.top1", Y)


def test_the_cli_prints_rho_and_writes_the_scatter(tmp_path: Path):
    db = tmp_path / "r.db"
    store = ResultStore(db)
    eps = [0.0, 0.05, 0.1, 0.15] * 2
    for rec in records([0.1, 0.2, 0.3, 0.4, 0.12, 0.22, 0.31, 0.45], [0.0, 0.1, 0.3, 0.5, 0.01, 0.12, 0.2, 0.6], eps):
        store.put(rec)
    stem = tmp_path / "fig"
    res = CliRunner().invoke(
        app, ["correlate", str(db), "--x", X, "--y", Y, "--color-by", "pretrain.eps", "--out", str(stem), "--json"]
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["n_runs"] == 8 and got["spearman_rho"] > 0.9
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.svg").exists()
    res = CliRunner().invoke(app, ["correlate", str(db), "--x", X, "--y", "downstream.nope", "--out", str(stem)])
    assert res.exit_code != 0 and "not in the records" in res.output


def test_a_few_constant_resamples_leave_the_interval_finite_and_list_valued_groups_plot(tmp_path):
    from robinherit.analysis.correlate import scatter

    # 6 runs, y binary: some resamples draw one y value only, so their rho is NaN (scipy alone gave (nan, nan))
    xs, ys = np.arange(6.0), np.array([0, 0, 0, 1, 0, 1.0])
    recs = records(xs, ys)
    for r, classes in zip(recs, [[0, 1], [2, 3]] * 3, strict=True):
        r["config"]["data"] = {"pretrain_classes": classes}
    c = correlate(recs, X, Y, color_by="data.pretrain_classes", resamples=400)
    assert np.isfinite(c.ci95).all() and c.ci95[0] <= c.rho <= c.ci95[1]
    files = scatter(c, tmp_path / "s.png", color_by="data.pretrain_classes")  # a list per run: one colour each
    assert [f.name for f in files] == ["s.png", "s.svg", "s.pdf"] and all(f.stat().st_size > 0 for f in files)
