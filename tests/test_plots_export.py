"""Phase diagrams (aggregation over seeds, PNG/SVG files) and the tidy export, on records with known numbers."""

from __future__ import annotations

import copy
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from robinherit.analysis.export import ExportError, export, flatten_record
from robinherit.analysis.plots import PlotError, aggregate, filter_records, get_path, plot
from robinherit.cli import app
from robinherit.config import ExperimentConfig, with_updates
from robinherit.runs.store import ResultStore

BASE = with_updates(ExperimentConfig(), **{"data.d": 8, "model.width": 8})
EPS = (0.0, 0.25, 0.5)
THRESHOLDS = (0.0, 0.3)
SEEDS = (0, 1, 2)


def fake_record(eps: float, threshold: float, seed: int, **changes) -> dict:
    """A record shaped like run_experiment's, with metrics that are a known function of the point and seed."""
    cfg = with_updates(BASE, **{"pretrain.eps": eps, "model.threshold": threshold, "seed": seed, **changes})
    top1 = 0.2 + eps + threshold / 10 + 0.01 * seed
    rob = 0.5 + eps / 2 - 0.02 * seed
    return {
        "run_id": cfg.config_hash(),
        "seed": seed,
        "config": cfg.resolved(),
        "pretrain": {"clean_acc": 1.0, "robust_acc": {"0": 1.0, "0.25": 0.8}, "warnings": [], "loss_curve": [0.7]},
        "purification": {"top1_share_mean": top1, "frac_pure": {"0.5": float(top1 > 0.5)}, "per_node_top1": [top1]},
        "downstream": {
            "clean_head": {"clean_acc": 0.9, "robust_acc": {"0": 0.9, "0.25": rob, "1": 0.1}, "warnings": []}
        },
        "timing_s": {"total": 1.5},
        "versions": {"torch": "2.13.0"},
        "git_commit": "abc",
    }


@pytest.fixture
def records() -> list[dict]:
    return [fake_record(e, b, s) for e in EPS for b in THRESHOLDS for s in SEEDS]


@pytest.fixture
def store_path(tmp_path: Path, records: list[dict]) -> Path:
    db = ResultStore(tmp_path / "runs.db")
    for r in records:
        db.put(r)
    return db.path


def test_get_path_matches_keys_with_dots_and_numbers():
    rec = fake_record(0.25, 0.3, 1)
    assert get_path(rec, "downstream.clean_head.robust_acc.0.25") == pytest.approx(0.5 + 0.125 - 0.02)
    assert get_path(rec, "downstream.clean_head.robust_acc.1.0") == 0.1  # stored under the key "1"
    assert get_path(rec, "purification.frac_pure.0.5") == 0.0
    assert get_path(rec, "config.pretrain.eps") == 0.25
    with pytest.raises(KeyError):
        get_path(rec, "downstream.clean_head.robust_acc.0.3")


def test_aggregate_gives_mean_and_t_interval_over_seeds(records):
    cells = aggregate(records, x="pretrain.eps", y="purification.top1_share_mean", hue="model.threshold")
    assert len(cells) == len(EPS) * len(THRESHOLDS)
    assert all(c.n == len(SEEDS) for c in cells)
    for c in cells:
        vals = np.array([0.2 + c.x + c.hue / 10 + 0.01 * s for s in SEEDS])
        half = stats.t.ppf(0.975, len(SEEDS) - 1) * vals.std(ddof=1) / math.sqrt(len(SEEDS))
        assert c.mean == pytest.approx(vals.mean())
        assert (c.low, c.high) == pytest.approx((vals.mean() - half, vals.mean() + half))
    rng = aggregate(records, x="pretrain.eps", y="purification.top1_share_mean", hue="model.threshold", interval="sd")
    assert all(c.high - c.low == pytest.approx(2 * 0.01) for c in rng)  # sd of 0.00, 0.01, 0.02 is 0.01
    rng = aggregate(
        records, x="pretrain.eps", y="purification.top1_share_mean", hue="model.threshold", interval="range"
    )
    assert all(c.high - c.low == pytest.approx(0.02) for c in rng)  # seeds 0..2 add 0.00..0.02


