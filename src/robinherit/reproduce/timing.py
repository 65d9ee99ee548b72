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


def run_work(records: dict[str, dict[str, list[dict]]], computed: set[str]) -> list[dict[str, Any]]:
    """One row per (family, arm) and part of a run: runs computed now and stored, and the worker seconds of
    those computed now, from each record's ``timing_s``. ``records`` is family -> arm -> per-seed records;
    ``computed`` the run ids this call ran."""
    rows = []
    for fam, arms in records.items():
        for arm, recs in arms.items():
            now = [r for r in recs if r["run_id"] in computed]
            for part, label in RUN_PARTS.items():
                worker_s = sum(float(r.get("timing_s", {}).get(part, 0.0)) for r in now)
                rows.append(
                    {
                        "what": f"{fam} {arm}: {label}",
                        "computed": len(now),
                        "stored": len(recs) - len(now),
                        "worker_s": worker_s,
                    }
                )
    return rows


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


def html(timing: dict[str, Any]) -> str:
    """The same section for report.html, or nothing for a result without timing."""
    from html import escape

    if not timing:
        return ""
    stages = "".join(f"<tr><td>{escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in timing["stages"].items())
    total = timing["worker_s"] or 1.0
    work = "".join(
        f"<tr><td>{escape(r['what'])}</td><td>{r['computed']}</td><td>{r['stored']}</td>"
        f"<td>{r['worker_s']:.1f}</td><td>{100 * r['worker_s'] / total:.0f}%</td></tr>"
        for r in sorted(timing["work"], key=lambda r: -r["worker_s"])
    )
    return (
        "<h2>Where the time went</h2>"
        f"<table id='stages'><thead><tr><th>stage</th><th>wall s</th></tr></thead><tbody>{stages}"
        f"<tr><td>total</td><td>{timing['wall']:.1f}</td></tr></tbody></table>"
        f"<p>Work inside the stages in worker seconds ({timing['workers']} worker process(es)):</p>"
        "<table id='work'><thead><tr><th>what</th><th>computed</th><th>stored</th><th>worker s</th><th>share</th>"
        f"</tr></thead><tbody>{work}</tbody></table>"
    )
