"""The atlas: a cell's verdict, budgets in the world's units, and a tiny atlas end to end through the CLI."""

from __future__ import annotations

import csv

import pytest
import yaml
from typer.testing import CliRunner

from robinherit.cli import app
from robinherit.config import load_config, with_updates
from robinherit.errors import ConfigError
from robinherit.reproduce.atlas import verdict
from robinherit.reproduce.stats import paired_stats
from robinherit.runs.atlas import atlas_from_dict, load_atlas
from robinherit.runs.relative_budget import feature_scale, resolve_budget


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([0.50, 0.55, 0.60], "pass"),
        ([-0.50, -0.55, -0.60], "fail"),
        ([0.30, -0.20, 0.10], "undecided"),
        ([0.30], "undecided"),  # one seed: an interval that excludes nothing
    ],
)
def test_verdict_of_a_cell(diffs, expected):
    _, (lo, hi), _ = paired_stats(diffs)
    assert verdict(lo, hi) == expected


def test_eps_rel_resolves_per_world_and_scales_with_the_signal():
    base = load_config("supervised")
    rel = {"pretrain.eps_rel": 0.25, "downstream.eps_rel": 0.25, "eval.eps_rel_grid": [0, 0.25, 0.5]}
    a, budget = resolve_budget(with_updates(base, **rel))
    b, _ = resolve_budget(with_updates(base, **rel))
    assert a == b and a.config_hash() == b.config_hash()  # deterministic
    # In the default world (+-1 values, unit columns, l2) the scale is 1: eps_rel 0.25 is the run of eps 0.25.
    assert budget["pretrain"] == {"eps_rel": 0.25, "scale": 1.0, "eps": 0.25}
    assert a.pretrain.eps_rel is None and a.eval.eps_grid == (0.0, 0.25, 0.5)
    assert resolve_budget(with_updates(base, **{"pretrain.eps_rel": 0.25}))[0].config_hash() == base.config_hash()
    # |z_j| ~ U[a, 1]: median (a + 1) / 2, so the budget shrinks with the values; k leaves a feature's size alone.
    uniform = with_updates(base, **{"data.values": "uniform", "data.value_low": 0.0, **rel})
    assert resolve_budget(uniform)[0].pretrain.eps == pytest.approx(0.125)
    assert resolve_budget(with_updates(base, **{"data.k": 5, **rel}))[0].pretrain.eps == 0.25
    # l-inf: a unit column's largest entry, about sqrt(2 log d / d), far below its l2 norm.
    linf = feature_scale(base.data, base.seed, "linf")
    assert 0.1 < linf < 0.6 and linf == feature_scale(base.data, base.seed, "linf")
    # A clean arm keeps eps 0 and no fraction at all leaves the config as it is.
    assert resolve_budget(base) == (base, None)


def test_shipped_atlases_expand():
    small, full = load_atlas("atlas_small"), load_atlas("atlas_full")
    assert 25 <= len(small.cells()) <= 35
    assert len(full.cells()) >= 200
    over = [c for c in small.cells() if c.knobs[0] == "data.n_features/d" and c.values == (2, "uniform")]
    cfg = over[0].configs["supervised"]["at"][0]
    assert (cfg.data.d, cfg.data.D, cfg.data.k, cfg.data.sparsity.value) == (64, 128, 4, "bernoulli")
    # the overcomplete world at the shipped configs' lengths, against the atlases' 500 steps
    long = load_atlas("atlas_overcomplete").cells()
    cfg = next(c for c in long if c.values == (2, "uniform")).configs["supervised"]["at"][0]
    assert (cfg.data.D, cfg.data.k, cfg.pretrain.steps) == (128, 4, 2000) and cfg.pretrain.steps > 500


TINY = {
    "name": "tiny",
    "families": ["supervised", "contrastive"],
    "set": {
        "data.d": 8,
        "model.width": 8,
        "pretrain.steps": 15,
        "pretrain.batch_size": 32,
        "downstream.n_train": 64,
        "downstream.epochs": 1,
        "downstream.batch_size": 32,
        "eval.steps": 2,
        "eval.restarts": 1,
        "eval.n_test": 32,
    },
    "seeds": 2,
    "panels": [{"x": {"data.k": [1, 3]}, "y": {"eps_rel": [0.25]}}],
}


