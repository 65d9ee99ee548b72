"""An atlas: where the claims of docs/theory.md (Xing et al., AISTATS 2024, arXiv 2401.15248) hold across the
synthetic world's knobs. This module reads an atlas spec, expands it to runs and runs them; the claims' statistics
per cell come from ``robinherit.reproduce.atlas`` and the map from ``robinherit.analysis.atlas_map``.

A spec (YAML, validated by :class:`AtlasSpec`) is a base (the shipped supervised and contrastive configs, with the
spec's ``set`` on both and ``family_set`` on one) and *panels*, each a grid over two knobs with every other knob at
the base: the map is small multiples, one panel per pair of knobs. A cell runs both pre-training arms (clean, eps 0,
and adversarial at ``eps_rel``) of each family over the seeds. Budgets are fractions of the world's feature scale
(``robinherit.runs.relative_budget``), so a cell's budget means the same in every world. Two knobs are not config
paths: ``eps_rel`` (the budget of the adversarial arm, the adversarial head and the claims' reference evaluation)
and ``data.n_features/d`` (D/d: an overcomplete dictionary above 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from robinherit.config import ExperimentConfig, build_config, load_config, load_yaml, resolve_path
from robinherit.errors import ConfigError
from robinherit.paths import merge_paths
from robinherit.runs.backends import Backend
from robinherit.runs.relative_budget import resolve_budget
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.spec import SpecModel, seed_tuple, validate_spec
from robinherit.runs.store import ResultStore
from robinherit.runs.sweep import run_sweep

FAMILIES = ("supervised", "contrastive")
ARMS = ("at", "clean")
RATIO = "data.n_features/d"  # the dictionary's overcompleteness D/d
BUDGET = "eps_rel"  # the adversarial budget as a fraction of the feature scale


class Panel(SpecModel):
    """A grid over two knobs: ``x`` and ``y`` each map one knob (a config path, ``eps_rel`` or
    ``data.n_features/d``) to its values."""

    x: dict[str, tuple[Any, ...]]
    y: dict[str, tuple[Any, ...]]
    set: dict[str, Any] = Field(default_factory=dict, description="this panel's own base: config path -> value")

    @field_validator("x", "y")
    @classmethod
    def _one_knob(cls, v: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        if len(v) != 1 or not next(iter(v.values())):
            raise ValueError(f"an axis is one knob with at least one value, e.g. {{data.k: [1, 3, 5]}} (got {v})")
        if "seed" in v:
            raise ValueError("seeds are the spec's 'seeds', not a knob")
        return v

    @property
    def knobs(self) -> tuple[str, str]:
        return next(iter(self.x)), next(iter(self.y))

    def cells(self) -> list[tuple[Any, Any]]:
        return list(itertools.product(*self.x.values(), *self.y.values()))


class AtlasSpec(SpecModel):
    name: str = "atlas"
    description: str = ""
    families: tuple[str, ...] = Field(FAMILIES, description="shipped base configs whose claims the cells check")
    set: dict[str, Any] = Field(default_factory=dict, description="config path -> value, on every run")
    family_set: dict[str, dict[str, Any]] = Field(default_factory=dict, description="family -> its own overrides")
    eps_rel: float = Field(0.25, gt=0.0, description="budget where no panel sets it, as a fraction of the scale")
    panels: tuple[Panel, ...] = Field(..., min_length=1)
    seeds: tuple[int, ...] | int = 3
    store: Path | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...] | int) -> tuple[int, ...]:
        return seed_tuple(v)

    @field_validator("families")
    @classmethod
    def _families(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(v) - set(FAMILIES)
        if unknown:
            raise ValueError(f"families: {sorted(unknown)} unknown; the claims are stated for {list(FAMILIES)}")
        return v


@dataclass
class Cell:
    """One point of one panel: its knob values, and per family and arm its runs' configs and records by seed."""

    panel: int
    knobs: tuple[str, str]
    values: tuple[Any, Any]
    configs: dict[str, dict[str, list[ExperimentConfig]]] = field(default_factory=dict)
    records: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    budget: dict[str, Any] | None = None  # the resolved budgets of the cell's adversarial arm (first seed)


