"""Sweeps: many runs of one base config over a grid and/or random ranges of config paths, times seeds.

A spec (YAML, validated by :class:`SweepSpec`) expands to a list of :class:`ExperimentConfig`. Each run is
keyed by ``cfg.config_hash()`` in the results store, so a sweep skips what is stored and a killed driver
(``kill -9`` included) resumes with nothing lost and nothing run twice. Workers only compute; the driver
alone writes the store, one transaction per finished run.

Backends are a registry (:data:`BACKENDS`): ``local`` is a process pool on this machine, ``ray`` runs the
same function as Ray tasks on a running cluster (``ray start --head``; ``address="auto"``).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

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
from robinherit.errors import ConfigError, RobinheritError
from robinherit.paths import merge_paths
from robinherit.runs.store import ResultStore
from robinherit.seeding import derive_seed


class SweepError(RobinheritError):
    pass


class Backend(str, Enum):
    local = "local"
    ray = "ray"


class Scale(str, Enum):
    linear = "linear"
    log = "log"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Span(_Spec):
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


class RandomRange(_Spec):
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


class SweepSpec(_Spec):
    """What to run: ``base`` config, fixed ``set`` overrides, a ``grid`` (Cartesian product), ``samples`` random
    draws from ``random`` ranges (crossed with the grid), and ``seeds``."""

    name: str = Field("sweep", description="label for progress and figures")
    description: str = ""
    base: Path = Field(..., description="base config YAML, relative to the spec file")
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
        seeds = tuple(range(v)) if isinstance(v, int) else tuple(v)
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be a positive count or a non-empty list of seeds >= 0 (got {v})")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds has duplicates: {list(seeds)}")
        return seeds

    @model_validator(mode="after")
    def _check_axes(self) -> SweepSpec:
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
    """A loaded spec with its base config resolved: ``configs()`` lists the runs, in a fixed order."""

    spec: SweepSpec
    base: ExperimentConfig
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
            extra[path] = value
        if not extra:
            return self
        spec = self.spec.model_copy(update={"set": {**self.spec.set, **extra}})
        try:  # a bad path or value fails here, named, before any point is expanded
            build_config(merge_paths(self.base.model_dump(mode="json"), spec.set))
        except ConfigError as err:
            raise ConfigError(f"--set: {err}") from None
        return replace(self, spec=spec)

    def configs(self) -> list[ExperimentConfig]:
        """Configs of all runs (points x seeds), each validated; duplicates (same hash) kept once."""
        base = self.base.model_dump(mode="json")
        out: dict[str, ExperimentConfig] = {}
        for point in self.points():
            raw = merge_paths(base, {**self.spec.set, **point})
            for seed in self.spec.seeds:
                cfg = _build(raw | {"seed": seed}, point)
                out.setdefault(cfg.config_hash(), cfg)
        return list(out.values())


def _build(raw: dict[str, Any], point: dict[str, Any]) -> ExperimentConfig:
    try:
        return build_config(raw)
    except ConfigError as err:
        where = ", ".join(f"{k}={v}" for k, v in point.items()) or "the base point"
        raise ConfigError(f"sweep point {where}: {err}") from None


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a spec file; the base config path is taken relative to the spec's folder."""
    path = resolve_path(path, "sweeps")
    raw = load_yaml(path, "sweeps")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid sweep spec '{path}': {_fmt(err)}") from None
    base_path = spec.base if spec.base.is_absolute() else path.parent / spec.base
    if not base_path.is_file() and len(spec.base.parts) == 1:
        base_path = spec.base  # a shipped config's name, e.g. `base: digits`
    try:
        base_path = resolve_path(base_path)
    except ConfigError:
        raise ConfigError(
            f"sweep spec '{path}': base config '{spec.base}' not found (looked for '{base_path}'; the path is "
            "relative to the spec file, or the name of a shipped config)"
        ) from None
    base = load_config(base_path)
    return Sweep(spec=spec, base=base, source=path)


def sweep_from_dict(raw: dict[str, Any], base: ExperimentConfig) -> Sweep:
    """A sweep over an in-memory base config (tests, notebooks); ``raw['base']`` is ignored."""
    try:
        spec = SweepSpec.model_validate({"base": "<memory>", **raw})
    except ValidationError as err:
        raise ConfigError(f"invalid sweep spec: {_fmt(err)}") from None
    return Sweep(spec=spec, base=base)


def _fmt(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'; valid keys: {', '.join(SweepSpec.model_fields)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"'{loc}': {msg}" if loc else msg)
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------- execution

Result = tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]  # (record, artifacts), as run_experiment
OnResult = Callable[[ExperimentConfig, Result | None, str | None], None]  # (cfg, result, error message)


