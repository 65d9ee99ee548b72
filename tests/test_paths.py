"""Dotted paths: one meaning for --set, sweeps, run ids, plots and exports."""

from __future__ import annotations

import pytest

from robinherit.errors import ConfigError
from robinherit.paths import deep_merge, drop_path, flatten, get_path, merge_paths, nest, set_path


def test_set_get_drop_round_trip():
    tree: dict = {}
    set_path(tree, "pretrain.eps", 0.25)
    set_path(tree, "seed", 1)
    assert tree == {"pretrain": {"eps": 0.25}, "seed": 1} and get_path(tree, "pretrain.eps") == 0.25
    with pytest.raises(ConfigError, match="not a section"):
        set_path(tree, "seed.x", 2)
    drop_path(tree, "pretrain.eps")
    drop_path(tree, "no.such.path")  # not there: nothing to do
    assert tree == {"pretrain": {}, "seed": 1}
    with pytest.raises(KeyError):
        get_path(tree, "pretrain.eps")
    assert get_path(tree, "pretrain.eps", None) is None and get_path(tree, "") is tree


def test_nest_merge_and_flatten():
    base = {"data": {"d": 16, "k": 3}, "eval": {"eps_grid": [0, 1]}}
    merged = merge_paths(base, {"data.d": 32, "pretrain.eps": 0})
    assert merged == {"data": {"d": 32, "k": 3}, "eval": {"eps_grid": [0, 1]}, "pretrain": {"eps": 0}}
    assert base["data"]["d"] == 16  # the input is kept
    assert nest("a.b", 1) == {"a": {"b": 1}} and deep_merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}
    flat = flatten(merged, leaf=lambda v: repr(v) if isinstance(v, list) else v, skip={"pretrain"})
    assert flat == {"data.d": 32, "data.k": 3, "eval.eps_grid": "[0, 1]"}
