"""Results store: round trip, rerun from the store, --force, and refusals that leave files untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robinherit.config import ExperimentConfig, with_updates
from robinherit.errors import NonFiniteLossError, StoreError
from robinherit.runs import schedule
from robinherit.runs import store as store_mod
from robinherit.runs.schedule import run_or_load
from robinherit.runs.store import ResultStore


def record(run_id: str = "abc123", seed: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seed": seed,
        "config": {"pretrain": {"method": "supervised", "eps": 0.25}, "seed": seed},
        "purification": {"top1_share_mean": 0.8, "frac_pure": {"0.5": 0.9}},
        "downstream": {"clean_head": {"clean_acc": 1.0, "robust_acc": {"0": 1.0, "0.25": 0.95}}},
        "timing_s": {"total": 1.5},
        "versions": {"torch": "x"},
        "git_commit": "deadbeef",
        **extra,
    }


def test_round_trip(tmp_path: Path):
    db = ResultStore(tmp_path / "runs.db")
    rec = record()
    arrays = {"W": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(3)}
    db.put(rec, {"encoder": arrays})
    assert db.has("abc123") and not db.has("other")
    assert db.get("abc123") == rec
    assert db.get("other") is None
    back = db.artifact("abc123", "encoder")
    assert back is not None and set(back) == {"W", "b"}
    np.testing.assert_array_equal(back["W"], arrays["W"])
    assert db.artifact("abc123", "nope") is None
    reopened = ResultStore(tmp_path / "runs.db")  # a second process opening the same file sees the run
    assert reopened.runs() == [rec]
    assert reopened.find("abc") == rec and reopened.find("zzz") is None


def test_store_is_sqlite_in_wal_mode_with_our_application_id(tmp_path: Path):
    path = tmp_path / "runs.db"
    ResultStore(path).put(record())
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA application_id").fetchone()[0] == store_mod.APPLICATION_ID
    finally:
        con.close()


def test_put_replaces_and_ambiguous_prefix_is_an_error(tmp_path: Path):
    db = ResultStore(tmp_path / "runs.db")
    db.put(record("abc1", extra_field=1))
    db.put(record("abc1", extra_field=2))
    db.put(record("abc2"))
    assert len(db.runs()) == 2
    assert db.get("abc1")["extra_field"] == 2
    with pytest.raises(StoreError, match="matches 2 runs"):
        db.find("abc")
    assert db.find("abc2")["run_id"] == "abc2"
    assert db.find("a_c1") is None and db.find("%1") is None  # no wildcards


class FakeRuns:
    """Stands in for running a config (the store logic is what is tested): counts calls, fails on request."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self, cfg: ExperimentConfig, progress=None):
        self.calls += 1
        if self.fail:
            raise NonFiniteLossError("pre-training loss became nan at step 3")
        return record(cfg.config_hash(), cfg.seed, call=self.calls), {"encoder": {"W": np.ones((2, 2))}}


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    fake = FakeRuns()

    def run_many(cfgs, on_result, **_):  # the scheduler's contract: on_result(index, result or None, error or None)
        for i, cfg in enumerate(cfgs):
            try:
                res = fake(cfg)
            except Exception as err:
                on_result(i, None, err)
                continue
            on_result(i, res, None)

    monkeypatch.setattr(schedule, "run_many", run_many)
    return fake


def test_rerun_is_answered_from_the_store_unless_forced(tmp_path: Path, fake_runs: FakeRuns, micro_cfg):
    db = ResultStore(tmp_path / "runs.db")
    first, cached1 = run_or_load(micro_cfg, db)
    second, cached2 = run_or_load(micro_cfg, db)
    assert (cached1, cached2) == (False, True)
    assert second == first and fake_runs.calls == 1
    third, cached3 = run_or_load(micro_cfg, db, force=True)
    assert not cached3 and fake_runs.calls == 2 and third["call"] == 2
    assert db.get(micro_cfg.config_hash())["call"] == 2  # the forced run replaced the stored one
    _, cached4 = run_or_load(with_updates(micro_cfg, seed=1), db)  # another seed is another run
    assert not cached4 and fake_runs.calls == 3