def test_aggregate_refuses_to_average_different_conditions(records):
    # without a hue, runs with different thresholds would be averaged as if they were seeds
    with pytest.raises(PlotError, match=r"differ in model\.threshold"):
        aggregate(records, x="pretrain.eps", y="purification.top1_share_mean")
    kept = filter_records(records, ["model.threshold=0.3"])
    assert len(kept) == len(EPS) * len(SEEDS)
    cells = aggregate(kept, x="pretrain.eps", y="purification.top1_share_mean")
    assert [c.x for c in cells] == list(EPS)


def test_unknown_metric_names_the_valid_ones(records):
    with pytest.raises(PlotError, match=r"downstream\.clean_head\.robust_acc"):
        aggregate(records, x="pretrain.eps", y="downstream.clean_head.robust", hue="model.threshold")
    with pytest.raises(PlotError, match="not a number"):
        aggregate(records, x="pretrain.eps", y="downstream.clean_head", hue="model.threshold")


@pytest.mark.parametrize("kind", ["line", "heatmap"])
def test_plot_writes_png_and_svg(tmp_path, records, kind):
    files, cells = plot(
        records,
        x="pretrain.eps",
        y="downstream.clean_head.robust_acc.0.25",
        hue="model.threshold",
        kind=kind,
        out=tmp_path / "figs" / "phase.png",
    )
    assert [f.name for f in files] == ["phase.png", "phase.svg", "phase.pdf"]
    assert files[2].read_bytes()[:5] == b"%PDF-"
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in files[1].read_text()[:2000]
    assert len(cells) == 6


def test_heatmap_needs_a_second_axis(tmp_path, records):
    with pytest.raises(PlotError, match="--hue"):
        plot(records, x="pretrain.eps", y="purification.top1_share_mean", kind="heatmap", out=tmp_path / "h")


def test_flatten_keeps_scalars_and_drops_per_step_lists():
    row = flatten_record(fake_record(0.5, 0.0, 2))
    assert row["config.pretrain.eps"] == 0.5 and row["seed"] == 2
    assert row["downstream.clean_head.robust_acc.0.25"] == pytest.approx(0.5 + 0.25 - 0.04)
    assert row["config.eval.eps_grid"] == "[0.0, 0.1, 0.25, 0.5, 1.0, 2.0]"
    assert "pretrain.loss_curve" not in row and "purification.per_node_top1" not in row


