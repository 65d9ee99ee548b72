"""Sweeps on every source (a real-data base config, local and Ray backends, then export and plot), a worker the OS
kills, and a store written by an older version."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from killing_worker import DOOMED_SEED, execute_or_die
from robinherit.cli import app
from robinherit.config import load_config
from robinherit.errors import ConfigError, StoreError
from robinherit.runs.store import ResultStore
from robinherit.runs.sweep import load_sweep

DIGITS_SET = {
    "model.width": 16,
    "pretrain.steps": 30,
    "pretrain.batch_size": 64,
    "pretrain.attack_steps": 2,
    "downstream.heads": ["clean"],
    "downstream.steps": 20,
    "downstream.n_train": 200,
    "eval.n_test": 80,
    "eval.eps_grid": [0, 0.5],
    "eval.steps": 3,
    "eval.restarts": 1,
    "eval.autoattack": "none",
}


def digits_spec(tmp_path: Path) -> Path:
    # `base: digits` is the shipped config's name: a spec needs no path into the package
    spec = {"name": "digits eps", "base": "digits", "set": DIGITS_SET, "grid": {"pretrain.eps": [0, 0.5]}, "seeds": 1}
    path = tmp_path / "digits_sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# The Ray backend on this spec: tests/test_sweep.py::test_ray_backend_stores_the_same_metrics_as_the_local_backend
# (one Ray start for the synthetic and the real-data runs, compared with the local pool).
@pytest.mark.parametrize("backend", ["local"])
def test_a_sweep_over_a_real_data_config_runs_and_export_and_plot_read_it(tmp_path, backend):
    spec = digits_spec(tmp_path)
    store = tmp_path / f"{backend}.db"
    runner = CliRunner()
    res = runner.invoke(app, ["sweep", str(spec), "--store", str(store), "--backend", backend, "--workers", "2"])
    assert res.exit_code == 0, res.output
    cfgs = load_sweep(spec).configs()
    assert all(c.is_real and c.data.source == "digits" for c in cfgs)
    db = ResultStore(store)
    assert db.run_ids() == {c.config_hash() for c in cfgs}
    for rec in db.runs():
        assert rec["dataset"]["name"] == "digits" and "0.5" in rec["pretrain"]["robust_acc"]
        assert "certified_acc" in rec["downstream"]["clean_head"]
    res = runner.invoke(app, ["export", str(store), "--out", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == 2 and {r["config.pretrain.eps"] for r in rows} == {"0.0", "0.5"}
    assert all(r["pretrain.robust_acc.0.5"] != "" for r in rows)
    res = runner.invoke(
        app,
        ["plot", str(store), "--x", "pretrain.eps", "--y", "downstream.clean_head.robust_acc.0.5",
         "--out", str(tmp_path / "fig")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_a_worker_killed_by_the_os_is_reported_with_its_run_id_and_the_others_are_stored(
    tmp_path, micro_yaml, monkeypatch
):
    from robinherit.runs import sweep

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": str(micro_yaml), "seeds": [0, DOOMED_SEED, 2]}))
    doomed = next(c for c in load_sweep(spec).configs() if c.seed == DOOMED_SEED)
    real = sweep.run_local
    monkeypatch.setitem(sweep.BACKENDS, sweep.Backend.local, lambda *a, **k: real(*a, **k, execute_fn=execute_or_die))
    res = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(tmp_path / "k.db"), "--quiet", "--batch", "1"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"run {doomed.config_hash()} failed" in res.output and "killed by the operating system" in res.output
    assert "1 of 3 runs failed" in res.output
    # the runs in flight beside it when the pool broke were run again alone and stored
    assert ResultStore(tmp_path / "k.db").run_ids() == {c.config_hash() for c in load_sweep(spec).configs()} - {
        doomed.config_hash()
    }


class RacingPool:
    """A process pool, in this process, whose worker on the doomed seed dies at the worst moment: after ``wait`` has
    returned another run's result and before the driver's next ``submit``, which the broken pool refuses. A real pool
    reaches this order only by chance (it is the order a 2-core machine hit)."""

    def __init__(self, n: int):
        self.n, self.broken, self.dying = n, False, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, cfg_jsons):
        if self.broken:
            for fut in self.dying:  # as a real pool does: every future in flight fails with it
                fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))
            raise BrokenProcessPool("a child process terminated abruptly, the process pool is not usable anymore")
        fut = Future()
        if any(c["seed"] == DOOMED_SEED for c in cfg_jsons):
            self.broken = True
            if self.n == 1:  # alone, nobody else submits: the pool notices at once
                fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))
            else:
                self.dying.append(fut)
        else:
            fut.set_result(fn(cfg_jsons))
        return fut


def test_a_group_the_broken_pool_refuses_runs_in_a_new_pool_and_nothing_else_is_lost(tmp_path, micro_yaml, monkeypatch):
    from robinherit.runs import backends

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": str(micro_yaml), "seeds": [0, DOOMED_SEED, 2, 3]}))
    cfgs = load_sweep(spec).configs()
    doomed = next(c for c in cfgs if c.seed == DOOMED_SEED)
    pools: list[RacingPool] = []
    monkeypatch.setattr(backends, "local_pool", lambda n: pools.append(RacingPool(n)) or pools[-1])
    res = CliRunner().invoke(
        app, ["sweep", str(spec), "--store", str(tmp_path / "k.db"), "--quiet", "--batch", "1", "--workers", "2"]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"run {doomed.config_hash()} failed" in res.output and "killed by the operating system" in res.output
    assert "1 of 4 runs failed" in res.output
    # the race happened: the first pool refused a submit, and the refused run and the one after it were stored
    assert pools[0].broken and [p.n for p in pools] == [2, 1, 2]
    assert ResultStore(tmp_path / "k.db").run_ids() == {c.config_hash() for c in cfgs} - {doomed.config_hash()}


def _old_store(path: Path, micro_yaml: Path) -> None:
    """A store as an older robinherit left it: schema version 1, one run."""
    rec = {"run_id": "0123456789abcdef", "seed": 0, "config": load_config(micro_yaml).resolved(), "timing_s": {}}
    rec["purification"] = {"top1_share_mean": 0.5, "frac_pure": {"0.5": 0.5}, "neff_median": 2.0, "dead_nodes": 0}
    rec["downstream"] = {"clean_head": {"clean_acc": 1.0, "robust_acc": {"0": 1.0}}}
    rec["timing_s"] = {"total": 1.0}
    ResultStore(path).put(rec)
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()


def test_a_store_of_an_older_version_is_read_and_never_written(tmp_path, micro_yaml):
    path = tmp_path / "old.db"
    _old_store(path, micro_yaml)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=r"older robinherit.*--store with a new file"):
        ResultStore(path)
    assert [r["run_id"] for r in ResultStore(path, read_only=True).runs()] == ["0123456789abcdef"]
    runner = CliRunner()
    res = runner.invoke(app, ["runs", "--store", str(path)])
    assert res.exit_code == 0 and "0123456789abcdef" in res.output
    res = runner.invoke(app, ["run", str(micro_yaml), "--store", str(path)])
    assert res.exit_code == 2 and "older robinherit" in res.output and "Traceback" not in res.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # nothing in it changed


def test_a_store_of_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "new.db"
    ResultStore(path).put_aux("test", "made", {})  # a store file is made at its first write
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    for read_only in (False, True):
        with pytest.raises(StoreError, match="newer robinherit"):
            ResultStore(path, read_only=read_only)


def test_sweep_over_a_missing_shipped_name_says_where_it_looked(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "no_such_config"}))
    with pytest.raises(ConfigError, match="base config 'no_such_config' not found"):
        load_sweep(spec)


def test_a_script_without_a_main_guard_is_told_how_to_fix_it(tmp_path, micro_yaml):
    """Spawned workers import the driving script again; a sweep started at its top level kills every worker at
    start-up. The error names the guard that fixes it."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from robinherit.config import load_config, with_updates\n"
        "from robinherit.runs.store import ResultStore\n"
        "from robinherit.runs.sweep import run_sweep\n"
        f"cfgs = [with_updates(load_config({str(micro_yaml)!r}), seed=s) for s in (0, 1)]\n"
        f"rep = run_sweep(cfgs, ResultStore({str(tmp_path / 'u.db')!r}), workers=2)\n"
        "print('FAILED', len(rep.failed), rep.failed[0][1] if rep.failed else '')\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED 2 ") and "if __name__ == '__main__':" in last, res.stdout + res.stderr[-2000:]
