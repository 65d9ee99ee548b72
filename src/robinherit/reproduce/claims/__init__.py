"""The claims ``robinherit reproduce`` checks (docs/theory.md, "The seven claims the toolkit checks"; Xing et al.,
AISTATS 2024, arXiv 2401.15248), one module each. ``CLAIMS`` maps a row id to its claim; its order is the
order of claims.json and the report. A new claim is one module with a :class:`~robinherit.reproduce.spec.
ClaimSpec` and one line here.

Claims 3 and 4 hold for supervised and for contrastive pre-training (the theory's point 3), so each has a row
per family: "3"/"4" on configs/supervised.yaml, "3c"/"4c" on configs/contrastive.yaml; claim 7 (real data) has "7"
(supervised) and "7c" (contrastive pre-training). Row ids are strings so that every row has its own; ``number`` is
the claim's number, which ``--claims`` selects (3 selects 3 and 3c, 7 selects 7 and 7c).
"""

from __future__ import annotations

from robinherit.reproduce.claims import (
    c1_supervised_purification,
    c2_contrastive_purification,
    c3_inheritance,
    c4_clean_head,
    c5_mechanism,
    c6_cost,
    c7_real_data,
)
from robinherit.reproduce.spec import ClaimSpec

CLAIMS: dict[str, ClaimSpec] = {
    "1": c1_supervised_purification.CLAIM,
    "2": c2_contrastive_purification.CLAIM,
    "3": c3_inheritance.SUPERVISED,
    "3c": c3_inheritance.CONTRASTIVE,
    "4": c4_clean_head.SUPERVISED,
    "4c": c4_clean_head.CONTRASTIVE,
    "5": c5_mechanism.CLAIM,
    "6": c6_cost.CLAIM,
    "7": c7_real_data.CLAIM,
    "7c": c7_real_data.CONTRASTIVE,
}

__all__ = ["CLAIMS"]
