"""Sweeps over audit settings: a spec with `audit:` instead of `base:` stores one audit per point, under the id of
the equivalent `robinherit audit ... --set` call, answers a repeat from the store, and refuses paths an audit does
not read."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import robinherit
from robinherit.cli import app
from robinherit.errors import ConfigError
from robinherit.runs.store import ResultStore
from robinherit.runs.sweep import load_sweep, records_of, sweep_from_dict
from test_audit import USER_FILE
from test_datasets import make_mnist_files
from test_sources import MICRO_REAL

DIAL = [0.0, 30.0]  # no bound, and one that shrinks the clean head until it hardly separates the classes


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    make_mnist_files(tmp_path / "data", n_train=80, n_test=40)
    raw = json.loads(json.dumps(MICRO_REAL))
    raw["data"]["root"] = str(tmp_path / "data")
    raw["eval"]["autoattack"] = "none"
    raw["downstream"]["heads"] = ["clean"]
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "user.py").write_text(USER_FILE)
    return tmp_path


def write_spec(folder: Path, **spec) -> Path:
    body = {
        "name": "dial",
        "audit": {"encoder": "user.py:make", "data": "micro.yaml"},  # relative to the spec file
        "grid": {"downstream.weight_decay": DIAL},
        "seeds": 1,
        **spec,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_an_audit_sweep_stores_one_audit_per_point_and_answers_a_repeat_from_the_store(setup: Path, monkeypatch):
    spec, db = write_spec(setup), setup / "s.db"
    res = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db), "--quiet"])
    assert res.exit_code == 0, res.output
    recs = sorted(ResultStore(db, read_only=True).runs(), key=lambda r: r["config"]["downstream"]["weight_decay"])
    assert [r["kind"] for r in recs] == ["audit", "audit"]
    assert [r["config"]["downstream"]["weight_decay"] for r in recs] == DIAL
    assert recs[0]["encoder"]["sha256"] == recs[1]["encoder"]["sha256"]  # one encoder, two settings
    heads = [r["downstream"]["clean_head"] for r in recs]
    assert heads[0]["clean_acc"] != heads[1]["clean_acc"]  # the setting reaches the head
    # nothing is computed again: not by the sweep, nor by the equivalent single audit
    audit_module = importlib.import_module("robinherit.auditing")
    monkeypatch.setattr(audit_module, "run_audit", lambda *a, **k: pytest.fail("an audit was computed again"))
    again = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db), "--quiet"])
    assert again.exit_code == 0 and "0 ran, 2 were already stored" in again.output
    single = robinherit.audit(
        f"{setup / 'user.py'}:make", setup / "micro.yaml", store=db, seed=0, downstream__weight_decay=DIAL[1]
    )
    assert single.to_dict() == recs[1]
    # the sweep's spec reads its audits back, as plot, correlate and export do
    found, _ = records_of(spec, db)
    assert sorted(r["run_id"] for r in found) == sorted(r["run_id"] for r in recs)
    out = setup / "dial.csv"
    exported = CliRunner().invoke(app, ["export", str(spec), "--store", str(db), "--out", str(out)])
    assert exported.exit_code == 0 and "2 runs" in exported.output
    assert "config.downstream.weight_decay" in out.read_text().splitlines()[0]


def test_the_command_line_resolves_the_encoder_once_per_sweep(setup: Path, monkeypatch):
    """The user's file is imported, its module built and its weights hashed once, not once to check the points
    and again to run them."""
    target = importlib.import_module("robinherit.runs.audit_target")
    real, calls = target.resolve_encoder, []
    monkeypatch.setattr(target, "resolve_encoder", lambda *a: calls.append(a[0]) or real(*a))
    res = CliRunner().invoke(app, ["sweep", str(write_spec(setup)), "--store", str(setup / "s.db"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1 and "0 were already stored" in res.output


def test_a_dry_run_lists_the_audits_and_what_is_stored(setup: Path):
    spec, db = write_spec(setup), setup / "s.db"
    res = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.count("to audit") == 2 and "2 audits, 0 stored" in res.output
    assert not db.exists() or not ResultStore(db, read_only=True).runs()


def test_a_stored_run_is_audited_with_its_own_settings_where_the_spec_names_no_data(setup: Path):
    db = setup / "s.db"
    (run,) = robinherit.run(setup / "micro.yaml", seeds=[0], store=db, pretrain__steps=2)
    spec = setup / "spec.yaml"
    spec.write_text(yaml.safe_dump({"audit": {"encoder": run.run_id}, "grid": {"eval.n_test": [8, 16]}}))
    res = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db), "--quiet"])
    assert res.exit_code == 0, res.output
    audits = [r for r in ResultStore(db, read_only=True).runs() if r.get("kind") == "audit"]
    assert sorted(r["config"]["eval"]["n_test"] for r in audits) == [8, 16]
    assert all(r["config"]["data"] == run.config.data.to_dict() for r in audits)
    assert sorted(r["run_id"] for r in records_of(spec, db)[0]) == sorted(r["run_id"] for r in audits)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"grid": {"pretrain.eps": [0, 0.1]}}, "grid path 'pretrain.eps' is no setting of an audit"),
        ({"set": {"model.width": 8}}, "set path 'model.width' is no setting of an audit"),
        ({"base": "micro.yaml"}, "give either `base:`"),
        ({"audit": {"encoder": "user.py:make", "size": 3}}, "unknown key 'audit.size'; valid keys: encoder, weights"),
    ],
    ids=["grid-path", "set-path", "base-and-audit", "unknown-audit-key"],
)
def test_a_spec_an_audit_cannot_follow_is_one_paragraph(setup: Path, spec: dict, needle: str):
    with pytest.raises(ConfigError, match="invalid sweep spec") as err:
        load_sweep(write_spec(setup, **spec))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_a_path_an_audit_does_not_read_with_exit_2(setup: Path):
    spec, db = write_spec(setup, grid={"pretrain.steps": [1, 2]}), setup / "s.db"
    res = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db)])
    assert res.exit_code == 2 and "pretrain.steps" in res.stderr and "data.*, downstream.* or eval.*" in res.stderr
    good = write_spec(setup)
    bad_set = CliRunner().invoke(app, ["sweep", str(good), "--store", str(db), "--set", "pretrain.eps=0"])
    assert bad_set.exit_code == 2 and "--set path 'pretrain.eps' is no setting of an audit" in bad_set.stderr
    assert not db.exists() or not ResultStore(db, read_only=True).runs()


def test_a_spec_needs_a_base_or_an_audit():
    with pytest.raises(ConfigError, match="not neither"):
        sweep_from_dict({"base": None, "grid": {"eval.n_test": [8]}}, None)
