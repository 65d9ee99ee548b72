"""Measures of the units a linear head reads, for any encoder: which of them are pure, and which are robust.

Purity proper (``evaluation.purity``) needs the true dictionary, or a first layer that is linear in the input. A
deep encoder's head reads its last layer, so these measures look at that layer's activations h(x) (n, m) directly:

- **class selectivity** (Morcos et al. 2018, "On the importance of single directions for generalization"):
  (mu_max - mu_rest) / (mu_max + mu_rest) per unit, mu_max the largest class-conditional mean of |h_j| and
  mu_rest the mean of the others; 0 for a unit that fires alike for every class, 1 for one class alone. The
  magnitude is used because a symmetric unit's sign carries the feature's sign, not its presence.
- **activation-dictionary feature count**: a sparse dictionary fitted on the activations (sklearn's
  MiniBatchDictionaryLearning); unit j's loadings on the atoms, a_j, give its effective number of features
  (sum a^2)^2 / sum a^4, as purity's N_eff gives it for true features (1: the unit carries one feature). In the
  spirit of Bereska et al. (TMLR 2025), who count features with sparse autoencoders.
- **unit shift** (a unit's own robustness; larger is less robust): how far the strongest eps-bounded attack on
  unit j alone moves h_j, over the spread (standard deviation) of h_j on the data; each unit is attacked on its
  own (PGD on |h_j(x + delta) - h_j(x)|).
- **representation shift** (larger is less robust; Nern et al., NeurIPS 2023, bound a linear head's robustness
  by it): how far an eps-bounded attack moves the whole feature vector, ||f(x + delta) - f(x)|| over the mean
  ||f(x) - mean f||.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from robinherit.attacks.gradient import pgd
from robinherit.config import Norm

Features = Callable[[Tensor], Tensor]  # (n, d) inputs -> (n, m) features


def class_selectivity(acts: Tensor, labels: Tensor, eps: float = 1e-12) -> Tensor:
    """(m,) selectivity of each unit from activations (n, m) and integer labels (n,)."""
    mag = acts.abs().double()
    classes = torch.unique(labels)
    means = torch.stack([mag[labels == c].mean(dim=0) for c in classes])  # (C, m)
    top = means.max(dim=0).values
    rest = (means.sum(dim=0) - top) / max(len(classes) - 1, 1)
    return ((top - rest) / (top + rest).clamp_min(eps)).float()


def participation(loadings: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Effective number of entries of each column of ``loadings`` (k, m): (sum a^2)^2 / sum a^4."""
    sq = loadings.astype(np.float64) ** 2
    return (sq.sum(axis=0) ** 2 / np.maximum((sq**2).sum(axis=0), eps)).astype(np.float64)


def feature_count(acts: Tensor, n_atoms: int | None = None, seed: int = 0, max_samples: int = 2000) -> np.ndarray:
    """(m,) effective number of activation-dictionary atoms each unit carries (1: one feature)."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    x = acts.detach().cpu().double().numpy()
    if x.shape[0] > max_samples:
        rows = np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)
        x = x[rows]
    x = x - x.mean(axis=0)
    k = n_atoms or x.shape[1]
    learner = MiniBatchDictionaryLearning(n_components=k, alpha=0.1, batch_size=256, max_iter=20, random_state=seed)
    atoms = learner.fit(x).components_  # (k, m): each atom a direction in unit space
    norms = np.linalg.norm(atoms, axis=1, keepdims=True)
    return participation(atoms / np.maximum(norms, 1e-12))


def unit_shift(
    features: Features,
    x: Tensor,
    *,
    eps: float,
    norm: Norm,
    steps: int = 10,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
    max_units: int | None = None,
) -> Tensor:
    """(m,) per unit: the largest |h_j(x + delta) - h_j(x)| over an eps-ball, averaged over x, divided by the
    standard deviation of h_j on x (units that never vary get 0). Every unit gets its own attack: the inputs are
    repeated once per unit, so the cost is m times one attack on x."""
    with torch.no_grad():
        h0 = features(x)  # (n, m)
    n, m = h0.shape
    units = torch.arange(m if max_units is None else min(m, max_units), device=x.device)
    xs = x.repeat(len(units), *([1] * (x.dim() - 1)))  # (u n, d): block j is x, attacked on unit j
    which = units.repeat_interleave(n)  # (u n,)
    base = h0[:, units].T.reshape(-1)  # (u n,) h_j(x) in the same order

    def moved(xa: Tensor) -> Tensor:
        return (features(xa).gather(1, which[:, None]).squeeze(1) - base).abs()

    x_adv = pgd(moved, xs, eps=eps, norm=norm, steps=steps, generator=generator, clip=clip)
    with torch.no_grad():
        shift = moved(x_adv).reshape(len(units), n).mean(dim=1)
    spread = h0[:, units].std(dim=0)
    return torch.where(spread > 1e-8, shift / spread.clamp_min(1e-8), torch.zeros_like(shift))


def representation_shift(
    features: Features,
    x: Tensor,
    *,
    eps: float,
    norm: Norm,
    steps: int = 10,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> float:
    """Mean over x of the largest ||f(x + delta) - f(x)|| in the eps-ball, over the mean distance of f(x) to its
    centre (so 1 means an attack moves a representation as far as a typical point lies from the mean)."""
    with torch.no_grad():
        f0 = features(x)

    def moved(xa: Tensor) -> Tensor:
        return (features(xa) - f0).norm(dim=1)

    x_adv = pgd(moved, x, eps=eps, norm=norm, steps=steps, generator=generator, clip=clip)
    with torch.no_grad():
        shift = float(moved(x_adv).mean())
    scale = float((f0 - f0.mean(dim=0)).norm(dim=1).mean())
    return shift / scale if scale > 1e-12 else 0.0


def unit_measures(
    features: Features,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: Norm,
    steps: int = 10,
    seed: int = 0,
    clip: tuple[float, float] | None = None,
    max_units: int = 64,
    max_points: int = 100,
) -> dict[str, float]:
    """The four measures, summarised for a record: means over units (medians for the feature count)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        acts = features(x)
    xs = x[:max_points]
    return {
        "class_selectivity_mean": float(class_selectivity(acts, y).mean()),
        "feature_count_median": float(np.median(feature_count(acts, seed=seed))),
        "unit_shift_mean": float(
            unit_shift(features, xs, eps=eps, norm=norm, steps=steps, generator=g, clip=clip, max_units=max_units)
            .mean()
            .item()
        ),
        "representation_shift": representation_shift(
            features, xs, eps=eps, norm=norm, steps=steps, generator=g, clip=clip
        ),
    }