def test_export_csv_has_one_row_per_run(tmp_path, records):
    path = export(records, "csv", tmp_path / "t.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(records)
    assert list(rows[0])[:2] == ["run_id", "seed"]
    by_id = {r["run_id"]: r for r in rows}
    for rec in records:
        row = by_id[rec["run_id"]]
        assert float(row["config.model.threshold"]) == rec["config"]["model"]["threshold"]
        assert float(row["purification.top1_share_mean"]) == pytest.approx(rec["purification"]["top1_share_mean"])


def test_export_parquet_round_trips_with_typed_columns(tmp_path, records):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: pip install 'robinherit[export]'")
    records = [*records, fake_record(0.0, 0.0, 9, **{"data.n_train": 500})]  # int in one row, None in the rest
    t = pq.read_table(export(records, "parquet", tmp_path / "t.parquet"))
    assert t.num_rows == len(records)
    assert str(t.schema.field("purification.top1_share_mean").type) == "double"
    assert str(t.schema.field("seed").type) == "int64"
    assert t.column("config.data.n_train").to_pylist().count(500) == 1
    assert t.column("config.data.n_train").null_count == len(records) - 1


def test_export_parquet_without_pyarrow_says_how_to_get_it(tmp_path, records, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(ExportError, match=r"robinherit\[export\]"):
        export(records, "parquet", tmp_path / "t.parquet")


def test_cli_plot_and_export_on_a_store_and_on_a_sweep_spec(tmp_path, store_path, records):
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "plot",
            str(store_path),
            "--x",
            "pretrain.eps",
            "--y",
            "purification.top1_share_mean",
            "--hue",
            "model.threshold",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").exists() and (tmp_path / "p.svg").exists()

    res = runner.invoke(app, ["export", "--store", str(store_path), "--out", str(tmp_path / "e.csv")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "e.csv").read_text().strip().splitlines()) == len(records) + 1

    # a sweep spec selects its own runs from the store: here the eps=0.5 column only
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE.model_dump(mode="json")))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"base": "base.yaml", "set": {"pretrain.eps": 0.5}, "grid": {"model.threshold": [0.0, 0.3]}, "seeds": 3}
        )
    )
    res = runner.invoke(app, ["export", str(spec), "--store", str(store_path), "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert "6 runs" in res.output

    res = runner.invoke(app, ["plot", str(store_path), "--x", "pretrain.eps", "--y", "nope.metric"])
    assert res.exit_code == 2 and "nope.metric" in res.output


def test_symlog_axis_takes_zero_and_log_axis_refuses_it(tmp_path, records, monkeypatch):
    from matplotlib.axes import Axes

    scales: list[str] = []
    set_xscale = Axes.set_xscale
    monkeypatch.setattr(Axes, "set_xscale", lambda ax, v, *a, **k: (scales.append(v), set_xscale(ax, v, *a, **k))[1])
    kept = filter_records(records, ["model.threshold=0.3"])
    files, _ = plot(kept, x="pretrain.eps", y="purification.top1_share_mean", xscale="symlog", out=tmp_path / "s")
    assert files[0].exists()
    assert "symlog" in scales  # the axis really is symlog, not silently left linear
    with pytest.raises(PlotError, match="symlog"):
        plot(kept, x="pretrain.eps", y="purification.top1_share_mean", xscale="log", out=tmp_path / "l")


def test_plot_labels_axes_with_field_descriptions_prints_at_300_dpi_and_clips_bands(tmp_path, records):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from PIL import Image

    seen = {}
    real_save = plt.Figure.savefig

    def spy(fig, *args, **kwargs):  # the axes and bands as drawn, before the figure is closed
        ax = fig.axes[0]
        seen.update(xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel())
        seen["bands"] = [c.get_paths()[0].vertices[:, 1] for c in ax.collections]
        return real_save(fig, *args, **kwargs)

    # accuracies near 1 with a wide spread over seeds: their 95% t interval reaches past 1 unless it is clipped
    spread = copy.deepcopy(records)
    for i, r in enumerate(spread):
        r["downstream"]["clean_head"]["robust_acc"]["0.25"] = 1.0 if i % 3 else 0.55
    y = "downstream.clean_head.robust_acc.0.25"
    assert max(c.high for c in aggregate(spread, x="pretrain.eps", y=y, hue="model.threshold")) > 1
    plt.Figure.savefig = spy
    try:
        files, _ = plot(spread, x="pretrain.eps", y=y, hue="model.threshold", out=tmp_path / "p",
                        ylabel="robust accuracy")  # fmt: skip
    finally:
        plt.Figure.savefig = real_save
    assert seen["xlabel"] == "adversarial budget during pre-training (0 = clean) (pretrain.eps)"
    assert seen["ylabel"] == "robust accuracy"
    assert all(v.min() >= 0 and v.max() <= 1 for v in seen["bands"])
    assert Image.open(files[0]).info["dpi"][0] == pytest.approx(300, abs=1)


def test_the_runs_table_shows_where_a_run_differs_from_the_others():
    from robinherit.analysis.tables import settings_that_differ

    def rec(run_id, seed, steps, eps):
        return {"run_id": run_id, "config": {"seed": seed, "pretrain": {"steps": steps, "eps": eps}}}

    got = settings_that_differ([rec("a", 0, 2000, 0.25), rec("b", 1, 2000, 0.0), rec("c", 0, 200, 0.25)])
    assert got == {"a": "-", "b": "-", "c": "pretrain.steps=200"}  # seeds and budgets have columns of their own
