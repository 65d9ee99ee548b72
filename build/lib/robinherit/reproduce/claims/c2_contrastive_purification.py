"""Claim 2, contrastive purification (Xing et al., AISTATS 2024, arXiv 2401.15248; contrastive learning after
Wen & Li 2021 and RoCL, Kim et al. 2020): claim 1's purification, for adversarial vs clean SimCLR-style
pre-training (``configs/contrastive.yaml``, weak noise augmentation). Same statistic and side condition.
"""

from __future__ import annotations

from robinherit.reproduce.claims.c1_supervised_purification import Purification

CLAIM = Purification("2", 2, "contrastive")
