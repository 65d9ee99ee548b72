"""Sweeps: spec expansion, resume after kill -9, concurrent sweeps on one store, Ray vs local, bad stores."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robinherit.cli import app
from robinherit.config import build_config, load_config, with_updates
from robinherit.errors import ConfigError
from robinherit.runs.store import ResultStore
from robinherit.runs.sweep import Backend, load_sweep, run_sweep, sweep_from_dict

# A run of this config takes well under a second: the sweep machinery is under test, not the science.
TINY = {
    "data": {"d": 8, "k": 3},
    "model": {"width": 8},
    "pretrain": {"steps": 20, "batch_size": 64, "attack_steps": 2},
    "downstream": {"heads": ["clean"], "steps": 10, "n_train": 200},
    "eval": {"eps_grid": [0, 0.25], "steps": 3, "restarts": 1, "n_test": 100},
}


@pytest.fixture
def base_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def write_spec(tmp_path: Path, base: Path, name: str = "spec.yaml", **spec) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"base": str(base), **spec}))
    return path


GRID_24 = {"grid": {"pretrain.eps": [0, 0.25], "model.threshold": [0.0, 0.2, 0.4]}, "seeds": 4}


# ------------------------------------------------------------------------------------------- spec expansion


def test_grid_times_seeds_gives_every_combination_once(tmp_path, base_yaml):
    sw = load_sweep(write_spec(tmp_path, base_yaml, **GRID_24))
    cfgs = sw.configs()
    assert len(cfgs) == 24
    assert len({c.config_hash() for c in cfgs}) == 24
    combos = {(c.pretrain.eps, c.model.threshold, c.seed) for c in cfgs}
    assert combos == {(e, b, s) for e in (0, 0.25) for b in (0.0, 0.2, 0.4) for s in range(4)}
    # the base config's own settings are kept
    assert all(c.data.d == 8 and c.model.width == 8 for c in cfgs)


def test_set_span_and_duplicate_points(tmp_path, base_yaml):
    spec = {
        "set": {"pretrain.lr": 0.02},
        "grid": {"model.width": {"low": 4, "high": 16, "num": 3, "scale": "log", "integer": True}},
        "seeds": [3, 5],
    }
    cfgs = load_sweep(write_spec(tmp_path, base_yaml, **spec)).configs()
    assert sorted({c.model.width for c in cfgs}) == [4, 8, 16]
    assert {c.seed for c in cfgs} == {3, 5} and all(c.pretrain.lr == 0.02 for c in cfgs)
    # two grid values that validate to the same config are one run, not two
    dup = sweep_from_dict({"grid": {"pretrain.eps": [0.25, 0.250]}}, load_config(base_yaml))
    assert len(dup.configs()) == 1


def test_random_draws_are_fixed_by_random_seed_and_inside_their_ranges(base_yaml):
    base = load_config(base_yaml)
    raw = {
        "grid": {"pretrain.eps": [0, 0.5]},
        "random": {
            "model.threshold": {"low": 0.05, "high": 0.5, "scale": "log"},
            "pretrain.augmentation": {"choices": ["noise", "mask"]},
        },
        "samples": 5,
        "seeds": 2,
    }
    a = [c.config_hash() for c in sweep_from_dict(raw, base).configs()]
    again = [c.config_hash() for c in sweep_from_dict(raw, base).configs()]
    other = [c.config_hash() for c in sweep_from_dict({**raw, "random_seed": 1}, base).configs()]
    assert a == again  # a resumed random sweep must ask for the same runs
    assert set(a) != set(other)
    cfgs = sweep_from_dict(raw, base).configs()
    assert len(cfgs) == 2 * 5 * 2
    assert all(0.05 <= c.model.threshold <= 0.5 for c in cfgs)
    assert {c.pretrain.augmentation.value for c in cfgs} <= {"noise", "mask"}
    assert len({c.model.threshold for c in cfgs}) == 5  # 5 draws, shared by both grid points


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"grid": {"pretrain.epz": [0, 1]}}, "unknown key 'pretrain.epz'"),
        ({"grid": {"seed": [0, 1]}}, "'seeds' key"),
        ({"grdi": {"pretrain.eps": [0]}}, "unknown key 'grdi'"),
        ({"grid": {"pretrain.eps": [0, -1]}}, "pretrain.eps=-1"),
        ({"random": {"pretrain.eps": {"low": 0, "high": 1}}}, "samples = 0"),
        (
            {"random": {"pretrain.eps": {"low": 0, "hi": 1}}, "samples": 2},
            r"unknown key 'random\.pretrain\.eps\.hi'; valid keys: low, high",
        ),
        ({"seeds": [1, 1]}, "seeds has duplicates"),
        ({"grid": {"pretrain.eps": [0]}, "set": {"pretrain.eps": 0.1}}, "given twice"),
    ],
)
def test_bad_specs_name_the_problem(tmp_path, base_yaml, spec, expected):
    with pytest.raises(ConfigError, match=expected):
        load_sweep(write_spec(tmp_path, base_yaml, **spec)).configs()


def test_base_path_is_relative_to_the_spec_file(tmp_path, base_yaml):
    sub = tmp_path / "sweeps"
    sub.mkdir()
    (sub / "s.yaml").write_text(yaml.safe_dump({"base": "../base.yaml", "seeds": 2}))
    assert len(load_sweep(sub / "s.yaml").configs()) == 2
    (sub / "t.yaml").write_text(yaml.safe_dump({"base": "base.yaml"}))
    with pytest.raises(ConfigError, match="relative to the spec file"):
        load_sweep(sub / "t.yaml")


# ------------------------------------------------------------------------------------------- execution


def sweep_cmd(spec: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robinherit.cli", "sweep", str(spec), "--store", str(store), "--quiet", *extra]


def count_runs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sweep_killed_with_sigkill_resumes_to_exactly_all_runs(tmp_path, base_yaml):
    spec = write_spec(tmp_path, base_yaml, **GRID_24)
    db = tmp_path / "runs.db"
    driver = subprocess.Popen(sweep_cmd(spec, db, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while count_runs(db) < 6 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    at_kill = count_runs(db)
    assert driver.returncode == -signal.SIGKILL
    assert 0 < at_kill < 24, f"the kill should land mid-sweep (stored {at_kill} of 24)"

    done = subprocess.run(sweep_cmd(spec, db, "--workers", "2"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the restart ran exactly the missing runs: nothing lost, nothing run twice
    assert f"{24 - at_kill} ran, {at_kill} were already stored" in done.stdout
    expected = {c.config_hash() for c in load_sweep(spec).configs()}
    assert ResultStore(db).run_ids() == expected
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 24
    con.close()


def test_two_sweeps_writing_one_store_at_once_lose_nothing(tmp_path, base_yaml):
    # overlapping grids: eps=0.25 is in both, so the union has 3 points x 2 seeds
    a = write_spec(tmp_path, base_yaml, "a.yaml", grid={"pretrain.eps": [0, 0.25]}, seeds=2)
    b = write_spec(tmp_path, base_yaml, "b.yaml", grid={"pretrain.eps": [0.25, 0.5]}, seeds=2)
    db = tmp_path / "shared.db"
    ResultStore(db).put_aux("test", "made", {})  # created up front so both drivers open an existing store
    procs = [
        subprocess.Popen(sweep_cmd(s, db, "--workers", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for s in (a, b)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    expected = {c.config_hash() for s in (a, b) for c in load_sweep(s).configs()}
    assert len(expected) == 6
    assert ResultStore(db).run_ids() == expected
    stored = ResultStore(db).runs()
    assert all(r["downstream"]["clean_head"]["clean_acc"] >= 0 for r in stored)


def test_failed_run_is_reported_and_the_others_are_stored(tmp_path, base_yaml):
    # With D = 8 there are only 2^7 distinct +-1 tasks up to sign, so 128 pre-training tasks leave none for
    # the downstream task: make_world raises DataError inside the worker. That run fails; the sweep goes on,
    # stores the other run and reports the failed one with the worker's error.
    sw = sweep_from_dict({"grid": {"data.n_tasks": [1, 128]}}, load_config(base_yaml))
    db = ResultStore(tmp_path / "f.db")
    rep = run_sweep(sw.configs(), db, workers=1)
    assert rep.ran == 1 and len(rep.failed) == 1
    bad = next(c for c in sw.configs() if c.data.n_tasks == 128)
    assert rep.failed[0][0] == bad.config_hash() and rep.failed[0][1].startswith("DataError")
    assert db.run_ids() == {c.config_hash() for c in sw.configs()} - {bad.config_hash()}


# ------------------------------------------------------------------------------------------- bad stores


@pytest.mark.parametrize("kind", ["garbage", "foreign"])
def test_corrupt_or_foreign_store_is_refused_and_left_unchanged(tmp_path, base_yaml, kind):
    spec = write_spec(tmp_path, base_yaml, seeds=2)
    bad = tmp_path / "bad.db"
    if kind == "garbage":
        bad.write_bytes(b"this is not a database\x00\x01" * 100)
    else:
        con = sqlite3.connect(bad)
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        con.execute("INSERT INTO invoices VALUES (1, 9.5)")
        con.commit()
        con.close()
    before = bad.read_bytes()
    result = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(bad), "--quiet"])
    assert result.exit_code == 2
    assert "not modified" in result.output
    assert bad.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("bad.db")) == ["bad.db"]  # no -wal/-shm


# ------------------------------------------------------------------------------------------- Ray backend

try:
    import ray
except ImportError:  # the other tests of this file still run
    ray = None
needs_ray = pytest.mark.skipif(
    ray is None, reason="Ray is not installed: pip install 'robinherit[ray]' to test the ray backend"
)


def _running_cluster() -> str | None:
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # no Ray, no cluster, or a Ray version without this helper
        return None


def comparable(record: dict) -> dict:
    # Timings differ run to run, and the git commit moves when someone commits between the two sweeps;
    # everything else (config, every metric, loss curve, per-node purity) must be identical.
    return {k: v for k, v in record.items() if k not in ("timing_s", "git_commit")}


@needs_ray
@pytest.mark.skipif(
    ray is None or _running_cluster() is None,
    reason="no Ray cluster is running here; `ray start --head` enables this test",
)
def test_ray_backend_with_address_auto_uses_the_running_cluster(tmp_path, base_yaml):
    spec = write_spec(tmp_path, base_yaml, seeds=2)
    db = tmp_path / "auto.db"
    done = subprocess.run(
        sweep_cmd(spec, db, "--backend", "ray", "--address", "auto"), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert ResultStore(db).run_ids() == {c.config_hash() for c in load_sweep(spec).configs()}


@needs_ray
def test_ray_backend_stores_the_same_metrics_as_the_local_backend(tmp_path, base_yaml):
    from test_sweep_sources import digits_spec

    spec = write_spec(tmp_path, base_yaml, grid={"pretrain.eps": [0, 0.25]}, seeds=2)
    # a real-data base too (`base: digits`): Ray workers run every source, with the same numbers as the local pool
    cfgs = load_sweep(spec).configs()[:2] + load_sweep(digits_spec(tmp_path)).configs()
    assert sum(c.is_real for c in cfgs) == 2
    local, remote = ResultStore(tmp_path / "local.db"), ResultStore(tmp_path / "ray.db")
    assert run_sweep(cfgs, local, backend=Backend.local, workers=2).ran == 4
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rep = run_sweep(cfgs, remote, backend=Backend.ray)
    finally:
        ray.shutdown()
    assert rep.ran == 4 and not rep.failed
    a = {r["run_id"]: comparable(r) for r in local.runs()}
    b = {r["run_id"]: comparable(r) for r in remote.runs()}
    assert a.keys() == b.keys() == {c.config_hash() for c in cfgs}
    for run_id in a:
        assert a[run_id] == b[run_id]
    # and the weights too
    for run_id in a:
        wa, wb = local.artifact(run_id, "encoder"), remote.artifact(run_id, "encoder")
        assert (wa["W"] == wb["W"]).all()


def test_groups_stack_only_shape_sharing_runs():
    from robinherit.config import with_updates
    from robinherit.runs.sweep import groups
    from robinherit.training.stacked import batch_key

    base = load_config(None, ["data.d=8", "model.width=8"])
    seeds = [with_updates(base, seed=s) for s in range(5)]
    wider = [with_updates(base, **{"model.width": 16, "seed": s}) for s in range(2)]
    contrastive = [with_updates(base, **{"pretrain.method": "contrastive", "seed": s}) for s in range(2)]
    # below the closed form's temperature contrastive pre-training has no batched path
    cold = [
        with_updates(base, **{"pretrain.method": "contrastive", "pretrain.temperature": 0.01, "seed": s})
        for s in range(2)
    ]
    got = list(groups(iter(seeds + wider + contrastive + cold), size=3))
    assert [len(g) for g in got] == [3, 2, 2, 2, 1, 1]  # size cap, shape change, method, no batched path
    for g in got:
        assert len({batch_key(c) for c in g}) == 1
    assert [c for g in got for c in g] == seeds + wider + contrastive + cold  # order kept, nothing lost


def test_groups_keep_runs_of_one_encoder_together_without_a_batched_path(tmp_path):
    from robinherit.config import with_updates
    from robinherit.runs.sweep import groups
    from robinherit.training.stacked import batch_key
    from test_datasets import make_mnist_files

    make_mnist_files(tmp_path, n_train=40, n_test=20)
    conv = build_config(
        {"data": {"source": "mnist", "root": str(tmp_path)}, "model": {"encoder": "conv", "conv": {"channels": [4, 8]}}}
    )
    assert batch_key(conv) is None
    dial = [with_updates(conv, **{"downstream.weight_decay": wd}) for wd in (0.0, 0.01, 0.1)]
    other = with_updates(conv, seed=1)
    got = list(groups(iter([*dial, other]), size=8))
    assert got == [dial, [other]]  # one worker pre-trains the shared encoder once (run_many); another seed apart


def test_a_sweep_over_head_settings_groups_each_encoders_runs_together():
    from robinherit.config import with_updates
    from robinherit.runs.sweep import by_encoder, groups

    base = load_config(None, ["data.d=8", "model.width=8"])
    # grid order: head setting outer, seed inner (as SweepSpec.configs expands points x seeds)
    cfgs = [with_updates(base, **{"downstream.weight_decay": wd, "seed": s}) for wd in (0, 0.01, 0.1) for s in range(3)]
    ordered = by_encoder(cfgs)
    assert sorted(c.config_hash() for c in ordered) == sorted(c.config_hash() for c in cfgs)  # nothing lost
    assert [c.seed for c in ordered] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    got = list(groups(iter(ordered), size=2))
    assert [len(g) for g in got] == [6, 3]  # size counts encoders: two per group, each with its three heads
    for g in got:
        for seed in {c.seed for c in g}:
            assert sum(c.seed == seed for c in g) == 3  # an encoder's runs are never split across groups


def test_a_sweep_with_few_encoders_still_gives_every_worker_a_group(tmp_path, monkeypatch):
    from robinherit.config import with_updates
    from robinherit.runs import sweep
    from robinherit.runs.store import ResultStore

    base = load_config(None, ["data.d=8", "model.width=8"])
    # a head dial: 4 encoders (seeds) x 3 head settings, all shape-sharing, under the default of 8 encoders a group
    cfgs = [with_updates(base, **{"downstream.weight_decay": wd, "seed": s}) for wd in (0, 0.01, 0.1) for s in range(4)]
    seen = {}

    def record(units, on_result, *, workers, address, batch):
        seen[workers] = [len({c.pretrain_hash() for c in g}) for g in sweep.groups(units, batch)]

    monkeypatch.setitem(sweep.BACKENDS, sweep.Backend.local, record)
    for workers in (1, 2, 3, 8):
        sweep.run_sweep(cfgs, ResultStore(tmp_path / f"{workers}.db"), workers=workers)
    # encoders per group: one group for one worker; else an even share, so no worker waits while another has two
    assert seen == {1: [4], 2: [2, 2], 3: [2, 2], 8: [1, 1, 1, 1]}
    assert sweep.spread(cfgs, batch=8, workers=None) == 8  # a Ray cluster of unknown size: the batch as given


# ------------------------------------------------------------------------------------------- --set


def test_set_overrides_every_run_and_wins_over_the_specs_own_set(tmp_path, base_yaml):
    sw = load_sweep(write_spec(tmp_path, base_yaml, set={"pretrain.lr": 0.02}, **GRID_24))
    over = sw.with_overrides(["pretrain.lr=0.05", "eval.n_test=50"])
    cfgs, plain = over.configs(), sw.configs()
    assert len(cfgs) == len(plain) == 24
    assert all(c.pretrain.lr == 0.05 and c.eval.n_test == 50 for c in cfgs)
    assert all(c.pretrain.lr == 0.02 and c.eval.n_test == 100 for c in plain)  # the loaded sweep is unchanged
    # each run is the spec's run with the override applied: same points and seeds, new ids
    want = {with_updates(c, **{"pretrain.lr": 0.05, "eval.n_test": 50}).config_hash() for c in plain}
    assert {c.config_hash() for c in cfgs} == want
    assert sw.with_overrides([]) is sw


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("model.threshold=0", "the sweep's grid varies this path"),
        ("seed=3", "'seeds' key"),
        ("model.widht=3", "unknown key 'model.widht'"),
        ("eval.n_test=-1", "eval.n_test"),
        ("pretrain.eps", "not of the form path=value"),
    ],
)
def test_set_refuses_swept_paths_and_bad_values_by_name(tmp_path, base_yaml, item, message):
    sw = load_sweep(write_spec(tmp_path, base_yaml, **GRID_24))
    with pytest.raises(ConfigError, match=re.escape(message)):
        sw.with_overrides([item])


def test_cli_sweep_set_reaches_the_runs(tmp_path, base_yaml):
    spec = write_spec(tmp_path, base_yaml, grid={"pretrain.eps": [0, 0.25]}, seeds=1)
    db = tmp_path / "s.db"
    res = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db), "--quiet", "--set", "eval.n_test=40"])
    assert res.exit_code == 0, res.output
    recs = ResultStore(db).runs()
    assert len(recs) == 2 and all(r["config"]["eval"]["n_test"] == 40 for r in recs)
    bad = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(db), "--set", "pretrain.eps=0.1"])
    assert bad.exit_code == 2 and "grid varies this path" in bad.output


def test_every_shipped_spec_expands_and_takes_a_device_override():
    """The specs under src/robinherit/sweeps load by name, every point validates, and --set device=cuda (what the GPU
    scripts pass) changes the device of every run and nothing else of its identity."""
    from importlib import resources

    names = sorted(p.stem for p in (resources.files("robinherit") / "sweeps").iterdir() if p.name.endswith(".yaml"))
    assert "supervised_256_seeds" in names
    for name in names:
        sw = load_sweep(name)
        cfgs, on_cuda = sw.configs(), sw.with_overrides(["device=cuda"]).configs()
        assert cfgs and len(on_cuda) == len(cfgs)
        assert all(c.device == "cuda" for c in on_cuda)
        assert [with_updates(c, device="cuda").config_hash() for c in cfgs] == [c.config_hash() for c in on_cuda]
    assert len(load_sweep("supervised_256_seeds").configs()) == 256


def _die() -> None:
    os._exit(1)  # a worker killed mid-task, as the OS does to one out of memory


def test_shared_pools_start_the_workers_once_and_replace_a_broken_pool():
    from concurrent.futures.process import BrokenProcessPool

    from robinherit.runs import sweep

    with sweep.local_pool(2) as a:
        first = {a.submit(os.getpid).result() for _ in range(4)}
    with sweep.local_pool(2) as b:
        assert b is not a  # outside shared_pools: a new pool each time
    with sweep.shared_pools():
        with sweep.local_pool(2) as a:
            pids = {a.submit(os.getpid).result() for _ in range(8)}
        with sweep.local_pool(2) as b:
            assert b is a and {b.submit(os.getpid).result() for _ in range(8)} <= pids  # the same workers
        assert os.getpid() not in pids and not pids & first
        with sweep.shared_pools(), sweep.local_pool(2) as c:  # nested: the outer block's pools
            assert c is a
        with pytest.raises(BrokenProcessPool):
            a.submit(_die).result()
        with sweep.local_pool(2) as d:  # the broken pool is replaced at its next use
            assert d is not a and d.submit(sum, [1, 2]).result() == 3
    with pytest.raises(RuntimeError, match="shutdown"):  # the block's end shut its pools down
        d.submit(int)


def test_an_unreachable_ray_address_is_an_error_within_seconds(micro_yaml, tmp_path):
    import socket
    import time

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": str(micro_yaml), "seeds": [0]}))
    t0 = time.monotonic()
    res = CliRunner().invoke(
        app,
        ["sweep", str(spec), "--backend", "ray", "--address", f"127.0.0.1:{port}", "--store", str(tmp_path / "r.db")],
    )
    assert res.exit_code == 2 and "cannot reach a Ray cluster" in res.output and "Traceback" not in res.output
    assert time.monotonic() - t0 < 30


def test_two_identical_sweeps_on_one_store_compute_each_run_once(tmp_path, base_yaml):
    import re

    spec = write_spec(tmp_path, base_yaml, "same.yaml", grid={"pretrain.eps": [0, 0.25]}, seeds=3)
    db = tmp_path / "shared.db"
    procs = [
        subprocess.Popen(
            sweep_cmd(spec, db, "--workers", "1", "--batch", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    ran = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        ran += int(re.search(r"(\d+) ran", out.decode() + err.decode()).group(1))
    assert ran == 6  # each of the 6 runs computed by one sweep only; the other waited and read it
    assert ResultStore(db, read_only=True).run_ids() == {c.config_hash() for c in load_sweep(spec).configs()}
    assert ResultStore(db, read_only=True).leased() == {}
