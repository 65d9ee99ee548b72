"""robinherit: robustness inheritance and feature purification in two-layer networks."""

from robinherit.api import Record, Records, run
from robinherit.config import ExperimentConfig, load_config
from robinherit.runs.experiment import run_experiment
from robinherit.runs.schedule import run_or_load

__all__ = ["ExperimentConfig", "Record", "Records", "load_config", "run", "run_experiment", "run_or_load"]
__version__ = "0.1.0"
