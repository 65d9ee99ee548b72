"""A sweep's spec: many runs of one base config over a grid and/or random ranges of config paths, times seeds; or,
with ``audit:`` instead of ``base:``, many audits of one encoder over the audit's settings.

A spec (YAML, validated by :class:`SweepSpec`) expands to a list of :class:`ExperimentConfig` in a fixed order
(:meth:`Sweep.configs`); each run's identity is ``cfg.config_hash()``, so expanding the same spec twice gives the
same runs, and a resumed sweep finds in the store what it already ran.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robinherit.config import (
    ExperimentConfig,
    build_config,
    load_config,
    load_yaml,
    parse_override,
    resolve_path,
)
from robinherit.errors import ConfigError
from robinherit.paths import merge_paths
from robinherit.runs.relative_budget import resolved
from robinherit.seeding import derive_seed


class Scale(str, Enum):
    linear = "linear"
    log = "log"


class SpecModel(BaseModel):
    """A section of a spec file: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_SpecT = TypeVar("_SpecT", bound=BaseModel)


def seed_tuple(v: tuple[int, ...] | int) -> tuple[int, ...]:
    """A spec's ``seeds``: a count n (seeds 0..n-1) or a list of distinct seeds >= 0 (sweeps and atlases)."""
    seeds = tuple(range(v)) if isinstance(v, int) else tuple(v)
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be a positive count or a non-empty list of seeds >= 0 (got {v})")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has duplicates: {list(seeds)}")
    return seeds