def test_a_failing_run_loses_nothing_already_stored(tmp_path: Path, fake_runs: FakeRuns, micro_cfg):
    db = ResultStore(tmp_path / "runs.db")
    run_or_load(micro_cfg, db)
    run_or_load(with_updates(micro_cfg, seed=1), db)
    before = db.runs()
    fake_runs.fail = True
    with pytest.raises(NonFiniteLossError):
        run_or_load(with_updates(micro_cfg, seed=2), db)
    with pytest.raises(NonFiniteLossError):
        run_or_load(micro_cfg, db, force=True)  # a failed forced rerun keeps the stored result
    assert db.runs() == before
    assert ResultStore(tmp_path / "runs.db").runs() == before


def test_real_rerun_from_the_store_is_identical(tmp_path: Path, micro_cfg: ExperimentConfig):
    db = ResultStore(tmp_path / "runs.db")
    first, cached1 = run_or_load(micro_cfg, db)
    second, cached2 = run_or_load(micro_cfg, db)
    assert not cached1 and cached2
    assert second == first
    art = db.artifact(first["run_id"], "encoder")
    assert art is not None and art["W"].shape == (micro_cfg.model.width, micro_cfg.data.d)


def test_unwritable_store_paths_are_clear_errors(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="writable path"):
        ResultStore(blocker / "runs.db")  # a folder that cannot exist: its parent is a file
    with pytest.raises(StoreError, match="is a directory"):
        ResultStore(tmp_path)
    assert blocker.read_text() == "x"


def test_read_only_store_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "ro.db"
    ResultStore(path).put(record())
    before = path.read_bytes()
    path.chmod(0o444)
    try:
        probe = path.open("ab")  # root ignores permission bits: nothing to test then
        probe.close()
        pytest.skip("running as a user who can write read-only files")
    except PermissionError:
        pass
    try:
        with pytest.raises(StoreError):
            ResultStore(path).put(record("other"))
        assert path.read_bytes() == before
    finally:
        path.chmod(0o644)


def test_non_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"my precious notes\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an SQLite database"):
        ResultStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal/-shm left behind


def test_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path):
    path = tmp_path / "other_app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE accounts (id INTEGER, name TEXT)")
    con.execute("INSERT INTO accounts VALUES (1, 'ada')")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"another application.*accounts"):
        ResultStore(path)
    assert path.read_bytes() == before


def stored_file(tmp_path: Path, n: int = 40) -> Path:
    """A real store with enough rows to span several pages, checkpointed into the main file."""
    path = tmp_path / "runs.db"
    db = ResultStore(path)
    for i in range(n):
        db.put(record(f"run{i:03d}", i, padding="x" * 2000), {"encoder": {"W": np.random.default_rng(i).random(50)}})
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")  # fold the WAL in, so the bytes below are the whole store
    con.close()
    return path


@pytest.mark.parametrize("damage", ["truncate", "scribble"])
def test_corrupt_store_is_refused_and_left_unchanged(tmp_path: Path, damage: str):
    path = stored_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    else:  # overwrite pages after the header page: the SQLite magic still looks fine
        data[4096 : 4096 * 6] = b"\xa5" * (4096 * 5)
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(StoreError, match="corrupt"):
        ResultStore(path)
    assert path.read_bytes() == before


def test_compare_stores_ignores_timings_and_names_what_differs(tmp_path: Path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_stores", Path(__file__).parents[1] / "scripts/compare_stores.py"
    )
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    rec = {"run_id": "r1", "seed": 0, "config": {}, "downstream": {"acc": 0.5}, "timing_s": {"total": 1.0}}
    a, b = ResultStore(tmp_path / "a.db"), ResultStore(tmp_path / "b.db")
    a.put(rec)
    b.put({**rec, "timing_s": {"total": 2.0}, "git_commit": "other"})  # the same numbers, another time
    for store, seconds in ((a, 1.0), (b, 3.0)):
        store.put_aux("e2e", "k", {"value": {"per_seed": [{"seconds": seconds, "acc": 0.9}]}, "seconds": seconds})
    assert a.aux_keys() == {("e2e", "k")}
    assert compare.main([str(tmp_path / "a.db"), str(tmp_path / "b.db")]) == 0
    b.put({**rec, "downstream": {"acc": 0.6}})
    b.put_aux("e2e", "k", {"value": {"per_seed": [{"seconds": 1.0, "acc": 0.8}]}, "seconds": 1.0})
    assert compare.main([str(tmp_path / "a.db"), str(tmp_path / "b.db")]) == 1
    out = capsys.readouterr().out
    assert "r1 differs in downstream" in out and "k differs in value" in out


