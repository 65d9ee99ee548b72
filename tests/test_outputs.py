"""Outputs replaced atomically: a failure half way through leaves the previous file whole and no stray file."""

from __future__ import annotations

from pathlib import Path

import pytest

from robinherit.analysis.export import write_csv
from robinherit.errors import OutputError
from robinherit.outputs import replace_file, write_text


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "claims.json"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        replace_file(path, broken)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["claims.json"]
    write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["claims.json"]


def test_a_folder_is_not_an_output_file(tmp_path: Path):
    with pytest.raises(OutputError, match="is a folder"):
        write_text(tmp_path, "x")


def test_export_on_a_full_disk_keeps_the_previous_csv_whole(small_mount: Path):
    out = small_mount / "runs.csv"
    records = [{"run_id": f"r{i}", "seed": i, "config": {"a": i}, "note": "x" * 2000} for i in range(3)]
    write_csv(records, out)
    before = out.read_bytes()
    big = [{"run_id": f"r{i}", "seed": i, "config": {"a": i}, "note": "x" * 20_000} for i in range(200)]
    with pytest.raises(OutputError, match=r"runs\.csv") as err:
        write_csv(big, out)
    assert "previous file" in str(err.value)
    assert out.read_bytes() == before
    assert sorted(p.name for p in small_mount.iterdir()) == ["runs.csv"]
