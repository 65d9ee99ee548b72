"""The claims of docs/theory.md (Xing et al., AISTATS 2024, arXiv 2401.15248), checked in every cell of an atlas
(``robinherit.runs.atlas``), and the atlas's outputs: the map, the table of cells and the boundary in words.

Each cell's statistics are the claim modules' own (``reproduce/claims``): the same per-seed differences, the same
paired t interval (:func:`~robinherit.reproduce.stats.paired_stats`), the same side conditions. Two things differ
from ``reproduce``: claims 3 and 4 are read at the cell's reference budget (``eps_rel`` of the world's feature
scale, resolved per world) instead of the absolute ``EPS_REF``, and claim 4 reads the run's own downstream task
only (as quick mode does for row 4c), so a cell needs no runs beyond its pre-training arms. A cell's verdict is
that of its interval alone: pass (above 0), fail (below 0) or undecided (across 0); the side condition is reported
beside it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robinherit.analysis import atlas_map
from robinherit.records import eps_key
from robinherit.reproduce.claims import CLAIMS
from robinherit.reproduce.claims.c4_clean_head import CleanHeadIsEnough
from robinherit.reproduce.spec import EPS_REF, ClaimSpec, Evidence
from robinherit.reproduce.stats import paired_stats
from robinherit.runs.atlas import Atlas, AtlasRuns, Cell, load_atlas, run_atlas
from robinherit.runs.backends import Backend
from robinherit.runs.store import ResultStore

ATLAS_CLAIMS: dict[str, ClaimSpec] = {
    "1": CLAIMS["1"],
    "2": CLAIMS["2"],
    "3": CLAIMS["3"],
    "3c": CLAIMS["3c"],
    "4": CleanHeadIsEnough("4", "supervised", n_tasks=1),
    "4c": CleanHeadIsEnough("4c", "contrastive", n_tasks=1),
}


def verdict(lo: float, hi: float) -> str:
    """pass when the 95% interval lies above 0, fail when below, undecided when it contains 0 (or is undefined)."""
    if lo > 0:
        return "pass"
    if hi < 0:
        return "fail"
    return "undecided"


@dataclass(frozen=True)
class _Settings:
    """What a claim reads of the reproduce settings; claim 4's task count is fixed by :data:`ATLAS_CLAIMS`."""

    seeds: tuple[int, ...]
    quick: bool = True
    overrides: tuple[str, ...] = ()


def at_reference(rec: dict[str, Any], eps: float) -> dict[str, Any]:
    """``rec`` with each head's robust accuracy at ``eps`` also under the key of ``EPS_REF``, where the claims
    read it."""
    out = dict(rec)
    out["downstream"] = copy.deepcopy(rec["downstream"])
    for head in out["downstream"].values():
        if "robust_acc" in head:
            head["robust_acc"][eps_key(EPS_REF)] = head["robust_acc"][eps_key(eps)]
    return out


def reference_eps(rec: dict[str, Any]) -> float:
    """The cell's reference evaluation budget: the largest of its (two-point) evaluation grid."""
    return max(rec["config"]["eval"]["eps_grid"])


def cell_rows(cell: Cell, store: ResultStore, claims: dict[str, ClaimSpec] = ATLAS_CLAIMS) -> list[dict[str, Any]]:
    """One row per claim whose family the cell ran: knobs, effect, interval, p, verdict, side condition."""
    records = {
        fam: {arm: [at_reference(r, reference_eps(r)) for r in recs] for arm, recs in arms.items()}
        for fam, arms in cell.records.items()
    }
    seeds = tuple(c.seed for c in next(iter(cell.configs.values()))["at"])
    ev = Evidence(_Settings(seeds), store, cell.configs, records)
    budget = cell.budget or {}
    rows = []
    for cid, claim in claims.items():
        if claim.family not in records or any(len(v) != len(seeds) for v in records[claim.family].values()):
            continue  # a family not in the spec, or a run that failed: no paired statistic
        stat = claim.statistic(ev)
        side = claim.side_condition(ev, stat)
        effect, (lo, hi), p = paired_stats(stat.differences)
        rows.append(
            {
                "claim": cid,
                "panel": cell.panel,
                "x_knob": cell.knobs[0],
                "x": cell.values[0],
                "y_knob": cell.knobs[1],
                "y": cell.values[1],
                "effect": effect,
                "ci95_low": lo,
                "ci95_high": hi,
                "p_value": p,
                "n_seeds": len(stat.differences),
                "verdict": verdict(lo, hi),
                "side_condition_ok": None if side is None else side.ok,
                "eps_rel": budget.get("pretrain", {}).get("eps_rel"),
                "scale": budget.get("pretrain", {}).get("scale"),
                "eps": budget.get("pretrain", {}).get("eps"),
                "eval_eps": reference_eps(records[claim.family]["at"][0]),
            }
        )
    return rows


@dataclass
class AtlasResult:
    rows: list[dict[str, Any]]
    runs: AtlasRuns
    files: list[Path]
    boundary: list[str]
    seconds: float


def atlas(
    spec: str | Path | Atlas,
    out: str | Path | None = None,
    store: str | Path | None = None,
    *,
    seeds: tuple[int, ...] | None = None,
    workers: int | None = None,
    backend: Backend | str = Backend.local,
    on_progress: Callable[[int, int], None] | None = None,
) -> AtlasResult:
    """Run an atlas (a spec file, a shipped atlas's name, or a loaded :class:`Atlas`) and write its map, table and
    boundary under ``out`` (default ``results/atlas/<name>``); runs are read from and written to ``store``
    (default: the spec's, else ``<out>/runs.db``)."""
    start = time.perf_counter()
    at = spec if isinstance(spec, Atlas) else load_atlas(spec)
    out_dir = Path(out) if out is not None else Path("results/atlas") / at.spec.name
    db_path = Path(store) if store is not None else at.spec.store or out_dir / "runs.db"
    db = ResultStore(db_path)
    runs = run_atlas(at, db, seeds=seeds, backend=backend, workers=workers, on_progress=on_progress)
    rows = [row for cell in runs.cells for row in cell_rows(cell, db)]
    files = atlas_map.write_maps(rows, out_dir, at.spec.name, claim_names(ATLAS_CLAIMS))
    files += atlas_map.write_table(rows, out_dir / "atlas")
    boundary = atlas_map.boundary_sentences(rows, claim_names(ATLAS_CLAIMS))
    seconds = time.perf_counter() - start
    files.append(atlas_map.write_summary(out_dir / "atlas.md", at.spec, rows, boundary, runs, seconds))
    return AtlasResult(rows, runs, files, boundary, seconds)


def claim_names(claims: dict[str, ClaimSpec]) -> dict[str, str]:
    return {cid: f"claim {cid}: {c.name}" for cid, c in claims.items()}
