"""The Python API's argument checks and record access, without computing runs where the check comes first."""

from __future__ import annotations

import pytest

import robinherit
from robinherit.api import Record
from robinherit.errors import ConfigError


@pytest.mark.parametrize("seeds", ["12", b"1", True, [0, "1"], [1.5], [-1], [2**63], []])
def test_seeds_that_are_not_ints_are_refused_before_anything_runs(seeds, tmp_path):
    store = tmp_path / "runs.db"
    with pytest.raises(ConfigError, match="seeds takes an int or a list of ints"):
        robinherit.run("supervised", seeds=seeds, store=store)
    assert not store.exists()


def test_records_answer_budgets_as_floats_and_as_their_text():
    rec = Record({"robust_acc": {"0": 1.0, "0.1": 0.75, "1": 0.25}})
    assert rec.robust_acc[0.1] == rec.robust_acc["0.1"] == 0.75
    assert rec.robust_acc[0] == 1.0 and rec.robust_acc[1.0] == 0.25
    with pytest.raises(KeyError):
        rec.robust_acc[0.2]


def test_a_run_too_large_for_the_machine_is_refused_before_anything_runs(tmp_path):
    from robinherit.config import load_config
    from robinherit.runs.budget import check_fits, estimate_peak_bytes

    store = tmp_path / "runs.db"
    with pytest.raises(ConfigError, match=r"model\.width=1000000000.*lower the largest"):
        robinherit.run("supervised", store=store, model__width=10**9)
    assert not store.exists()
    small, wide = load_config("supervised"), load_config("supervised", ["data.d=30000"])
    assert estimate_peak_bytes(wide) > 1000 * estimate_peak_bytes(small)
    check_fits([small], memory=2**30)  # the default world fits in 1 GiB
    with pytest.raises(ConfigError, match=r"data\.d=30000"):
        check_fits([wide], memory=24 * 2**30)