GroupResult = list[tuple[Result | None, str | None]]  # per config: (result, error message)
BATCH = 8  # encoders per unit of work: batched pre-training pays off; a killed sweep loses at most their runs


def execute(cfg_jsons: list[dict[str, Any]], plugins: Sequence[str] = ()) -> GroupResult:
    """Run a group of configs in a worker (local process or Ray task), single-threaded so backends agree bit for
    bit, with ``experiment.run_many``: shape-sharing configs pre-trained as one stack, every failure reported
    with its own error (nothing swallowed). ``plugins`` (the driver's) and the ones each config names are imported
    before the configs are read (``build_config``)."""
    import torch

    from robinherit.runs.experiment import run_many

    _own_process(plugins)
    torch.set_num_threads(1)
    try:
        cfgs = [build_config(c) for c in cfg_jsons]
    except ConfigError as err:
        raise ConfigError(
            f"{err} (in a worker process: an entry registered only in the process that started the sweep is not "
            "here; register it in a plugin named by the config's 'plugins', see robinherit.plugins)"
        ) from None
    out: GroupResult = [(None, "not run")] * len(cfgs)

    def on_result(i: int, res: Result | None, err: BaseException | None) -> None:
        out[i] = (res, None if err is None else error_text(err))

    run_many(cfgs, on_result, max_stack=len(cfgs))
    return out


def by_encoder(cfgs: list[ExperimentConfig]) -> list[ExperimentConfig]:
    """``cfgs`` with the runs of one pre-trained encoder (``pretrain_hash``) next to each other, at the place of the
    first of them; otherwise in order. ``groups`` then never splits them, so each encoder is pre-trained once."""
    buckets: dict[str, list[ExperimentConfig]] = {}
    for cfg in cfgs:
        buckets.setdefault(cfg.pretrain_hash(), []).append(cfg)
    return [cfg for bucket in buckets.values() for cfg in bucket]


def groups(cfgs: Iterator[ExperimentConfig], size: int = BATCH) -> Iterator[list[ExperimentConfig]]:
    """Consecutive runs that share a batch key (robinherit.training.stacked.batch_key), or, without one, a pre-trained
    encoder, with at most ``size`` encoders per group: runs of one encoder (equal ``pretrain_hash``, a sweep over
    the head's settings) stay in one group, where ``run_many`` pre-trains it once."""
    from robinherit.training.stacked import batch_key

    buf: list[ExperimentConfig] = []
    encoders: set[str] = set()
    key: str | None = None
    for cfg in cfgs:
        enc = cfg.pretrain_hash()
        k = batch_key(cfg) or f"encoder:{enc}"
        if buf and (k != key or (enc not in encoders and len(encoders) >= size)):
            yield buf
            buf, encoders = [], set()
        buf.append(cfg)
        encoders.add(enc)
        key = k
    if buf:
        yield buf


def _deliver(group: list[ExperimentConfig], results: GroupResult | None, err: str | None, on_result: OnResult) -> None:
    for i, cfg in enumerate(group):
        res, e = results[i] if results is not None else (None, err)
        on_result(cfg, res, e)


def _exit_when_orphaned(parent_pid: int) -> None:
    # A pool worker blocks on its task queue forever if the driver is killed with SIGKILL: leave instead.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def _own_process(plugins: Sequence[str]) -> None:
    """What a worker process, robinherit's own, takes before it reads a config: the allocator setting of the compute
    paths, the installed plugins and ``plugins`` (each once per process). A plugin that failed in the pool's
    initializer fails here, as the error of every run the worker is given, rather than breaking the pool."""
    from robinherit.plugins import load_entry_points, load_plugins
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()
    if _init_error is not None:
        raise _init_error
    load_entry_points()
    load_plugins(plugins)


_init_error: ConfigError | None = None  # a local worker's: its parent's plugins did not import here


def _init_local_worker(parent_pid: int, plugins: Sequence[str] = ()) -> None:
    global _init_error
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    try:
        _own_process(plugins)
    except ConfigError as err:
        _init_error = err


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _new_pool(n: int) -> ProcessPoolExecutor:
    # Spawned, not forked: forking a process that holds torch's thread pools can deadlock. The workers start with
    # the plugins this process has loaded, so entries registered by them are names there too.
    from robinherit.plugins import loaded_plugins

    return ProcessPoolExecutor(
        max_workers=n,
        mp_context=mp.get_context("spawn"),
        initializer=_init_local_worker,
        initargs=(os.getpid(), loaded_plugins()),
    )


