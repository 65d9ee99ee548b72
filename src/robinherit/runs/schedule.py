"""The one scheduler of many runs: which runs share a pre-trained encoder, which encoders pre-train as one stack,
and which runs travel together as one unit of a sweep's work.

Three groupings, one rule each, all from here:

- shared encoders: runs with equal ``ExperimentConfig.pretrain_hash`` differ only after pre-training (the head's
  training, the evaluation), so the first of them is pre-trained and every one finishes on that frozen encoder;
- stacks: encoders with equal ``robinherit.training.stacked.batch_key`` pre-train as one batched computation
  (:func:`group_configs`), every other encoder alone;
- work units: a sweep hands its workers consecutive runs of one batch key (or one encoder) with at most a batch of
  encoders each (:func:`work_units`), ordered so that no unit splits an encoder's runs (:func:`by_encoder`).

None of this changes a number: pre-training never reads the downstream or evaluation settings, heads start from
zero and a stack computes what its models compute alone, so every record is the one its run gives by itself.
``run_many`` runs a list of configs on this schedule; ``run_many_or_load`` adds the results store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robinherit.config import ExperimentConfig
from robinherit.data.sources import DataSource
from robinherit.errors import NonFiniteLossError
from robinherit.runs import experiment
from robinherit.runs.budget import check_fits
from robinherit.runs.experiment import Progress, Result
from robinherit.runs.relative_budget import resolved
from robinherit.runs.store import ResultStore
from robinherit.training.allocator import keep_freed_memory
from robinherit.training.optim import PretrainLog
from robinherit.training.stacked import CPU_MAX_STACK, batch_key

BATCH = 8  # encoders per unit of work: batched pre-training pays off; a killed sweep loses at most their runs


# --- grouping ------------------------------------------------------------------------------------------------


def shared_encoders(cfgs: Sequence[ExperimentConfig]) -> dict[int, list[int]]:
    """Indices of the runs that share one pre-trained encoder (equal ``pretrain_hash``), keyed by the first of
    them, which stands for all in pre-training; in order of first appearance."""
    members: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        members.setdefault(cfg.pretrain_hash(), []).append(i)
    return {idx[0]: idx for idx in members.values()}


def group_configs(cfgs: Sequence[ExperimentConfig], max_size: int = 32) -> list[list[int]]:
    """Indices of ``cfgs`` grouped into stacks (equal ``batch_key``) of at most ``max_size`` (``CPU_MAX_STACK`` on
    the CPU, where smaller; order kept); configs without a batched path alone."""
    stacks: dict[str, list[list[int]]] = {}
    out: list[list[int]] = []
    for i, cfg in enumerate(cfgs):
        key = batch_key(cfg)
        if key is None:
            out.append([i])
            continue
        limit = max_size
        if torch.device(cfg.device).type == "cpu":
            limit = min(limit, CPU_MAX_STACK.get(cfg.pretrain.method, limit))
        open_stacks = stacks.setdefault(key, [])
        if not open_stacks or len(open_stacks[-1]) >= limit:
            open_stacks.append([])
            out.append(open_stacks[-1])
        open_stacks[-1].append(i)
    return out


def by_encoder(cfgs: list[ExperimentConfig]) -> list[ExperimentConfig]:
    """``cfgs`` with the runs of one pre-trained encoder (``pretrain_hash``) next to each other, at the place of the
    first of them; otherwise in order. ``work_units`` then never splits them, so each encoder is pre-trained once."""
    return [cfgs[j] for idx in shared_encoders(cfgs).values() for j in idx]


def work_units(cfgs: Iterable[ExperimentConfig], size: int = BATCH) -> Iterator[list[ExperimentConfig]]:
    """Consecutive runs that share a batch key or, without one, a pre-trained encoder, with at most ``size``
    encoders per unit: runs of one encoder (a sweep over the head's settings) stay in one unit, where ``run_many``
    pre-trains it once."""
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


def spread(todo: list[ExperimentConfig], batch: int, workers: int | None) -> int:
    """Encoders per work unit so that ``workers`` processes all get work: at most ``batch``, and no more than an even
    share of the sweep's encoders. Units count encoders, so without this cap a sweep over head settings (a few
    encoders, many runs each) can fit in one unit and leave every other worker idle. ``workers`` None (a Ray
    cluster of unknown size): ``batch`` as given."""
    if not workers or workers <= 1:
        return batch
    encoders = len({c.pretrain_hash() for c in todo})
    return max(1, min(batch, math.ceil(encoders / workers)))


# --- running many configs --------------------------------------------------------------------------------------

OnResult = Callable[[int, Result | None, BaseException | None], None]  # (index, result, error)


@dataclass
class _Schedule:
    """The runs of one ``run_many`` call, with ``shared`` (representative -> runs sharing its encoder)."""

    cfgs: Sequence[ExperimentConfig]
    on_result: OnResult
    progress: Progress | None
    shared: dict[int, list[int]]

    def one(self, i: int, fn: Callable[[], Result]) -> None:
        try:
            res = fn()
        except Exception as err:  # handed to the caller with the run's index
            self.on_result(i, None, err)
            return
        self.on_result(i, res, None)

    def fail_all(self, r: int, err: BaseException) -> None:
        for j in self.shared[r]:
            self.on_result(j, None, err)

    def finish_all(self, r: int, source: DataSource, model: nn.Module, log: PretrainLog, seconds: float) -> None:
        """Every run sharing representative ``r``'s encoder, finished on it."""
        cfgs, idx = self.cfgs, self.shared[r]
        share = seconds / len(idx)  # each run's share of the pre-training, as for a stack
        self.one(r, lambda: experiment.finish_experiment(cfgs[r], source, model, log, share))
        for j in idx[1:]:
            # Its own splits of the data set as read; a split its settings make impossible fails this run alone.
            self.one(
                j,
                lambda j=j: experiment.finish_experiment(
                    cfgs[j], experiment.source_like(cfgs[j], cfgs[r], source), model, log, share
                ),
            )

    def alone(self, r: int) -> None:
        try:
            pre = experiment.pretrain_alone(self.cfgs[r], self.progress)
        except Exception as err:  # the run's own error (a non-finite loss, bad data), for each run sharing it
            self.fail_all(r, err)
            return
        self.finish_all(r, *pre)

    def stack(self, reps: list[int]) -> None:
        """Pre-train the representatives ``reps`` (one stack) together, or each alone where they cannot stack."""
        if batch_key(self.cfgs[reps[0]]) is None or len(reps) == 1:
            for r in reps:  # a two-layer run alone is a stack of one inside its pre-trainer
                self.alone(r)
            return
        try:
            sources, models, logs, seconds = experiment.pretrain_stack([self.cfgs[r] for r in reps], self.progress)
        except NonFiniteLossError:
            for r in reps:  # one model diverged: each runs alone, so it raises its own error and the others finish
                self.alone(r)
            return
        except Exception as err:  # a bug of the stacked path, not a run's problem: reported for every run in it
            for r in reps:
                self.fail_all(r, err)
            return
        for r, source, model, log in zip(reps, sources, models, logs, strict=True):
            self.finish_all(r, source, model, log, seconds)