@pytest.mark.parametrize("name", ["runs#1.db", "runs?mode=rw.db", "runs%20x.db"])
def test_store_paths_with_uri_characters_address_that_file_and_no_other(tmp_path: Path, name: str):
    db = ResultStore(tmp_path / name)
    db.put(record())
    assert ResultStore(tmp_path / name, read_only=True).get("abc123") == record()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [name]


def test_a_foreign_database_behind_a_hash_path_is_refused_unchanged(tmp_path: Path):
    foreign = tmp_path / "app#1.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE accounts (id INTEGER)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="another application"):
        ResultStore(foreign)
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app#1.db"]


def test_a_store_on_a_read_only_mount_is_read_and_a_write_names_the_cause(small_mount: Path):
    import subprocess

    path = small_mount / "runs.db"
    ResultStore(path).put(record())
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    before = path.read_bytes()
    assert ResultStore(path, read_only=True).get("abc123") == record()
    with pytest.raises(StoreError, match="read-only file system") as err:
        ResultStore(path).put(record("new"))
    assert "corrupt" not in str(err.value) and "can still read it" in str(err.value)
    assert path.read_bytes() == before


def test_a_store_on_a_full_disk_is_read_and_a_write_names_the_cause(small_mount: Path):
    path = small_mount / "runs.db"
    ResultStore(path).put(record())
    with (small_mount / "filler").open("wb") as fh:  # fill the disk to its last byte
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    assert ResultStore(path, read_only=True).get("abc123") == record()
    with pytest.raises(StoreError, match="disk is full") as err:
        ResultStore(path).put(record("big", padding="x" * 200_000))
    assert "corrupt" not in str(err.value)
    assert ResultStore(path, read_only=True).run_ids() == {"abc123"}


def test_a_new_store_is_made_at_its_first_write_only(tmp_path: Path):
    path = tmp_path / "sub" / "runs.db"
    db = ResultStore(path)
    assert not path.exists() and not path.parent.exists()
    assert db.run_ids() == set() and db.get("x") is None and db.runs() == []
    db.put(record())
    assert ResultStore(path, read_only=True).get("abc123") == record()


def test_a_device_is_not_a_store_and_gets_no_journal(tmp_path: Path):
    with pytest.raises(StoreError, match="not a regular file"):
        ResultStore("/dev/null")
    assert not Path("/dev/null-journal").exists() and not Path("/dev/null-wal").exists()


def test_a_lease_goes_to_one_holder_and_is_taken_over_when_its_holder_died(tmp_path: Path):
    import subprocess
    import sys

    db = ResultStore(tmp_path / "runs.db")
    assert db.take_lease("r1", "host-a:1", stale_s=3600) is True
    assert db.take_lease("r1", "host-b:2", stale_s=3600) is False  # a recent lease of another host: alive
    assert db.take_lease("r1", "host-a:1", stale_s=3600) is True  # its own holder may take it again
    assert db.take_lease("r1", "host-b:2", stale_s=0) is True  # too old to be alive: taken over
    db.release_lease("r1", "host-b:2")
    assert db.leased() == {}
    # on this host, a lease of a process that has exited is taken over at once, one of a live process is not
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = store_mod.lease_holder()
    host = mine.rpartition(":")[0]
    assert db.take_lease("r2", f"{host}:{dead.stdout.strip()}") is True
    assert db.take_lease("r2") is True and db.take_lease("r2", f"{host}:1") is False  # held by this live process
    db.put(record("r3"))
    assert db.take_lease("r3") is False  # a stored run is never computed again


def test_a_hand_edited_row_is_one_error_naming_it(tmp_path: Path):
    path = tmp_path / "runs.db"
    ResultStore(path).put(record())
    con = sqlite3.connect(path)
    con.execute("UPDATE runs SET result = '{not json'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=r"abc123.*not valid JSON"):
        ResultStore(path, read_only=True).get("abc123")
    with pytest.raises(StoreError, match="not valid JSON"):
        ResultStore(path, read_only=True).runs()