_shared: dict[int, ProcessPoolExecutor] | None = None  # pools by size, while a shared_pools() block is open


@contextmanager
def shared_pools() -> Iterator[None]:
    """Inside this block :func:`local_pool` hands out one pool per size and keeps it for the next use, so work that
    comes in stages (a reproduce's pre-training runs, then its derived results) starts its workers once: each new
    pool costs about 2 s on the 2-core machine (spawning the processes, importing torch, shutting them down). A pool
    that a dead worker broke is replaced at its next use. Every pool shuts down when the block ends; nested blocks
    share the outer one's pools."""
    global _shared
    if _shared is not None:
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        pools, _shared = _shared, None
        for ex in pools.values():
            ex.shutdown(wait=True, cancel_futures=True)


def _usable(ex: ProcessPoolExecutor) -> bool:
    """Whether a kept pool still takes work (a pool whose worker died refuses every submit)."""
    try:
        ex.submit(int).result()
    except BrokenProcessPool:
        return False
    return True


@contextmanager
def local_pool(n: int) -> Iterator[ProcessPoolExecutor]:
    """The process pool every local parallel job uses (sweeps, and reproduce's derived results): ``n`` spawned,
    single-threaded workers that leave when the driver dies. A new pool, shut down when the block ends, or inside
    :func:`shared_pools` the kept pool of ``n`` workers."""
    if _shared is None:
        with _new_pool(n) as ex:
            yield ex
        return
    ex = _shared.get(n)
    if ex is None or not _usable(ex):
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        ex = _shared[n] = _new_pool(n)
    yield ex


def run_local(
    cfgs: Iterator[ExperimentConfig],
    on_result: OnResult,
    *,
    workers: int | None = None,
    address: str | None = None,
    batch: int = BATCH,
    execute_fn: Callable[[list[dict[str, Any]]], GroupResult] | None = None,
) -> None:
    """Process pool on this machine. Spawned (not forked) workers: forking a process that holds torch's thread
    pools can deadlock. At most ``workers`` runs are in flight, so each is checked against the store just
    before it starts (another sweep on the same store may have finished it meanwhile)."""
    if address is not None:
        raise SweepError("--address is for the ray backend; the local backend runs on this machine")
    n = workers or os.cpu_count() or 1
    units = groups(cfgs, batch)
    while True:
        suspects, unstarted = _pool_until_broken(units, n, on_result, fn=execute_fn or execute)
        # A worker died (killed by the OS, say for memory): every group in flight failed with it. Each of their
        # runs goes again alone, one at a time in its own process, so only the run that kills its worker is
        # reported as killed and the others are computed and stored.
        for cfg in suspects:
            _pool_until_broken(iter([[cfg]]), 1, on_result, alone=True, fn=execute_fn or execute)
        if not suspects and not unstarted:
            return
        # A group the broken pool refused never started: it opens the next pool, in its place in the order.
        units = itertools.chain(unstarted, units)


KILLED = (
    "the worker process running it died (killed by the operating system, e.g. out of memory, or by a signal); "
    "the other runs went on. Lower its sizes (batch, width, n_test) or give the machine more memory, then rerun. "
    "If every run died at once, the workers may have failed to start: a Python script that starts sweeps or "
    "reproduce from its top level must guard that code with `if __name__ == '__main__':` (spawned workers "
    "import the script again)"
)


def _pool_until_broken(
    units: Iterator[list[ExperimentConfig]],
    n: int,
    on_result: OnResult,
    alone: bool = False,
    fn: Callable[[list[dict[str, Any]]], GroupResult] = execute,
) -> tuple[list[ExperimentConfig], list[list[ExperimentConfig]]]:
    """Run ``units`` on a pool of ``n`` spawned workers until they are done or a worker dies. Returns the configs of
    the groups in flight when it died (to run again alone) and the groups the broken pool refused before any
    worker started them (to run in a new pool); both empty if all went well."""
    suspects: list[ExperimentConfig] = []
    unstarted: list[list[ExperimentConfig]] = []
    with local_pool(n) as ex:
        running: dict[Future, list[ExperimentConfig]] = {}

        def fill() -> None:
            while len(running) < n and not suspects and not unstarted:
                group = next(units, None)
                if group is None:
                    return
                try:
                    running[ex.submit(fn, [c.model_dump(mode="json") for c in group])] = group
                except BrokenProcessPool:
                    # A worker died after `wait` returned and before this submit: the pool refuses new work.
                    # The futures in flight fail with BrokenProcessPool too and are collected below.
                    unstarted.append(group)

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                group = running.pop(fut)
                err = fut.exception()
                if isinstance(err, BrokenProcessPool):
                    if alone:
                        _deliver(group, None, KILLED, on_result)
                    else:
                        suspects.extend(group)
                    continue
                _deliver(group, None if err else fut.result(), error_text(err) if err else None, on_result)
            fill()
    return suspects, unstarted


