"""The Python entry point for notebooks and scripts: ``robinherit.run`` and typed records.

    import robinherit
    recs = robinherit.run("supervised", seeds=[0, 1], pretrain__eps=0.0, pretrain__steps=500)
    recs[0].purification.top1_share_mean          # attribute access into the record
    recs[0].downstream.clean_head.robust_acc["0.25"]
    recs.to_frame()                                # one row per run (pandas), the columns of `robinherit export`

Runs go through the same store as the command line (answered from it when they are there), so a notebook and
``robinherit run`` share results.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from robinherit.analysis.export import flatten_record
from robinherit.config import ExperimentConfig, as_config, with_updates
from robinherit.errors import ConfigError
from robinherit.records import eps_key
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore


class Record(Mapping[str, Any]):
    """A result record (or one of its sections) with attribute access: ``rec.pretrain.robust_acc``. Keys that are
    not identifiers (eps keys such as "0.25") are read by indexing; ``dict(rec)`` / ``rec.to_dict()`` give the
    plain JSON data."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str | float) -> Any:
        # budgets are stored under their text form ("0.25"); a float or int key reads the same entry
        if isinstance(key, (int, float)) and not isinstance(key, bool) and key not in self._data:
            key = eps_key(key)
        return _wrap(self._data[key])

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"record has no field '{name}'; fields: {', '.join(self._data)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("records are read-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __dir__(self) -> list[str]:
        return [k for k in self._data if k.isidentifier()]

    def __repr__(self) -> str:
        if "run_id" in self._data:
            return f"Record(run_id={self._data['run_id']!r}, seed={self._data.get('seed')!r})"
        return f"Record({', '.join(self._data)})"

    def to_dict(self) -> dict[str, Any]:
        return self._data


def _wrap(value: Any) -> Any:
    return Record(value) if isinstance(value, dict) else value


class Records(list):
    """The records of one call, in seed order, with ``to_frame()`` for pandas (``a + b`` stays a ``Records``)."""

    def __add__(self, other: list) -> Records:
        return Records([*self, *other])

    def to_frame(self) -> Any:
        """One row per run: ``run_id``, ``seed``, ``config.*`` and the metrics as dotted-path columns."""
        try:
            import pandas as pd
        except ImportError:
            raise ConfigError("Records.to_frame needs pandas: pip install pandas") from None
        return pd.DataFrame([flatten_record(r.to_dict()) for r in self])


# SQLite stores a seed as a signed 64-bit integer
MAX_SEED = 2**63 - 1


def _seed_list(seeds: object, default: int) -> list[int]:
    """``seeds`` as a list of ints, checked before anything runs: an int, a sequence of ints, or None (the config's
    own seed). A string is refused rather than read character by character, and a bool rather than read as 0/1."""
    if seeds is None:
        return [default]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        values = [seeds]
    elif isinstance(seeds, Sequence) and not isinstance(seeds, (str, bytes)):
        values = list(seeds)
    else:
        values = [seeds]
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED]
    if bad or not values or isinstance(seeds, (str, bytes, bool)):
        raise ConfigError(
            f"seeds={seeds!r} is not a seed or a list of seeds; seeds takes an int or a list of ints from 0 to "
            f"2**63 - 1, e.g. seeds=[0, 1, 2] or seeds=3"
        )
    return values


def run(
    config: str | Path | Mapping[str, Any] | ExperimentConfig = "supervised",
    *,
    seeds: Sequence[int] | int | None = None,
    store: str | Path | ResultStore | None = "results/runs.db",
    force: bool = False,
    updates: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Records:
    """Run ``config`` (a YAML path, a shipped config's name, a dict of sections, or an :class:`ExperimentConfig`) for
    each seed and
    return the records. Overrides are config paths: keyword arguments with ``__`` for the dots
    (``pretrain__eps=0``), or ``updates={"pretrain.eps": 0}`` (the command line's ``--set``). ``store=None``
    keeps nothing; ``force`` reruns what the store has. Configs that share shapes are pre-trained as one stack
    (the same results, faster)."""
    paths = {**dict(updates or {}), **{k.replace("__", "."): v for k, v in overrides.items()}}
    cfg = as_config(dict(config) if isinstance(config, Mapping) else config, paths)
    seed_list = _seed_list(seeds, cfg.seed)
    cfgs = [with_updates(cfg, seed=s) for s in seed_list]
    db = store if isinstance(store, ResultStore) or store is None else ResultStore(store)
    return Records(Record(r) for r in run_many_or_load(cfgs, db, force=force))