def run_many(
    cfgs: Sequence[ExperimentConfig],
    on_result: OnResult,
    *,
    progress: Progress | None = None,
    max_stack: int = 32,
) -> None:
    """Run every config; ``on_result(i, result, None)`` as each finishes, ``on_result(i, None, error)`` for each
    that fails. Configs that share shapes are pre-trained as one stack, the rest alone; configs that share a
    pre-trained encoder (equal ``ExperimentConfig.pretrain_hash``) pre-train it once.

    After a stack's pre-training, each model finishes (purity, heads, evaluation) on its own: an error there is that
    run's. If one model's loss turns non-finite during the stack's pre-training (a per-run problem: its learning
    rate or data), the stack's configs run one by one, so that run reports its own error and the others their
    results. Any other error of the stacked pre-training is a bug, not a run's problem: it is reported for every
    run of the stack, never hidden behind a fallback that would compute something else.
    """
    keep_freed_memory()
    schedule = _Schedule(cfgs, on_result, progress, shared_encoders(cfgs))
    reps = list(schedule.shared)
    for group in group_configs([cfgs[r] for r in reps], max_size=max_stack):
        schedule.stack([reps[g] for g in group])


def run_or_load(
    cfg: ExperimentConfig, store: ResultStore | None, *, force: bool = False, progress: Progress | None = None
) -> tuple[dict[str, Any], bool]:
    """The stored record of ``cfg`` if there is one (and not ``force``), else run and store it.
    Returns ``(record, from_store)``."""
    cached: list[bool] = []
    (rec,) = run_many_or_load([cfg], store, force=force, progress=progress, on_record=lambda r, c: cached.append(c))
    return rec, cached[0]


def run_many_or_load(
    cfgs: list[ExperimentConfig],
    store: ResultStore | None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    on_record: Callable[[dict[str, Any], bool], None] | None = None,
) -> list[dict[str, Any]]:
    """Records of many configs, in order: stored ones are loaded, the rest run (``run_many``) and stored one by one.

    Each finished run is stored at once, so an interrupted call loses at most the runs in flight; the first
    failure is raised after every other run has finished and been stored. ``on_record(record, from_store)`` is
    called in input order as records become available.
    """
    cfgs = [resolved(c) for c in cfgs]  # budgets given as fractions of the world's scale have their run's id
    check_fits(cfgs)  # before anything is computed or stored
    out: list[dict[str, Any] | None] = [None] * len(cfgs)
    from_store = [False] * len(cfgs)
    ids = [cfg.config_hash() for cfg in cfgs]
    first: dict[str, int] = {}  # run_id -> index of its first occurrence; repeats are copies of it
    for i, rid in enumerate(ids):
        first.setdefault(rid, i)
    emitted = 0
    errors: list[BaseException] = []

    def finish(i: int, rec: dict[str, Any], cached: bool) -> None:
        nonlocal emitted
        for j in [i] + [j for j, rid in enumerate(ids) if j != i and first[rid] == i]:
            out[j], from_store[j] = rec, cached or (j != i and store is not None)
        while emitted < len(cfgs) and out[emitted] is not None:
            if on_record is not None:
                on_record(out[emitted], from_store[emitted])
            emitted += 1

    todo = []
    for i, rid in enumerate(ids):
        if first[rid] != i:
            continue
        stored = None if store is None or force else store.get(rid)
        if stored is not None:
            finish(i, stored, True)
        else:
            todo.append(i)

    def on_result(j: int, res: Result | None, err: BaseException | None) -> None:
        if err is not None:
            errors.append(err)
            return
        rec, artifacts = res
        if store is not None:
            store.put(rec, artifacts)
        finish(todo[j], rec, False)

    run_many([cfgs[i] for i in todo], on_result, progress=progress)
    if errors:
        raise errors[0]
    return out  # type: ignore[return-value]