@dataclass
class Atlas:
    spec: AtlasSpec
    bases: dict[str, ExperimentConfig]
    source: Path | None = None

    def cells(self, seeds: tuple[int, ...] | None = None) -> list[Cell]:
        """Every panel's cells with their configs (budgets resolved), in the spec's order."""
        out = []
        for p, panel in enumerate(self.spec.panels):
            for xv, yv in panel.cells():
                cell = Cell(p, panel.knobs, (xv, yv))
                point = dict(zip(panel.knobs, (xv, yv), strict=True))
                for fam in self.spec.families:
                    cell.configs[fam] = {arm: self._configs(fam, arm, panel.set, point, seeds) for arm in ARMS}
                out.append(cell)
        return out

    def _configs(
        self, family: str, arm: str, fixed: dict[str, Any], point: dict[str, Any], seeds: tuple[int, ...] | None
    ) -> list[ExperimentConfig]:
        base = self.bases[family].model_dump(mode="json")
        knobs = {**fixed, **point}
        eps_rel = knobs.pop(BUDGET, self.spec.eps_rel)
        if RATIO in knobs:
            ratio = float(knobs.pop(RATIO))
            d = int(knobs.get("data.d", self.spec.set.get("data.d", base["data"]["d"])))
            over = ratio > 1
            knobs |= {"data.n_features": round(ratio * d) if over else None}
            knobs |= {"data.dictionary": "overcomplete"} if over else {}
        budget = {"downstream.eps_rel": eps_rel, "eval.eps_rel_grid": [0.0, eps_rel]}
        budget |= {"pretrain.eps_rel": eps_rel} if arm == "at" else {"pretrain.eps": 0.0, "pretrain.eps_rel": None}
        paths = {**self.spec.set, **self.spec.family_set.get(family, {}), **knobs, **budget}
        raw = merge_paths(base, paths)
        where = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            return [build_config(raw | {"seed": s}) for s in (seeds or self.spec.seeds)]
        except ConfigError as err:
            raise ConfigError(f"atlas cell {where} ({family}): {err}") from None


def load_atlas(path: str | Path) -> Atlas:
    """Read and validate an atlas spec: a file, or a shipped atlas's name (``atlas_small``)."""
    path = resolve_path(path, "atlases")
    spec = validate_spec(AtlasSpec, load_yaml(path, "atlases"), "atlas", path, {"panels": Panel})
    return Atlas(spec, {fam: load_config(fam) for fam in spec.families}, path)


def atlas_from_dict(raw: dict[str, Any]) -> Atlas:
    """An atlas from an in-memory spec (tests, notebooks)."""
    spec = validate_spec(AtlasSpec, raw, "atlas", nested={"panels": Panel})
    return Atlas(spec, {fam: load_config(fam) for fam in spec.families})


@dataclass
class AtlasRuns:
    cells: list[Cell]
    total: int  # distinct runs
    ran: int  # computed by this call (the rest came from the store)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _resolve(cells: list[Cell]) -> tuple[list[ExperimentConfig], dict[str, dict[str, Any] | None]]:
    """Resolve every cell's budgets in place; the distinct runs, and each run's resolved budget by its id."""
    unique: dict[str, ExperimentConfig] = {}
    budgets: dict[str, dict[str, Any] | None] = {}
    for cell in cells:
        for arms in cell.configs.values():
            for cfgs in arms.values():
                for i, cfg in enumerate(cfgs):
                    cfgs[i], budget = resolve_budget(cfg)
                    unique.setdefault(cfgs[i].config_hash(), cfgs[i])
                    budgets[cfgs[i].config_hash()] = budget
    return list(unique.values()), budgets


def _in_process(
    todo: list[ExperimentConfig], store: ResultStore, on_progress: Callable[[int, int], None] | None
) -> int:
    """Run ``todo`` here (``run_many_or_load``); how many were computed rather than read from the store."""
    counts = {"done": 0, "ran": 0}

    def on_record(rec: dict[str, Any], cached: bool) -> None:
        counts["done"] += 1
        counts["ran"] += not cached
        if on_progress:
            on_progress(counts["done"], len(todo))

    run_many_or_load(todo, store, on_record=on_record)
    return counts["ran"]


def run_atlas(
    atlas: Atlas,
    store: ResultStore,
    *,
    seeds: tuple[int, ...] | None = None,
    backend: Backend | str = Backend.local,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AtlasRuns:
    """Run every cell's runs not yet in ``store`` and fill each cell's records (each with its ``budget``). One
    worker runs in this process; more, or Ray, go through the sweep backends. Either way stored runs are not run
    again, and encoders that share shapes pre-train as one stack."""
    cells = atlas.cells(seeds)
    todo, budgets = _resolve(cells)
    failed: list[tuple[str, str]] = []
    if Backend(backend) == Backend.local and workers == 1:
        ran = _in_process(todo, store, on_progress)
    else:

        def progress(r: Any) -> None:
            if on_progress:
                on_progress(r.skipped + r.ran + r.taken + len(r.failed), r.total)

        rep = run_sweep(todo, store, backend=backend, workers=workers, on_progress=progress)
        ran, failed = rep.ran, rep.failed
    for cell in cells:
        for fam, arms in cell.configs.items():
            cell.records[fam] = {}
            for arm, cfgs in arms.items():
                recs = [(store.get(c.config_hash()), budgets[c.config_hash()]) for c in cfgs]
                cell.records[fam][arm] = [{**r, "budget": b} for r, b in recs if r is not None]
            cell.budget = cell.budget or budgets[arms["at"][0].config_hash()]
    return AtlasRuns(cells, len(todo), ran, failed)
