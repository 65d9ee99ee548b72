"""``robinherit reproduce``: every claim of docs/theory.md checked across seeds (Xing et al., "Better
Representations via Adversarial Training in Pre-Training: A Theoretical Perspective", AISTATS 2024, arXiv
2401.15248; Allen-Zhu & Li 2020 for the mechanism).

- :mod:`~robinherit.reproduce.driver`: settings, the run/derive/decide steps, claims.json
- :mod:`~robinherit.reproduce.stats`: the paired statistic and a claim's row
- :mod:`~robinherit.reproduce.spec`: what a claim declares (:class:`ClaimSpec`) and reads (:class:`Evidence`)
- :mod:`~robinherit.reproduce.jobs`: derived results, keyed by everything they read
- :mod:`~robinherit.reproduce.claims`: one module per claim and the ``CLAIMS`` registry
"""

from __future__ import annotations

from robinherit.reproduce.claims import CLAIMS
from robinherit.reproduce.claims.c4_clean_head import CLAIM4_TASKS, extra_task, fresh_task, task_gaps
from robinherit.reproduce.driver import (
    ALL_CLAIMS,
    CONFIG_DIR,
    QUICK_FAMILY_OVERRIDES,
    QUICK_OVERRIDES,
    ReproduceResult,
    ReproduceSettings,
    reproduce,
    write_claims,
)
from robinherit.reproduce.jobs import AuxJob, derived_job, run_aux
from robinherit.reproduce.spec import AT_EPS, EPS_REF, ClaimNotRunError, ClaimSpec, Evidence, Figure, pair_configs
from robinherit.reproduce.stats import Claim, paired_stats

__all__ = [
    "ALL_CLAIMS",
    "AT_EPS",
    "CLAIM4_TASKS",
    "CLAIMS",
    "CONFIG_DIR",
    "EPS_REF",
    "QUICK_FAMILY_OVERRIDES",
    "QUICK_OVERRIDES",
    "AuxJob",
    "Claim",
    "ClaimNotRunError",
    "ClaimSpec",
    "Evidence",
    "Figure",
    "ReproduceResult",
    "ReproduceSettings",
    "derived_job",
    "extra_task",
    "fresh_task",
    "pair_configs",
    "paired_stats",
    "reproduce",
    "run_aux",
    "task_gaps",
    "write_claims",
]
