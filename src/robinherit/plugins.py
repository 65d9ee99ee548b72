"""Plugins: modules that register units, data sets, encoders, attacks or claims, imported in every process.

A registry entry made in a notebook lives in that process only; the workers of a sweep or of ``reproduce`` are
fresh processes. A plugin is a module that makes its entries when imported, and every process robinherit runs
configs in imports it before it validates one:

- named by a config: the top-level ``plugins`` list, each entry a path to a ``.py`` file (relative to the working
  directory) or the dotted name of a module importable from ``sys.path``;
- loaded by hand: :func:`load_plugins` (a notebook's own file then reaches the workers of the sweeps it starts);
- installed: a package's entry points in the group ``robinherit.plugins`` (a module, imported, or a function of no
  arguments, called), which :func:`load_entry_points` loads.

Each plugin is imported once per process. Local pool workers start with every plugin their parent has loaded
(``loaded_plugins``); Ray workers load the ones each config names and the driver's.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from robinherit.errors import ConfigError

GROUP = "robinherit.plugins"

_loaded: dict[str, ModuleType] = {}  # canonical name (module name, or a file's resolved path) -> module
_entry_points_loaded = False


def load_plugins(names: Iterable[str]) -> list[ModuleType]:
    """Import each plugin of ``names`` (a ``.py`` file's path or a module's dotted name), once per process."""
    return [_load(str(name)) for name in names]


def loaded_plugins() -> list[str]:
    """Every plugin this process has loaded, as names another process on this machine can load again."""
    return list(_loaded)


def load_entry_points() -> None:
    """Load the plugins that installed packages declare in the entry-point group ``robinherit.plugins``, once per
    process."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as err:
            raise ConfigError(
                f"plugin entry point '{ep.name} = {ep.value}' (group {GROUP}) cannot be imported "
                f"({type(err).__name__}: {err}); fix or uninstall the package that declares it"
            ) from err
        if callable(obj):
            obj()


def _load(name: str) -> ModuleType:
    is_file = name.endswith(".py")
    key = str(Path(name).resolve()) if is_file else name
    if key in _loaded:
        return _loaded[key]
    try:
        module = _import_file(Path(key)) if is_file else importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as err:
        where = (
            "fix the error in that file"
            if is_file
            else "install the package that has it, add its folder to PYTHONPATH, or name its .py file instead"
        )
        raise ConfigError(f"plugin '{name}' cannot be imported ({type(err).__name__}: {err}); {where}") from err
    _loaded[key] = module
    return module


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(
            f"plugin file '{path}' does not exist; a plugin is a .py file (a path relative to the working directory, "
            "or absolute) or the dotted name of an importable module"
        )
    # A name of its own per file, so two plugins called units.py never replace each other in sys.modules.
    module_name = f"robinherit_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
