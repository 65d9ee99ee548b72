"""Sweeps: run every config of a spec (``robinherit.runs.spec``) not yet in the results store, on a backend
(``robinherit.runs.backends``: a local process pool, or Ray), and read a sweep's records back.

Each run is keyed by ``cfg.config_hash()`` in the results store, so a sweep skips what is stored and a killed driver
(``kill -9`` included) resumes with nothing lost and nothing run twice. Workers only compute; the driver alone
writes the store, one transaction per finished run. Which runs travel together to a worker is decided by
``robinherit.runs.schedule``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robinherit.config import ExperimentConfig
from robinherit.runs.backends import BACKENDS, KILLED, Backend, SweepError, run_local, run_ray
from robinherit.runs.budget import check_fits
from robinherit.runs.pool import GroupResult, Result, error_text, execute, local_pool, shared_pools
from robinherit.runs.schedule import BATCH, by_encoder, spread
from robinherit.runs.schedule import work_units as groups
from robinherit.runs.spec import RandomRange, Scale, Span, Sweep, SweepSpec, dump_spec, load_sweep, sweep_from_dict
from robinherit.runs.store import ResultStore


@dataclass
class SweepReport:
    total: int
    skipped: int = 0  # already in the store when the sweep started
    ran: int = 0
    taken: int = 0  # stored by another sweep while this one was running
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, error)


def run_sweep(
    cfgs: list[ExperimentConfig],
    store: ResultStore,
    *,
    backend: Backend | str = Backend.local,
    workers: int | None = None,
    address: str | None = None,
    on_progress: Callable[[SweepReport], None] | None = None,
    batch: int = BATCH,
) -> SweepReport:
    """Run every config not yet in ``store``; each result is stored as soon as it arrives. Workers take groups of
    up to ``batch`` shape-sharing encoders (with every run on each) and pre-train them as one stack (``batch=1``:
    one encoder per task).

    A failing run (say, a diverging loss) is reported and the others go on; nothing is stored for it.
    """
    backend = Backend(backend)
    check_fits(cfgs)  # on the driver, before any worker starts
    if getattr(mp.current_process(), "_inheriting", False):
        # a spawned worker importing a script that starts a sweep at its top level (no main guard): stop here, as
        # starting a pool would, and the driver names the guard; waiting on the driver's claims would hang both
        raise RuntimeError("a sweep was started while a worker process was starting (no `if __name__ == '__main__':`)")
    stored = store.run_ids()
    todo = by_encoder([c for c in cfgs if c.config_hash() not in stored])
    report = SweepReport(total=len(cfgs), skipped=len(cfgs) - len(todo))
    if on_progress:
        on_progress(report)

    claims = _Claims(store, report, on_progress)
    try:
        while todo:
            if backend == Backend.local:
                workers = workers or os.cpu_count() or 1  # run_local's default, resolved here for spread
            units = spread(todo, batch, workers)
            BACKENDS[backend](claims.pending(todo), claims.on_result, workers=workers, address=address, batch=units)
            todo = by_encoder(_wait_for_others(store, claims.elsewhere, report, on_progress))
            claims.elsewhere.clear()
    finally:
        claims.release_all()  # interrupted: what this sweep claimed and did not finish is free for the next one
    return report


@dataclass
class _Claims:
    """A sweep's claims on runs in a shared store: it hands a worker only runs it could claim, and notes the ones a
    live process holds, to wait for."""

    store: ResultStore
    report: SweepReport
    on_progress: Callable[[SweepReport], None] | None
    mine: set[str] = field(default_factory=set)  # claimed, not yet stored or given up
    elsewhere: list[ExperimentConfig] = field(default_factory=list)  # being computed by another process

    def pending(self, todo: list[ExperimentConfig]) -> Iterator[ExperimentConfig]:
        for cfg in todo:
            run_id = cfg.config_hash()
            if self.store.has(run_id):  # finished by a concurrent sweep since we looked
                self.report.taken += 1
                self._progress()
            elif not self.store.take_lease(run_id):  # being computed by another process: wait for it instead
                self.elsewhere.append(cfg)
            else:
                self.mine.add(run_id)
                yield cfg

    def on_result(self, cfg: ExperimentConfig, result: Result | None, error: str | None) -> None:
        if result is None:
            self.report.failed.append((cfg.config_hash(), error or "unknown error"))
        else:
            record, artifacts = result
            self.store.put(record, artifacts)
            self.report.ran += 1
        self.store.release_lease(cfg.config_hash())
        self.mine.discard(cfg.config_hash())
        self._progress()

    def release_all(self) -> None:
        for run_id in self.mine:
            self.store.release_lease(run_id)

    def _progress(self) -> None:
        if self.on_progress:
            self.on_progress(self.report)


def _wait_for_others(
    store: ResultStore,
    cfgs: list[ExperimentConfig],
    report: SweepReport,
    on_progress: Callable[[SweepReport], None] | None,
    poll_s: float = 1.0,
) -> list[ExperimentConfig]:
    """Wait until every run of ``cfgs`` (being computed by other processes) is stored; returns those whose process
    died or gave up without storing them, for this sweep to compute."""
    waiting, orphans = list(cfgs), []
    while waiting:
        still = []
        for cfg in waiting:
            run_id = cfg.config_hash()
            if store.has(run_id):
                report.taken += 1
                if on_progress:
                    on_progress(report)
            elif store.lease_alive(run_id):
                still.append(cfg)
            else:
                orphans.append(cfg)
        waiting = still
        if waiting:
            time.sleep(poll_s)
    return orphans


def records_of(source: str | Path, store: str | Path | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Records to plot or export: a store file gives all its runs; a sweep spec (``.yaml``) gives the runs of
    that sweep found in ``store`` (default: the spec's ``store``), an audit sweep's audits included (its encoder is
    resolved to find them: their ids hash its weights). Returns ``(records, store path)``."""
    source = Path(source)
    if source.suffix.lower() in {".yaml", ".yml"}:
        sweep = load_sweep(source)
        db_path = Path(store) if store is not None else sweep.spec.store
        if db_path is None:
            raise SweepError(
                f"sweep spec '{source}' names no store; pass --store (the file `robinherit sweep` wrote to)"
            )
        db = _open_existing(db_path)
        if sweep.spec.audit is not None:
            from robinherit.runs.audit_target import audit_points  # torch and the models: only where needed

            ids = [run_id for _, run_id in audit_points(sweep, db)[2]]
        else:
            ids = [c.config_hash() for c in sweep.configs()]
        records = [r for r in (db.get(i) for i in ids) if r is not None]
        return records, db_path
    db = _open_existing(source)
    return db.runs(), source


def _open_existing(path: str | Path) -> ResultStore:
    path = Path(path)
    if not path.exists():
        raise SweepError(f"results store '{path}' does not exist; run the sweep first or pass the right path")
    return ResultStore(path, read_only=True)


__all__ = [
    "BACKENDS",
    "BATCH",
    "KILLED",
    "Backend",
    "GroupResult",
    "RandomRange",
    "Result",
    "Scale",
    "Span",
    "Sweep",
    "SweepError",
    "SweepReport",
    "SweepSpec",
    "by_encoder",
    "dump_spec",
    "error_text",
    "execute",
    "groups",
    "load_sweep",
    "local_pool",
    "records_of",
    "run_local",
    "run_ray",
    "run_sweep",
    "shared_pools",
    "spread",
    "sweep_from_dict",
]
