"""Feature-purification metrics (Allen-Zhu & Li 2020; Xing et al. 2024, arXiv 2401.15248).

Node i's loadings on the true features are alpha_i = M^+ w_i (M^T w_i for an orthogonal dictionary).
A node is *pure* when one loading carries almost all of its energy. Per node:

- top-1 share   P_i = max_j alpha_ij^2 / ||alpha_i||^2            (1 = pure, 1/D = uniform)
- effective number of features N_eff = (sum_j alpha_ij^2)^2 / sum_j alpha_ij^4   (1 = pure)
- top-s energy  E_s = energy of the s largest loadings / ||alpha_i||^2

Dead nodes (negligible weight, or never active on the probe inputs) are excluded and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

TAUS = (0.5, 0.7, 0.9)


def loadings(weight: Tensor, dictionary: Tensor) -> Tensor:
    """(m, d) weights and (d, D) dictionary -> (m, D) loadings alpha = W (M^+)^T."""
    return weight @ torch.linalg.pinv(dictionary).T


@dataclass(frozen=True)
class Purity:
    top1_share: np.ndarray  # (alive,) per-node P_i
    neff: np.ndarray  # (alive,)
    top_s_energy: np.ndarray  # (alive,)
    s: int
    dead_nodes: int

    def summary(self) -> dict:
        if self.top1_share.size == 0:
            nan = float("nan")
            return {
                "top1_share_mean": nan,
                "top1_share_median": nan,
                "neff_median": nan,
                "neff_mean": nan,
                "top_s_energy_mean": nan,
                "s": self.s,
                "frac_pure": {str(t): 0.0 for t in TAUS},
                "dead_nodes": self.dead_nodes,
                "alive_nodes": 0,
            }
        return {
            "top1_share_mean": float(self.top1_share.mean()),
            "top1_share_median": float(np.median(self.top1_share)),
            "neff_median": float(np.median(self.neff)),
            "neff_mean": float(self.neff.mean()),
            "top_s_energy_mean": float(self.top_s_energy.mean()),
            "s": self.s,
            "frac_pure": {str(t): float((self.top1_share > t).mean()) for t in TAUS},
            "dead_nodes": self.dead_nodes,
            "alive_nodes": int(self.top1_share.size),
        }


def node_metrics(alpha: Tensor, s: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row top-1 share, N_eff and top-s energy of an (m, D) loading matrix."""
    energy = alpha.double() ** 2  # (m, D)
    total = energy.sum(dim=1).clamp_min(1e-300)
    share = energy.amax(dim=1) / total
    neff = total**2 / (energy**2).sum(dim=1).clamp_min(1e-300)
    s = min(s, alpha.shape[1])
    tops = energy.topk(s, dim=1).values.sum(dim=1) / total
    return share.numpy(), neff.numpy(), tops.numpy()


def alive_mask(weight: Tensor, features: Tensor | None, rel_tol: float = 1e-3) -> Tensor:
    """Nodes with non-negligible weight norm that fire on at least one probe input."""
    norms = weight.norm(dim=1)
    alive = norms > rel_tol * norms.max().clamp_min(1e-30)
    if features is not None:
        alive &= (features != 0).any(dim=0)
    return alive


def measure(weight: Tensor, dictionary: Tensor, features: Tensor | None = None, s: int = 3) -> Purity:
    """Purity of the nodes of ``weight`` (m, d) against ``dictionary`` (d, D).

    ``features``: (n, m) activations on probe inputs, used to find nodes that never fire.
    """
    weight = weight.detach().cpu().float()
    alive = alive_mask(weight, None if features is None else features.detach().cpu())
    share, neff, tops = node_metrics(loadings(weight[alive], dictionary.detach().cpu().float()), s)
    return Purity(share, neff, tops, s, int((~alive).sum()))
