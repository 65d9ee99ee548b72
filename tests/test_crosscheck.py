"""Cross-check against ART's PGD: the toolkit's PGD is at least as strong, and `robinherit evaluate` reports it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robinherit.analysis.crosscheck import art_available, art_pgd_robust_acc, check_run, sandwich_violations
from robinherit.cli import app
from robinherit.config import Norm, load_config
from robinherit.errors import RobinheritError
from robinherit.evaluation.robust import evaluate
from robinherit.ops.losses import class_margin
from robinherit.runs.experiment import rebuild_run, run_experiment
from robinherit.runs.store import ResultStore

needs_art = pytest.mark.skipif(
    not art_available(),
    reason="adversarial-robustness-toolbox is not installed (pip install 'robinherit[art]')",
)

TINY = {
    "data": {"d": 16},
    "model": {"width": 32},
    "pretrain": {"steps": 100, "batch_size": 128, "attack_steps": 2},
    "downstream": {"epochs": 15, "n_train": 500, "heads": ["clean"]},
    # 1,000 test points: two single-restart PGD-10 attacks differ by their random starts alone. Over 4 attack seeds
    # the toolkit minus ART at eps 0.5 ranged over -0.03..+0.02 with 200 points, past the 0.01 tolerance either
    # way, and over -0.014..+0.004 with 1,000
    "eval": {"n_test": 1000, "steps": 10, "restarts": 1, "eps_grid": [0, 0.25, 0.5]},
}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crosscheck")
    cfg_path = folder / "tiny.yaml"
    raw = yaml.safe_load(Path("configs/supervised.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    cfg_path.write_text(yaml.safe_dump(raw))
    record, artifacts = run_experiment(load_config(cfg_path))
    store = ResultStore(folder / "runs.db")
    store.put(record, artifacts)
    return cfg_path, record, store


def test_sandwich_violations_name_each_failure() -> None:
    pgd = {"0": 0.9, "0.25": 0.6}
    assert sandwich_violations({"0": 0.9, "0.25": 0.5}, pgd, {"0": 0.9, "0.25": 0.595}) == []
    out = sandwich_violations({"0": 0.9, "0.25": 0.7}, pgd, {"0": 0.9, "0.25": 0.58})
    assert len(out) == 2 and "certified 0.700 > PGD 0.600" in out[0] and "ART-PGD 0.580" in out[1]


def test_missing_art_is_a_user_error(tiny_store, monkeypatch) -> None:
    _, record, store = tiny_store
    run = rebuild_run(record, store.artifact(record["run_id"], "encoder"))
    monkeypatch.setitem(sys.modules, "art", None)  # makes `import art...` fail
    monkeypatch.setitem(sys.modules, "art.attacks.evasion", None)
    with pytest.raises(RobinheritError, match=r"robinherit\[art\]"):
        art_pgd_robust_acc(run.model, run.x, run.y, 2, eps_grid=(0.25,), norm=Norm.l2, steps=5, restarts=1, seed=0)


@needs_art
@pytest.mark.parametrize("norm", [Norm.l2, Norm.linf])
def test_toolkit_pgd_at_least_as_strong_as_art(tiny_store, norm: Norm) -> None:
    _, record, store = tiny_store
    run = rebuild_run(record, store.artifact(record["run_id"], "encoder"))
    grid = (0.0, 0.25, 0.5) if norm == Norm.l2 else (0.0, 0.05, 0.1)
    was_training = run.model.training
    art, pert = art_pgd_robust_acc(run.model, run.x, run.y, 2, eps_grid=grid, norm=norm, steps=10, restarts=1, seed=0)
    assert run.model.training == was_training  # ART's mode switch is undone
    res = evaluate(run.model, run.x, run.y, class_margin, eps_grid=grid, norm=norm, steps=10, restarts=1,
                   g=run.eval_generator)  # fmt: skip
    assert sandwich_violations(res.certified_acc, res.robust_acc, art) == []
    assert art["0"] == res.clean_acc  # same bookkeeping: only the attacks differ
    assert min(art.values()) < art["0"]  # the peer attack does something at these radii
    assert all(pert[k] <= float(k) * (1 + 1e-5) for k in pert)  # ART stayed inside the ball


@needs_art
def test_art_pgd_is_an_evaluation_attack(tiny_store) -> None:
    """``eval.attacks: [art-pgd]`` runs ART's PGD beside the toolkit's, on the same cumulative bookkeeping."""
    from robinherit.evaluation.robust import EVAL_ATTACKS, robust_eval

    _, record, store = tiny_store
    run = rebuild_run(record, store.artifact(record["run_id"], "encoder"))
    ecfg = run.cfg.eval.model_copy(update={"attacks": ("art-pgd",), "per_attack": True})
    was_training = run.model.training
    out = robust_eval(run.model, run.x, run.y, class_margin, ecfg, n_classes=2, image_shape=None,
                      g=run.eval_generator, seed=0, tag="clean")  # fmt: skip
    assert "art-pgd" in EVAL_ATTACKS and out["attacks"][1:] == ["art-pgd"]
    assert run.model.training == was_training
    art = out["autoattack_robust_acc"]  # every attack beside PGD together: here ART's alone
    assert art["0"] == out["pgd_robust_acc"]["0"] and min(art.values()) < art["0"]
    assert list(art.values()) == sorted(art.values(), reverse=True)  # cumulative: non-increasing in eps
    assert sandwich_violations(None, out["pgd_robust_acc"], art) == []


@needs_art
def test_check_run_reproduces_the_record_and_sandwiches(tiny_store) -> None:
    _, record, store = tiny_store
    rep = check_run(record, store.artifact(record["run_id"], "encoder"), art=True)
    assert rep["matches_record"] is True and rep["violations"] == []
    for k in rep["robust_acc"]:
        assert (
            rep["certified_ibp"][k] <= rep["certified_acc"][k] and rep["certified_crown"][k] <= rep["certified_acc"][k]
        )


@needs_art
def test_cli_evaluate_with_crosscheck(tiny_store) -> None:
    cfg_path, record, store = tiny_store
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(cfg_path), "--store", str(store.path), "--crosscheck", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert rep["run_id"] == record["run_id"] and rep["violations"] == [] and rep["art_robust_acc"] is not None
    # by run id, as a table, without ART
    res = runner.invoke(app, ["evaluate", record["run_id"][:8], "--store", str(store.path)])
    assert res.exit_code == 0, res.output
    assert "CROWN" in res.stdout and "ART-PGD" not in res.stdout and "certified <= PGD" in res.stdout


def test_cli_evaluate_rejects_unknown_targets_and_heads(tiny_store) -> None:
    _, record, store = tiny_store
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "nosuchrun", "--store", str(store.path)])
    assert res.exit_code == 2 and "neither a config file nor a run id" in res.output
    res = runner.invoke(app, ["evaluate", record["run_id"], "--store", str(store.path), "--head", "adversarial"])
    assert res.exit_code == 2 and "without a adversarial head" in res.output
