"""robinherit: robustness inheritance and feature purification in two-layer networks."""

from robinherit.config import ExperimentConfig, load_config
from robinherit.experiment import run_experiment, run_or_load

__all__ = ["ExperimentConfig", "load_config", "run_experiment", "run_or_load"]
__version__ = "0.1.0"
