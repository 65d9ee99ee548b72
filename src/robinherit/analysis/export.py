"""The results store as a tidy table: one row per run; config paths and metrics as columns.

Columns are dotted paths: ``run_id``, ``seed``, ``config.pretrain.eps``, ...,
``purification.top1_share_mean``, ``downstream.clean_head.robust_acc.0.25``, ``timing_s.total``,
``git_commit``, ``versions.torch``. Per-step and per-node lists (``pretrain.loss_curve``,
``purification.per_node_top1``) are not per-run quantities and are left out; config lists (``eval.eps_grid``)
and warnings are kept as JSON text. CSV always works; Parquet needs pyarrow (``pip install robinherit[export]``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from robinherit.errors import RobinheritError
from robinherit.outputs import replace_file
from robinherit.paths import flatten


class ExportError(RobinheritError):
    pass


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"


# Lists of one value per step or node: not a column of a per-run table.
_DROPPED = {"pretrain.loss_curve", "purification.per_node_top1"}
_FIRST = ["run_id", "seed"]


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One run as ``{dotted path: scalar}``; the config under ``config.``, everything else by its own path."""
    return flatten(record, leaf=lambda v: json.dumps(v) if isinstance(v, list | tuple) else v, skip=_DROPPED)


def table(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)``: ids first, then config paths, then metrics, each group sorted."""
    rows = [flatten_record(r) for r in records]
    keys = {k for row in rows for k in row}
    config = sorted(k for k in keys if k.startswith("config."))
    rest = sorted(k for k in keys if k not in config and k not in _FIRST)
    columns = [k for k in _FIRST if k in keys] + config + rest
    return columns, rows


def write_csv(records: list[dict[str, Any]], out: Path) -> Path:
    columns, rows = table(records)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    return replace_file(out, write)


def write_parquet(records: list[dict[str, Any]], out: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError(
            "--format parquet needs pyarrow, which is not installed; pip install 'robinherit[export]' "
            "(or 'pyarrow'), or use --format csv"
        ) from None
    columns, rows = table(records)
    arrays = {}
    for col in columns:
        values = [row.get(col) for row in rows]
        arrays[col] = pa.array(values, type=_arrow_type(pa, values))
    return replace_file(out, lambda tmp: pq.write_table(pa.table(arrays), tmp))


def _arrow_type(pa: Any, values: list[Any]) -> Any:
    # One type per column, chosen from all rows: Arrow's inference stops at the first value.
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if not present:
        return pa.null()
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            values[i] = json.dumps(v)
    return pa.string()


WRITERS: dict[Format, Callable[[list[dict[str, Any]], Path], Path]] = {
    Format.csv: write_csv,
    Format.parquet: write_parquet,
}


def export(records: list[dict[str, Any]], fmt: Format | str, out: str | Path) -> Path:
    """Write ``records`` as a table to ``out`` in ``fmt``; returns the path."""
    fmt = Format(fmt)
    out = Path(out)
    if not records:
        raise ExportError("the store has no runs to export; run experiments first or pass the right --store")
    out.parent.mkdir(parents=True, exist_ok=True)
    return WRITERS[fmt](records, out)
