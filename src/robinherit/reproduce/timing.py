"""Where a ``reproduce`` call's time went: wall seconds per stage of this call, and the work inside them in
worker seconds (what each computed run and derived result cost the process that ran it).

The stages run one after the other, so their wall times add up to the call's. Work is summed over the runs and
derived results computed in this call; stored ones cost nothing now and are counted apart. With ``workers`` > 1
the work of a stage is spread over that many processes, so its worker seconds exceed its wall time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# The parts of a run's own record timing (experiment.finish_experiment) and what the table calls them.
RUN_PARTS = {"pretrain": "pre-training", "downstream": "heads", "eval": "evaluation"}


class StageClock:
    """Wall seconds of named stages, in the order they ran."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0


def run_work(
    runs: list[tuple[str, str, Any]], records: dict[str, dict[str, list[dict]]], computed: set[str]
) -> list[dict[str, Any]]:
    """One row per (family, arm) and part of a run: runs computed now and stored, and the worker seconds of
    those computed now, from each record's ``timing_s``. ``runs`` is the driver's (family, arm, config) plan;
    ``computed`` the run ids this call ran."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, str], int] = {}
    for fam, arm, cfg in runs:
        i = seen.get((fam, arm), 0)
        seen[fam, arm] = i + 1
        rec = records[fam][arm][i]
        now = cfg.config_hash() in computed
        for part, label in RUN_PARTS.items():
            row = rows.setdefault(
                (fam, arm, part),
                {"what": f"{fam} {arm}: {label}", "computed": 0, "stored": 0, "worker_s": 0.0},
            )
            row["computed" if now else "stored"] += 1
            if now:
                row["worker_s"] += float(rec.get("timing_s", {}).get(part, 0.0))
    return list(rows.values())


def derived_work(jobs: list[Any], seconds: dict[tuple[str, str], float]) -> list[dict[str, Any]]:
    """One row per derived-result kind: how many were computed now (``seconds`` holds their worker seconds, keyed
    by (kind, key)) and how many came from the store."""
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:
        row = rows.setdefault(job.kind, {"what": f"derived: {job.kind}", "computed": 0, "stored": 0, "worker_s": 0.0})
        took = seconds.get((job.kind, job.key))
        if took is None:
            row["stored"] += 1
        else:
            row["computed"] += 1
            row["worker_s"] += took
    return list(rows.values())


def summary(clock: StageClock, work: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """The ``timing_s`` block of claims.json: stages (wall), work rows (worker seconds), and their totals."""
    return {
        "workers": workers,
        "stages": dict(clock.stages),
        "wall": sum(clock.stages.values()),
        "work": work,
        "worker_s": sum(r["worker_s"] for r in work),
    }


def markdown(timing: dict[str, Any]) -> list[str]:
    """The report's "where the time went" section."""
    md = [
        "## Where the time went",
        "",
        f"Wall seconds per stage of this call ({timing['workers']} worker process(es)):",
        "",
        "| stage | wall s |",
        "|---|---|",
    ]
    md += [f"| {name} | {s:.1f} |" for name, s in timing["stages"].items()]
    md += [f"| total | {timing['wall']:.1f} |", "", "Work inside the stages, in worker seconds:", ""]
    md += ["| what | computed | stored | worker s | share |", "|---|---|---|---|---|"]
    total = timing["worker_s"] or 1.0
    for r in sorted(timing["work"], key=lambda r: -r["worker_s"]):
        share = f"{100 * r['worker_s'] / total:.0f}%"
        md.append(f"| {r['what']} | {r['computed']} | {r['stored']} | {r['worker_s']:.1f} | {share} |")
    return md
