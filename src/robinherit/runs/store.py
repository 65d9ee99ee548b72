"""Embedded results store: one SQLite file in WAL mode, one row per run keyed by its config hash.

Rows carry the full resolved config, the metrics, package versions, the git commit and timings, so a
rerun of the same config and seed is answered from the store and a resumed sweep runs nothing twice.
Small arrays (encoder weights) go to an ``artifacts`` table as compressed ``.npz`` blobs.

A file that is not a robinherit store is refused before anything is written to it. A store written by an older
version (its ``user_version`` below ``SCHEMA_VERSION``: run ids of version 1 did not cover the device type, the
numerics version or inert settings, so its records cannot answer for this code) opens read-only: ``runs``,
``show``, ``export`` and ``plot`` read it as it is, and a command that would add runs is refused with what to do.
Nothing in an old store is changed or lost.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from robinherit.errors import StoreError

APPLICATION_ID = 0x52424852  # "RBHR": marks a file as a robinherit store
# 2: run ids hash the identity of a run (inert settings left out; device type and numerics version in); 1: before.
SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"
# A lease of a process on another host is taken over after this long: its liveness cannot be checked from here.
LEASE_STALE_S = 6 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    seed INTEGER NOT NULL,
    method TEXT,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    versions TEXT NOT NULL,
    git_commit TEXT,
    total_s REAL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aux (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    taken_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


def _read_only_uri(path: Path, immutable: bool = False) -> str:
    """The SQLite URI that opens ``path`` read-only. The resolved path is percent-quoted, so a '#', '?' or '%' in a
    file name stays part of the name instead of starting the URI's fragment or query (which would open another
    file). ``immutable``: read the file as it is, without the shared-memory file a WAL database otherwise needs
    beside it, which cannot be made in a read-only folder, on a read-only mount or on a full disk."""
    return f"{Path(path).resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")


def place_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written, when the cause is its place rather than its content: a read-only mount, a
    folder or file without write permission, a full disk. None where none of these holds."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"'{folder}' is a file, so no folder can be made inside it"
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"'{folder}' is on a read-only file system"
    if not os.access(folder, os.W_OK):
        return f"the folder '{folder}' is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    free = st.f_bavail * st.f_frsize
    if free < 2**20:
        return f"the disk is full ({free} bytes free in '{folder}')"
    return None


def _inspect(path: Path, immutable: bool) -> tuple[int, int, set[str], list[str]]:
    """(application id, user version, table names, quick_check rows) of an SQLite file, read-only."""
    con = sqlite3.connect(_read_only_uri(path, immutable), uri=True)
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # quick_check reports most damage as rows of text rather than raising
        check = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
    finally:
        con.close()
    return app_id, version, tables, check


def _check_existing(path: Path) -> tuple[int | None, bool]:
    """Refuse, without writing, a file that is not an (empty or robinherit) SQLite database. Returns its schema
    version (None for an empty file) and whether it must be read as immutable (its place is read-only or full)."""
    if path.is_dir():
        raise StoreError(f"results store '{path}' is a directory; pass a file path such as {path / 'runs.db'}")
    if not path.is_file():  # a device such as /dev/null, or a pipe: SQLite would leave a journal file beside it
        raise StoreError(f"results store '{path}' is not a regular file; pass --store with a file path such as runs.db")
    size = path.stat().st_size
    if size == 0:
        return None, False
    with path.open("rb") as fh:
        head = fh.read(16)
    if head != SQLITE_MAGIC:
        raise StoreError(
            f"'{path}' is not a robinherit results store (not an SQLite database). It was not modified; "
            "pass --store with a new path or the store you meant"
        )
    immutable = False
    try:
        app_id, version, tables, check = _inspect(path, immutable)
    except sqlite3.DatabaseError as err:
        check = [str(err)]
        # a healthy WAL store in a read-only or full place cannot be opened the usual way: read it as it is
        if isinstance(err, sqlite3.OperationalError) and place_problem(path) is not None:
            immutable = True
            try:
                app_id, version, tables, check = _inspect(path, immutable)
            except sqlite3.DatabaseError as err2:
                check = [str(err2)]
    if check != ["ok"]:
        raise StoreError(
            f"results store '{path}' is corrupt or unreadable ({check[0]}). It was not modified; restore it from a "
            "backup or pass --store with a new path"
        ) from None
    if app_id != APPLICATION_ID and tables:
        raise StoreError(
            f"'{path}' is an SQLite database of another application (tables: {', '.join(sorted(tables))}). "
            "It was not modified; pass --store with a new path or the robinherit store you meant"
        )
    return (version if tables else None), immutable


def _write_error(path: Path, err: Exception) -> StoreError:
    """A failed write, naming its cause: the place (read-only, not writable, full) where that is it."""
    problem = place_problem(path)
    cause = f"{problem} ({err})" if problem else str(err)
    return StoreError(
        f"cannot write results store '{path}': {cause}. Nothing in it was changed, and `robinherit runs`, `show` and "
        "`export` can still read it; pass --store with a writable path or free some space"
    )


class ResultStore:
    """``ResultStore(path)``: open or create; ``get``/``put``/``runs``/``artifacts``. ``read_only``: open an existing
    store without writing anything to it (what listing and exporting commands do; a store of an older schema
    opens only so)."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0, read_only: bool = False):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.read_only = read_only
        self.version, self._immutable = _check_existing(self.path) if self.path.exists() else (None, False)
        if self.version is not None and self.version > SCHEMA_VERSION:
            raise StoreError(
                f"results store '{self.path}' was written by a newer robinherit (store schema {self.version}, this "
                f"version reads {SCHEMA_VERSION} and older). It was not modified; upgrade robinherit or pass --store "
                "with another path"
            )
        if read_only:
            if not self.path.exists():
                raise StoreError(f"results store '{self.path}' does not exist; pass --store with an existing store")
            return
        if self.version is not None and self.version < SCHEMA_VERSION:
            raise StoreError(
                f"results store '{self.path}' was written by an older robinherit (store schema {self.version}): its "
                "run ids do not cover the device or the numerics version, so its runs cannot answer for this version "
                "and no new run is added to it. It was not modified, and `robinherit runs`, `show`, `export` and "
                "`plot` still read it. Pass --store with a new file to run (e.g. --store results/runs-v2.db), or move "
                "the old file aside"
            )
        # A new store's file is made at its first write, so a command that fails before storing anything leaves no
        # empty store behind; reads before then see an empty store. Its place is checked now, before any compute.
        self._pending = not self.path.exists()
        if self._pending:
            problem = place_problem(self.path)
            if problem is not None:
                raise StoreError(
                    f"cannot create results store '{self.path}': {problem}; pass --store with a writable path"
                )
        else:
            self._create()

    def _create(self) -> None:
        """Make the store's folder, file and tables (idempotent: several processes may race to do it)."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the folder '{parent}' for results store '{self.path}' ({err.strerror}); "
                "pass --store with a writable path"
            ) from None
        try:
            with self._connect() as con:
                con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                con.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:  # includes OperationalError: read-only file, no space, locked
            raise _write_error(self.path, err) from None
        self._pending = False

    def _ready(self, write: bool) -> bool:
        """Whether the file can be queried; makes it for a write. A file another process made meanwhile is checked
        as any existing store is."""
        if not getattr(self, "_pending", False):
            return True
        if self.path.exists():
            self.version, self._immutable = _check_existing(self.path)
            self._create()
            return True
        if write:
            self._create()
            return True
        return False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            con = sqlite3.connect(_read_only_uri(self.path, self._immutable), uri=True, timeout=self.timeout_s)
        else:
            con = sqlite3.connect(self.path, timeout=self.timeout_s)
        try:
            if not self.read_only:
                con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            with con:
                yield con
        finally:
            con.close()

    def _retry(self, fn, *args, write: bool = False):
        if write and self.read_only:
            raise StoreError(f"results store '{self.path}' is open read-only; nothing was written")
        # busy_timeout covers most contention; a retry loop covers the WAL-upgrade races it does not.
        if not self._ready(write):  # nothing stored yet: answer from an empty store of the same schema
            con = sqlite3.connect(":memory:")
            try:
                con.executescript(_SCHEMA)
                return fn(con, *args)
            finally:
                con.close()
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                with self._connect() as con:
                    return fn(con, *args)
            except sqlite3.DatabaseError as err:  # damage found mid-use is a StoreError too, not a traceback
                if ("locked" not in str(err) and "busy" not in str(err)) or time.monotonic() > deadline:
                    if write and isinstance(err, sqlite3.OperationalError):
                        raise _write_error(self.path, err) from None
                    raise StoreError(f"results store '{self.path}': {err}") from None
                time.sleep(0.05)

    def get(self, run_id: str) -> dict[str, Any] | None:
        row = self._retry(lambda con: con.execute("SELECT result FROM runs WHERE run_id = ?", (run_id,)).fetchone())
        return None if row is None else _decode(row[0], self.path, f"run '{run_id}'")

    def has(self, run_id: str) -> bool:
        return self._retry(
            lambda con: con.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None
        )

    def run_ids(self) -> set[str]:
        """Ids of all stored runs, in one query (a sweep checks hundreds of configs at once)."""
        return {r[0] for r in self._retry(lambda con: con.execute("SELECT run_id FROM runs").fetchall())}

    def put(self, record: dict[str, Any], artifacts: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        """Insert or replace one run (and its artifacts) in one transaction."""
        blobs = {name: _pack(arrays) for name, arrays in (artifacts or {}).items()}

        def write(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record["run_id"],
                    record["seed"],
                    record["config"].get("pretrain", {}).get("method"),
                    json.dumps(record["config"], sort_keys=True),
                    json.dumps(record, sort_keys=True),
                    json.dumps(record.get("versions", {}), sort_keys=True),
                    record.get("git_commit"),
                    record.get("timing_s", {}).get("total"),
                    time.time(),
                ),
            )
            for name, blob in blobs.items():
                con.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", (record["run_id"], name, blob))

        self._retry(write, write=True)

    def runs(self) -> list[dict[str, Any]]:
        rows = self._retry(lambda con: con.execute("SELECT result FROM runs ORDER BY created_at").fetchall())
        return [_decode(r[0], self.path, "run") for r in rows]

    def artifact(self, run_id: str, name: str) -> dict[str, np.ndarray] | None:
        row = self._retry(
            lambda con: con.execute(
                "SELECT data FROM artifacts WHERE run_id = ? AND name = ?", (run_id, name)
            ).fetchone()
        )
        if row is None:
            return None
        with np.load(io.BytesIO(row[0])) as npz:
            return {k: npz[k] for k in npz.files}

    def get_aux(self, kind: str, key: str) -> dict[str, Any] | None:
        """A derived result that is not one experiment run (e.g. a mechanism curve), by kind and key."""
        row = self._retry(
            lambda con: con.execute("SELECT value FROM aux WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        )
        return None if row is None else _decode(row[0], self.path, f"derived result '{kind}/{key}'")

    def aux_keys(self) -> set[tuple[str, str]]:
        """(kind, key) of every stored derived result."""
        return {(k, key) for k, key in self._retry(lambda con: con.execute("SELECT kind, key FROM aux").fetchall())}

    def put_aux(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self._retry(
            lambda con: con.execute(
                "INSERT OR REPLACE INTO aux VALUES (?, ?, ?, ?)", (kind, key, json.dumps(value), time.time())
            ),
            write=True,
        )

    # --- leases: a run being computed by one process is not started by another on the same store ---------------

    def take_lease(self, run_id: str, holder: str | None = None, stale_s: float = LEASE_STALE_S) -> bool:
        """Claim ``run_id`` for computing: True when this caller may compute it (no one holds it, or its holder has
        died), False when the run is stored already or a live process holds it. One transaction, so of two
        processes asking at once exactly one gets it. ``holder`` defaults to this process (host and pid)."""
        holder = holder or lease_holder()

        def claim(con: sqlite3.Connection) -> bool:
            con.execute("BEGIN IMMEDIATE")
            if con.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                return False
            row = con.execute("SELECT holder, taken_at FROM leases WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None and row[0] != holder and holder_alive(row[0], row[1], stale_s):
                return False
            con.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (run_id, holder, time.time()))
            return True

        return self._retry(claim, write=True)

    def release_lease(self, run_id: str, holder: str | None = None) -> None:
        """Give ``run_id`` back (after storing it, or after it failed), if this caller holds it."""
        holder = holder or lease_holder()
        self._retry(
            lambda con: con.execute("DELETE FROM leases WHERE run_id = ? AND holder = ?", (run_id, holder)),
            write=True,
        )

    def lease_alive(self, run_id: str, stale_s: float = LEASE_STALE_S) -> bool:
        """Whether a live process other than this one holds ``run_id``'s lease."""
        row = self._retry(
            lambda con: con.execute("SELECT holder, taken_at FROM leases WHERE run_id = ?", (run_id,)).fetchone()
        )
        return row is not None and row[0] != lease_holder() and holder_alive(row[0], row[1], stale_s)

    def leased(self) -> dict[str, str]:
        """run id -> holder, of every lease now in the store (live or not)."""
        return dict(self._retry(lambda con: con.execute("SELECT run_id, holder FROM leases").fetchall()))

    def find(self, prefix: str) -> dict[str, Any] | None:
        """The run whose id starts with ``prefix`` (ids are long; users type a few characters)."""
        rows = self._retry(
            # substr, not LIKE: '%' and '_' typed by a user are characters, not wildcards
            lambda con: con.execute(
                "SELECT result FROM runs WHERE substr(run_id, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        )
        if len(rows) > 1:
            raise StoreError(f"run id prefix '{prefix}' matches {len(rows)} runs; type more characters")
        return _decode(rows[0][0], self.path, f"run '{prefix}'") if rows else None


def lease_holder() -> str:
    """This process as a lease holder: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(holder: str, taken_at: float, stale_s: float = LEASE_STALE_S) -> bool:
    """Whether the process that took a lease may still be computing: on this host, whether its pid is alive; on
    another, whether the lease is younger than ``stale_s``."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return time.time() - taken_at < stale_s
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _decode(text: str, path: Path, what: str) -> Any:
    """A stored JSON value; a row edited by hand into something else is a StoreError naming it, not a traceback."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise StoreError(
            f"results store '{path}' holds a {what} that is not valid JSON ({err}); the row was edited or damaged. "
            "Nothing was changed; fix or delete that row (its run id is the key), or pass --store with another path"
        ) from None


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
