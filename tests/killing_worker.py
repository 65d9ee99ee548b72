"""A sweep worker function that dies like a process the OS killed (SIGKILL) on one seed: spawned pool workers
import it by name, which monkeypatching cannot reach."""

from __future__ import annotations

import os
import signal
from typing import Any

from robinherit.runs.sweep import execute

DOOMED_SEED = 13


def execute_or_die(cfg_jsons: list[dict[str, Any]]):
    if any(c["seed"] == DOOMED_SEED for c in cfg_jsons):
        os.kill(os.getpid(), signal.SIGKILL)
    return execute(cfg_jsons)
