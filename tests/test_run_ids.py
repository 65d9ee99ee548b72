"""Run ids are forever: a store answers a request by its id, so the ids of these varied configs, written down by the
code that first computed them, must come out the same from every later version of the config code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robinherit.config import inert_paths, load_config

STORED = json.loads((Path(__file__).parent / "data" / "run_ids.json").read_text())


@pytest.mark.parametrize("name", sorted(STORED))
def test_stored_run_ids_are_unchanged(name):
    case = STORED[name]
    cfg = load_config(case["config"], case["set"])
    assert cfg.config_hash() == case["config_hash"]
    assert cfg.pretrain_hash() == case["pretrain_hash"]
    assert inert_paths(cfg) == case["inert_paths"]
