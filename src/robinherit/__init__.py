"""robinherit: robustness inheritance and feature purification in two-layer networks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The top-level names are imported on first use, so importing one layer (robinherit.config, say) does not pull in
# the layers above it (data, models, training) through this package's __init__.
_LAZY = {
    "ExperimentConfig": "robinherit.config",
    "audit": "robinherit.auditing",
    "load": "robinherit.auditing",
    "Record": "robinherit.api",
    "atlas": "robinherit.reproduce.atlas",
    "Records": "robinherit.api",
    "load_config": "robinherit.config",
    "load_plugins": "robinherit.plugins",
    "run": "robinherit.api",
    "run_experiment": "robinherit.runs.experiment",
    "run_or_load": "robinherit.runs.schedule",
}

if TYPE_CHECKING:
    from robinherit.api import Record, Records, run
    from robinherit.auditing import audit, load
    from robinherit.config import ExperimentConfig, load_config
    from robinherit.plugins import load_plugins
    from robinherit.reproduce.atlas import atlas
    from robinherit.runs.experiment import run_experiment
    from robinherit.runs.schedule import run_or_load

__all__ = [
    "ExperimentConfig",
    "Record",
    "Records",
    "atlas",
    "audit",
    "load",
    "load_config",
    "load_plugins",
    "run",
    "run_experiment",
    "run_or_load",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'robinherit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