def run_ray(
    cfgs: Iterator[ExperimentConfig],
    on_result: OnResult,
    *,
    workers: int | None = None,
    address: str | None = None,
    batch: int = BATCH,
) -> None:
    """Ray tasks (one CPU each) on the cluster at ``address`` (``auto``: the one ``ray start --head`` started;
    None: a local instance for this process). Tasks return (record, artifacts); the driver stores them."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            "the ray backend needs Ray, which is not installed; pip install 'robinherit[ray]' (or 'ray>=2.9'), "
            "or use --backend local"
        ) from None
    started_here = False
    if not ray.is_initialized():
        try:
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except ConnectionError as err:
            raise SweepError(
                f"cannot reach a Ray cluster at --address {address} ({err}); start one with `ray start --head` "
                "or leave --address out to start a local Ray instance"
            ) from None
        started_here = True
    from robinherit.plugins import loaded_plugins

    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # Twice the CPUs in flight keeps the cluster busy while results travel back to the driver.
        limit = workers or 2 * cpus
        running: dict[Any, list[ExperimentConfig]] = {}
        units = groups(cfgs, batch)

        def fill() -> None:
            while len(running) < limit:
                group = next(units, None)
                if group is None:
                    return
                running[remote.remote([c.model_dump(mode="json") for c in group], loaded_plugins())] = group

        fill()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                group = running.pop(ref)
                try:
                    result, err = ray.get(ref), None
                except Exception as exc:  # RayTaskError wraps the worker's exception
                    result, err = None, error_text(getattr(exc, "cause", None) or exc)
                _deliver(group, result, err, on_result)
            fill()
    finally:
        if started_here:
            ray.shutdown()


# backend -> runner(cfgs, on_result, *, workers, address, batch)
BACKENDS: dict[Backend, Callable[..., None]] = {Backend.local: run_local, Backend.ray: run_ray}


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
    stored = store.run_ids()
    todo = by_encoder([c for c in cfgs if c.config_hash() not in stored])
    report = SweepReport(total=len(cfgs), skipped=len(cfgs) - len(todo))
    if on_progress:
        on_progress(report)

    def pending() -> Iterator[ExperimentConfig]:
        for cfg in todo:
            if store.has(cfg.config_hash()):  # finished by a concurrent sweep since we looked
                report.taken += 1
                if on_progress:
                    on_progress(report)
                continue
            yield cfg

    def on_result(cfg: ExperimentConfig, result: Result | None, error: str | None) -> None:
        if result is None:
            report.failed.append((cfg.config_hash(), error or "unknown error"))
        else:
            record, artifacts = result
            store.put(record, artifacts)
            report.ran += 1
        if on_progress:
            on_progress(report)

    if todo:
        if backend == Backend.local:
            workers = workers or os.cpu_count() or 1  # run_local's default, resolved here for spread
        batch = spread(todo, batch, workers)
        BACKENDS[backend](pending(), on_result, workers=workers, address=address, batch=batch)
    return report


def spread(todo: list[ExperimentConfig], batch: int, workers: int | None) -> int:
    """Encoders per group so that ``workers`` processes all get work: at most ``batch``, and no more than an even
    share of the sweep's encoders. Groups count encoders, so without this cap a sweep over head settings (a few
    encoders, many runs each) can fit in one group and leave every other worker idle. ``workers`` None (a Ray
    cluster of unknown size): ``batch`` as given."""
    if not workers or workers <= 1:
        return batch
    encoders = len({c.pretrain_hash() for c in todo})
    return max(1, min(batch, math.ceil(encoders / workers)))


def dump_spec(spec: SweepSpec) -> str:
    """The spec as YAML (for docs and logs)."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def records_of(source: str | Path, store: str | Path | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Records to plot or export: a store file gives all its runs; a sweep spec (``.yaml``) gives the runs of
    that sweep found in ``store`` (default: the spec's ``store``). Returns ``(records, store path)``."""
    source = Path(source)
    if source.suffix.lower() in {".yaml", ".yml"}:
        sweep = load_sweep(source)
        db_path = Path(store) if store is not None else sweep.spec.store
        if db_path is None:
            raise SweepError(
                f"sweep spec '{source}' names no store; pass --store (the file `robinherit sweep` wrote to)"
            )
        db = _open_existing(db_path)
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