def validate_spec(
    model: type[_SpecT], raw: Any, what: str, path: Path | None = None, nested: dict[str, type[BaseModel]] | None = None
) -> _SpecT:
    """``raw`` validated as ``model`` (a sweep or atlas spec), or one ConfigError naming the file and every problem:
    an unknown key with the valid keys beside it (``nested`` maps a key to the model of the section under it)."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        where = f" '{path}'" if path is not None else ""
        raise ConfigError(f"invalid {what} spec{where}: {_fmt(err, model, nested or {})}") from None


class Span(SpecModel):
    """``num`` evenly spaced values from ``low`` to ``high`` (both included), on a linear or log scale."""

    low: float
    high: float
    num: int = Field(ge=1)
    scale: Scale = Scale.linear
    integer: bool = Field(False, description="round to integers (sizes such as model.width)")

    @model_validator(mode="after")
    def _check(self) -> Span:
        if self.scale == Scale.log and (self.low <= 0 or self.high <= 0):
            raise ValueError(f"a log-scale span needs low, high > 0 (got {self.low}, {self.high})")
        return self

    def values(self) -> list[Any]:
        if self.scale == Scale.log:
            vals = np.geomspace(self.low, self.high, self.num)
        else:
            vals = np.linspace(self.low, self.high, self.num)
        return _tidy(vals, self.integer)


class RandomRange(SpecModel):
    """One random draw per sample: uniform on [low, high] (log-uniform with ``scale: log``) or from ``choices``."""

    low: float | None = None
    high: float | None = None
    scale: Scale = Scale.linear
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> RandomRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a random range needs low and high (or choices)")
        if self.high < self.low:
            raise ValueError(f"high={self.high} < low={self.low}")
        if self.scale == Scale.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0 (got {self.low})")
        return self

    def draw(self, rng: np.random.Generator) -> Any:
        if self.choices is not None:
            return self.choices[int(rng.integers(len(self.choices)))]
        assert self.low is not None and self.high is not None  # checked above
        if self.scale == Scale.log:
            v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            v = rng.uniform(self.low, self.high)
        return _tidy(np.array([v]), self.integer)[0]


def _tidy(vals: np.ndarray, integer: bool) -> list[Any]:
    # Rounded so that values print and group cleanly; 6 significant digits is far below any effect studied here.
    if integer:
        return [round(float(v)) for v in vals]
    return [float(f"{float(v):.6g}") for v in vals]


class AuditTarget(SpecModel):
    """The encoder an audit sweep audits, as ``robinherit audit`` takes it; paths relative to the spec file (or,
    where nothing is there, to the working directory)."""

    encoder: str = Field(
        ..., min_length=1, description="file.py:callable, package.module:callable, an encoder name or a run id"
    )
    weights: Path | None = Field(None, description="a state dict for the encoder (torch.save)")
    data: str | None = Field(None, description="config whose data, downstream and eval settings the audit takes")


# What an audit reads of its config: the encoder is given, so pre-training and model settings mean nothing to it.
AUDIT_SECTIONS = ("data", "downstream", "eval")
AUDIT_FIELDS = ("seed", "device")


def audit_path_problem(path: str, where: str) -> str | None:
    """The paragraph that refuses ``path`` (of the spec's ``where``) in an audit sweep, or None when an audit
    reads it."""
    if path in AUDIT_FIELDS or (path.split(".")[0] in AUDIT_SECTIONS and "." in path):
        return None
    return (
        f"{where} path '{path}' is no setting of an audit: an audit reads only the data, downstream and eval sections, "
        "seed and device of its config (its encoder is given, not pre-trained); vary data.*, downstream.* or eval.* "
        "paths (or device), or give `base:` instead of `audit:` to sweep runs that pre-train"
    )


class SweepSpec(SpecModel):
    """What to run: a ``base`` config (or an encoder to ``audit``), fixed ``set`` overrides, a ``grid`` (Cartesian
    product), ``samples`` random draws from ``random`` ranges (crossed with the grid), and ``seeds``."""

    name: str = Field("sweep", description="label for progress and figures")
    description: str = ""
    base: Path | None = Field(None, description="base config YAML, relative to the spec file")
    audit: AuditTarget | None = Field(None, description="an encoder to audit at every point, instead of a base")
    set: dict[str, Any] = Field(default_factory=dict, description="fixed overrides: config path -> value")
    grid: dict[str, tuple[Any, ...] | Span] = Field(default_factory=dict, description="config path -> values")
    random: dict[str, RandomRange] = Field(default_factory=dict, description="config path -> random range")
    samples: int = Field(0, ge=0, description="random draws (each crossed with every grid point)")
    random_seed: int = Field(0, ge=0, description="seed of the random draws (fixed, so a resumed sweep is the same)")
    seeds: tuple[int, ...] | int = Field((0,), description="seeds of every point: a list, or a count n for 0..n-1")
    store: Path | None = Field(None, description="results store, relative to the working directory")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...] | int) -> tuple[int, ...]:
        return seed_tuple(v)

    @model_validator(mode="after")
    def _check_axes(self) -> SweepSpec:
        if (self.base is None) == (self.audit is None):
            raise ValueError(
                "give either `base:` (a config to run at every point) or `audit:` (an encoder to audit), not "
                f"{'both' if self.base is not None else 'neither'}"
            )
        if self.audit is not None:
            for where, paths in (("set", self.set), ("grid", self.grid), ("random", self.random)):
                if problem := next(filter(None, (audit_path_problem(p, where) for p in paths)), None):
                    raise ValueError(problem)
        for where in (self.set, self.grid, self.random):
            if "seed" in where:
                raise ValueError("'seed' is swept with the 'seeds' key, not in set/grid/random")
        both = (set(self.set) | set(self.grid)) & set(self.random) | set(self.set) & set(self.grid)
        if both:
            raise ValueError(f"config paths given twice (in two of set/grid/random): {sorted(both)}")
        for path, values in self.grid.items():
            if isinstance(values, tuple) and not values:
                raise ValueError(f"grid '{path}' has no values")
        if self.random and self.samples == 0:
            raise ValueError("'random' ranges are given but samples = 0; set samples to the number of draws")
        return self

    def grid_values(self) -> dict[str, list[Any]]:
        return {p: v.values() if isinstance(v, Span) else list(v) for p, v in self.grid.items()}


@dataclass(frozen=True)
class Sweep:
    """A loaded spec with its base config resolved: ``configs()`` lists the runs, in a fixed order. An audit sweep's
    base is its ``audit.data`` config; None where the encoder is a stored run whose own config gives the settings
    (``robinherit.runs.audit_target.audit_points`` resolves it from the store)."""

    spec: SweepSpec
    base: ExperimentConfig | None
    source: Path | None = None

    def points(self) -> list[dict[str, Any]]:
        """Every grid x random point as ``{config path: value}`` (seed not included)."""
        grid = self.spec.grid_values()
        grid_points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
        if not self.spec.random:
            return grid_points
        rng = np.random.default_rng(derive_seed(self.spec.random_seed, "sweep-random"))
        draws = [{p: r.draw(rng) for p, r in self.spec.random.items()} for _ in range(self.spec.samples)]
        return [{**g, **d} for g in grid_points for d in draws]

    def with_overrides(self, items: Sequence[str]) -> Sweep:
        """This sweep with ``path=value`` overrides (``--set``, values parsed as YAML) added to the spec's fixed
        ``set`` for every run; an override wins over the spec's own ``set`` of that path. A path the spec sweeps
        (``grid`` or ``random``) is refused: the override would make every point the same run."""
        extra: dict[str, Any] = {}
        for item in items:
            path, value = parse_override(item)
            if path in self.spec.grid or path in self.spec.random:
                where = "grid" if path in self.spec.grid else "random"
                raise ConfigError(
                    f"--set {path}: the sweep's {where} varies this path, so one value for every run would collapse "
                    f"its points; change the spec's {where} instead, or leave --set {path} out"
                )
            if path == "seed":
                raise ConfigError("--set seed: a sweep's seeds are its spec's 'seeds' key; edit that instead")
            if self.spec.audit is not None and (problem := audit_path_problem(path, "--set")):
                raise ConfigError(problem)
            extra[path] = value
        if not extra:
            return self
        spec = self.spec.model_copy(update={"set": {**self.spec.set, **extra}})
        if self.base is None:  # a stored run's settings: checked where they are read, before anything runs
            return replace(self, spec=spec)
        try:  # a bad path or value fails here, named, before any point is expanded
            build_config(merge_paths(self.base.model_dump(mode="json"), spec.set))
        except ConfigError as err:
            raise ConfigError(f"--set: {err}") from None
        return replace(self, spec=spec)

    def configs(self) -> list[ExperimentConfig]:
        """Configs of all runs (points x seeds), each validated; duplicates (same hash) kept once. An audit sweep's
        configs are built as ``robinherit audit`` builds its own (no budget resolution), so both share ids."""
        if self.base is None:
            raise ConfigError(
                f"sweep '{self.spec.name}' audits a stored run with that run's settings; its points are known only "
                "with the store (robinherit.runs.audit_target.audit_points), or give the spec's audit a `data:` config"
            )
        base = self.base.model_dump(mode="json")
        out: dict[str, ExperimentConfig] = {}
        for point in self.points():
            raw = merge_paths(base, {**self.spec.set, **point})
            for seed in self.spec.seeds:
                cfg = _build(raw | {"seed": seed}, point)
                if self.spec.audit is None:
                    cfg = resolved(cfg)  # a fractional budget: its absolute run
                out.setdefault(cfg.config_hash(), cfg)
        return list(out.values())


def _build(raw: dict[str, Any], point: dict[str, Any]) -> ExperimentConfig:
    try:
        return build_config(raw)
    except ConfigError as err:
        where = ", ".join(f"{k}={v}" for k, v in point.items()) or "the base point"
        raise ConfigError(f"sweep point {where}: {err}") from None


_NESTED: dict[str, type[BaseModel]] = {"audit": AuditTarget, "random": RandomRange}


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a spec file; the base config path (an audit's data config) is taken relative to the spec's
    folder."""
    path = resolve_path(path, "sweeps")
    spec = validate_spec(SweepSpec, load_yaml(path, "sweeps"), "sweep", path, _NESTED)
    if spec.audit is not None:
        data = spec.audit.data
        base = None if data is None else _config_near(path, Path(data), "audit data")
        return Sweep(spec=spec, base=base, source=path)
    assert spec.base is not None  # the spec's validator asks for one of base and audit
    return Sweep(spec=spec, base=_config_near(path, spec.base, "base"), source=path)


def _config_near(spec_path: Path, config: Path, what: str) -> ExperimentConfig:
    """A config named by a spec: a file relative to the spec's folder, or a shipped config's name."""
    found = config if config.is_absolute() else spec_path.parent / config
    if not found.is_file() and len(config.parts) == 1:
        found = config  # a shipped config's name, e.g. `base: digits`
    try:
        found = resolve_path(found)
    except ConfigError:
        raise ConfigError(
            f"sweep spec '{spec_path}': {what} config '{config}' not found (looked for '{found}'; the path is "
            "relative to the spec file, or the name of a shipped config)"
        ) from None
    return load_config(found)


def sweep_from_dict(raw: dict[str, Any], base: ExperimentConfig | None) -> Sweep:
    """A sweep over an in-memory base config (tests, notebooks); ``raw['base']`` (an audit's ``data``) is ignored:
    ``base`` is the config."""
    raw = raw if "audit" in raw else {"base": "<memory>", **raw}
    spec = validate_spec(SweepSpec, raw, "sweep", nested=_NESTED)
    return Sweep(spec=spec, base=base)


def _fmt(err: ValidationError, model: type[BaseModel], nested: dict[str, type[BaseModel]]) -> str:
    parts = []
    errors = err.errors()
    for e in errors:
        loc = ".".join(str(p) for p in e["loc"])
        inner = [o["loc"] for o in errors if len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"]]
        if e["type"] == "too_short" and inner:
            continue  # a list left short only because its entries failed: the entries' own problems say why
        if e["type"] == "extra_forbidden":
            # the section the key sits in: the spec itself, or the one section (or every entry of a list or map of
            # sections) that ``nested`` names under its first key
            section = model if len(e["loc"]) == 1 else nested.get(str(e["loc"][0]))
            valid = f"; valid keys: {', '.join(section.model_fields)}" if section is not None else ""
            parts.append(f"unknown key '{loc}'{valid}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"'{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


def dump_spec(spec: SweepSpec) -> str:
    """The spec as YAML (for docs and logs)."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
