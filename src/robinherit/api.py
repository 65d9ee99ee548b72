"""The Python entry point for notebooks and scripts: ``robinherit.run`` and typed records.

    import robinherit
    recs = robinherit.run("supervised", seeds=[0, 1], pretrain__eps=0.0, pretrain__steps=500)
    recs[0].purification.top1_share_mean          # attribute access into the record
    recs[0].downstream.clean_head.robust_acc["0.25"]
    recs.to_frame()                                # one row per run (pandas), the columns of `robinherit export`
    recs[0].encoder(), recs[0].heads()             # the run's encoder and heads as modules, from its store

Runs go through the same store as the command line (answered from it when they are there), so a notebook and
``robinherit run`` share results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from robinherit.analysis.export import flatten_record
from robinherit.config import ExperimentConfig, as_config, with_updates
from robinherit.errors import ConfigError
from robinherit.records import eps_key
from robinherit.runs.audit_target import load, load_encoder
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore


class _Loader:
    """A method of a whole record that loads modules from the record's store, under a name that a field of its own
    takes first: ``rec.config.model.encoder`` reads the field, ``rec.heads()`` loads. An audit record's ``encoder``
    section is read and called alike: ``rec.encoder.sha256``, ``rec.encoder()``."""

    def __init__(self, load: Callable[[Record], Any]):
        self.load = load
        self.name = load.__name__.strip("_")

    def __get__(self, rec: Record | None, owner: type | None = None) -> Any:
        if rec is None:
            return self
        value = rec._data.get(self.name)
        if value is not None and not isinstance(value, dict):
            return value
        if value is None and "run_id" not in rec._data:
            raise AttributeError(self.name)  # a section: __getattr__ names its fields
        return _CallableSection(value or {}, lambda: self.load(rec))


class Record(Mapping[str, Any]):
    """A result record (or one of its sections) with attribute access: ``rec.pretrain.robust_acc``. Keys that are
    not identifiers (eps keys such as "0.25") are read by indexing; ``dict(rec)`` / ``rec.to_dict()`` give the
    plain JSON data. A whole record knows the store it came from (``store``), so ``rec.encoder()`` and
    ``rec.heads()`` give a run's pre-trained encoder and its heads as modules in eval mode."""

    __slots__ = ("_data", "_store")

    def __init__(self, data: Mapping[str, Any], store: str | Path | ResultStore | None = None):
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_store", store.path if isinstance(store, ResultStore) else store)

    def _encoder(self) -> nn.Module:
        """The run's pre-trained encoder, in eval mode, from the store's encoder weights."""
        return load_encoder(self._data["run_id"], self._known_store("encoder"))

    def _heads(self) -> dict[str, nn.Module]:
        """The run's heads, retrained as the run trained them (as ``robinherit.load``), in eval mode."""
        return load(self._data["run_id"], self._known_store("heads"))[1]

    encoder = _Loader(_encoder)
    heads = _Loader(_heads)

    def _known_store(self, what: str) -> Path:
        run_id = self._data["run_id"]
        if self._data.get("kind") == "audit":
            raise ConfigError(
                f"record {run_id} is an audit: the store keeps its numbers, not the module it audited, so its {what} "
                "cannot be rebuilt from the record; use the module you audited (encoder.sha256 identifies its "
                "weights), or load a stored run's with robinherit.load(run_id, store=...)"
            )
        if self._store is None:
            raise ConfigError(
                f"record {run_id} does not know its results store (made with store=None, or from a plain dict); "
                f"load its {what} with robinherit.load('{run_id}', store=PATH) from the store that holds the run"
            )
        return Path(self._store)

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
        loaders = ["encoder", "heads"] if "run_id" in self._data else []
        return sorted({*(k for k in self._data if k.isidentifier()), *loaders})

    def __repr__(self) -> str:
        if "run_id" in self._data:
            return f"Record(run_id={self._data['run_id']!r}, seed={self._data.get('seed')!r})"
        return f"Record({', '.join(self._data)})"

    def to_dict(self) -> dict[str, Any]:
        return self._data


def _wrap(value: Any) -> Any:
    return Record(value) if isinstance(value, dict) else value


class _CallableSection(Record):
    """A record's section that is also a loader: ``rec.encoder.sha256`` reads, ``rec.encoder()`` loads."""

    __slots__ = ("_call",)

    def __init__(self, data: Mapping[str, Any], call: Callable[[], Any]):
        super().__init__(data)
        object.__setattr__(self, "_call", call)

    def __call__(self) -> Any:
        return self._call()


class Records(list):
    """The records of one call, in seed order, with ``to_frame()`` for pandas (``a + b`` stays a ``Records``)."""

    def __add__(self, other: list) -> Records:
        return Records([*self, *other])

    @classmethod
    def read(cls, store: str | Path = "results/runs.db") -> Records:
        """Every record of a results store (runs and audits), each knowing the store: ``rec.encoder()`` loads."""
        db = ResultStore(store, read_only=True)
        return cls(Record(r, store=db.path) for r in db.runs())

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
    return Records(Record(r, store=db) for r in run_many_or_load(cfgs, db, force=force))
