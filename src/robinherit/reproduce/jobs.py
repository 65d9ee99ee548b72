"""Derived results: computations on top of the stored runs that are not runs themselves (the mechanism curves,
claim 4's extra downstream tasks, end-to-end AT and the clean-head cost of Xing et al. 2024's claims).

Each is stored in the results store's ``aux`` table under ``(kind, key)``. The key is the run hash plus a short
hash of everything else the computation reads: its kind, its parameters (the constants of the claim module,
passed to the function explicitly so the key cannot miss one) and the module's ``DERIVED_VERSION``. Changing
GAMMAS or EPS_REF, or the computation (bump the version), therefore misses the store instead of serving a
stale value. Values are stored with the package versions and the git commit, as runs are.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robinherit.config import ExperimentConfig
from robinherit.errors import RobinheritError
from robinherit.runs.provenance import git_commit, versions
from robinherit.runs.store import ResultStore


@dataclass(frozen=True)
class AuxJob:
    """One derived result: ``fn(*make_args(), **params)``. ``make_args`` runs in the main process, only when
    the result is not stored yet (it may read the store, e.g. an encoder's weights); ``fn`` and its arguments
    must pickle (a module-level function). ``tag`` is how the claim finds the result again; ``weight`` a rough
    relative cost, so that the longest jobs start first on a pool."""

    kind: str
    key: str
    label: str
    fn: Callable[..., dict]
    make_args: Callable[[], tuple]
    params: dict[str, Any] = field(default_factory=dict)
    tag: Any = None
    weight: float = 1.0


def params_hash(kind: str, params: dict[str, Any], version: int) -> str:
    """Short hash of what a derived result depends on besides its run."""
    blob = json.dumps({"kind": kind, "params": params, "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def derived_job(
    kind: str,
    cfg: ExperimentConfig | Sequence[ExperimentConfig],
    label: str,
    fn: Callable[..., dict],
    make_args: Callable[[], tuple],
    *,
    params: dict[str, Any],
    version: int,
    tag: Any = None,
    weight: float = 1.0,
) -> AuxJob:
    """A job on ``cfg``'s run, keyed by the run hash and :func:`params_hash`. ``make_args`` may return only
    the config and what the store holds for its run (both covered by the run hash); every other input goes in
    ``params``, which is what makes the key cover it. A job over several runs (say, one stack of every seed) takes
    their configs, and its key's first part is a short hash of their run hashes, in order."""
    if isinstance(cfg, ExperimentConfig):
        runs = cfg.config_hash()
    else:
        runs = hashlib.sha256("/".join(c.config_hash() for c in cfg).encode()).hexdigest()[:16]
    key = f"{runs}/{params_hash(kind, params, version)}"
    return AuxJob(kind, key, label, fn, make_args, params=params, tag=tag, weight=weight)


def encoder_weights(store: ResultStore, cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    """The stored encoder artifact {"W", "b", "M"} of ``cfg``'s run."""
    return store.artifact(cfg.config_hash(), "encoder")


def _unwrap(stored: dict[str, Any]) -> dict[str, Any]:
    # Values stored with provenance are {"value": ..., "versions": ..., ...}; a script's own keys may still
    # hold values stored before provenance was kept.
    return stored["value"] if {"value", "git_commit"} <= set(stored) else stored


def timed(fn: Callable[..., dict], *args: Any, **params: Any) -> tuple[dict, float]:
    """``fn(*args, **params)`` and the seconds it took, measured in the process that ran it."""
    t0 = time.perf_counter()
    value = fn(*args, **params)
    return value, time.perf_counter() - t0


def run_aux(
    store: ResultStore,
    jobs: Sequence[AuxJob],
    workers: int,
    tick: Callable[[str], None],
    seconds: dict[tuple[str, str], float] | None = None,
) -> dict[tuple[str, str], dict]:
    """Every job's result, from the store or computed (on a local pool of ``workers`` single-threaded processes
    when > 1, in the order given). Each result is stored as soon as it exists, so a failure or an interrupt
    loses none of the others: the error names the failed jobs and the rerun computes only what is missing.
    ``seconds``, where given, receives each computed job's worker seconds under (kind, key); they are stored
    with the value too."""
    from robinherit.runs.pool import error_text, local_pool

    out: dict[tuple[str, str], dict] = {}
    missing: list[AuxJob] = []
    for job in jobs:
        hit = store.get_aux(job.kind, job.key)
        if hit is None:
            missing.append(job)
        else:
            out[job.kind, job.key] = _unwrap(hit)
            tick(f"{job.label} (stored)")
    failed: list[str] = []

    def done(job: AuxJob, value_and_seconds: tuple[dict, float]) -> None:
        value, took = value_and_seconds
        store.put_aux(job.kind, job.key, _envelope(job, value, took))
        out[job.kind, job.key] = value
        if seconds is not None:
            seconds[job.kind, job.key] = took
        tick(job.label)

    # with workers > 1 even a single missing job goes to the pool: its single-threaded worker ran one resumed job
    # in seconds where this process, with torch's default thread count, took minutes
    if workers > 1 and missing:
        with local_pool(min(workers, len(missing))) as ex:
            futures = {ex.submit(timed, job.fn, *job.make_args(), **job.params): job for job in missing}
            for fut in as_completed(futures):
                try:
                    done(futures[fut], fut.result())
                except Exception as err:  # keep storing the others; report every failure at the end
                    failed.append(f"{futures[fut].label}: {error_text(err)}")
    else:
        for job in missing:
            try:
                done(job, timed(job.fn, *job.make_args(), **job.params))
            except Exception as err:  # as on the pool: the others still run and are stored
                failed.append(f"{job.label}: {error_text(err)}")
    if failed:
        raise RobinheritError(
            f"{len(failed)} derived result(s) failed ({'; '.join(failed)}). Everything else is stored; fix the cause "
            "and rerun the same command to resume"
        )
    return out


def _envelope(job: AuxJob, value: dict, took: float) -> dict[str, Any]:
    """What the store keeps of a derived result: the value with what made it (params, versions, commit) and its
    worker seconds."""
    return {
        "value": value,
        "kind": job.kind,
        "params": job.params,
        "seconds": took,
        "versions": versions(),
        "git_commit": git_commit(),
    }