def test_tiny_atlas_end_to_end_then_from_the_store(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    out, store = tmp_path / "out", tmp_path / "runs.db"
    args = ["atlas", str(spec), "--out", str(out), "--store", str(store), "--workers", "1", "--quiet"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "16 runs (16 computed, 0 from the store)" in first.output
    for stem in ("atlas_map", "map_claim_1", "map_claim_4c"):
        for ext in ("svg", "pdf", "png"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    rows = list(csv.DictReader((out / "atlas.csv").open()))
    assert len(rows) == 2 * 6  # two cells x claims 1, 2, 3, 3c, 4, 4c
    assert {r["verdict"] for r in rows} <= {"pass", "fail", "undecided"}
    assert {r["claim"] for r in rows} == {"1", "2", "3", "3c", "4", "4c"}
    text = (out / "atlas.md").read_text()
    assert "## Where each claim holds" in text and "claim 1" in text
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "16 runs (0 computed, 16 from the store)" in second.output
    assert list(csv.DictReader((out / "atlas.csv").open())) == rows


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"panles": []}, ["unknown key 'panles'", "valid keys: name, description, families"]),
        (
            {"panels": [{"x": {"data.k": [1]}, "y": {"eps_rel": [0.25]}, "z": {}}]},
            ["unknown key 'panels.0.z'", "valid keys: x, y, set"],
        ),
        ({"seeds": [0, 0]}, ["'seeds'", "duplicates"]),
        ({"seeds": 0}, ["'seeds'", "positive count"]),
        ({"families": ["supervised", "robust"]}, ["'families'", "unknown"]),
        ({"panels": [{"x": {"data.k": [1], "data.d": [8]}, "y": {"eps_rel": [0.25]}}]}, ["one knob"]),
    ],
)
def test_a_bad_atlas_spec_is_one_paragraph_naming_the_key_and_exit_2(tmp_path, change, needles):
    with pytest.raises(ConfigError) as err:
        atlas_from_dict({**TINY, **change})
    assert str(err.value).startswith("invalid atlas spec: ")
    assert all(n in str(err.value) for n in needles), str(err.value)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY, **change}))
    out = CliRunner().invoke(app, ["atlas", str(spec), "--out", str(tmp_path / "out"), "--quiet"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert f"invalid atlas spec '{spec}'" in " ".join(out.output.split()) and not (tmp_path / "out").exists()


def test_a_sweep_or_a_run_over_eps_rel_is_the_absolute_budgets_run():
    from robinherit.runs.sweep import sweep_from_dict

    base = load_config("supervised")
    cfgs = sweep_from_dict({"grid": {"pretrain.eps_rel": [0.25, 0.5]}}, base).configs()
    assert [c.pretrain.eps for c in cfgs] == [0.25, 0.5] and all(c.pretrain.eps_rel is None for c in cfgs)
    assert cfgs[0].config_hash() == base.config_hash()


def _row(x, y, verdict, side=True):
    return {
        "claim": "1",
        "panel": 0,
        "x_knob": "data.k",
        "x": x,
        "y_knob": "data.values",
        "y": y,
        "verdict": verdict,
        "side_condition_ok": side,
        "effect": 0.1,
    }


def test_boundary_in_words():
    from robinherit.analysis.atlas_map import boundary_sentences

    rows = [_row(k, v, "fail" if k >= 5 else "pass") for v in ("sign", "uniform") for k in (1, 3, 5, 9)]
    (text,) = boundary_sentences(rows, {"1": "claim 1"})
    assert text == "claim 1, over data.k x data.values: fails when data.k >= 5, whatever data.values; passes elsewhere."
    rows = [
        _row(k, v, "undecided" if (k, v) == (1, "uniform") else "pass", side=k != 9)
        for v in ("sign", "uniform")
        for k in (1, 3, 9)
    ]
    (text,) = boundary_sentences(rows, {"1": "claim 1"})
    assert "undecided at data.k = 1 (data.values = uniform); passes elsewhere." in text
    assert "side condition fails in 2 of the passing cells" in text
