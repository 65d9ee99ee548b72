"""Attack budgets in the world's own units: ``pretrain.eps_rel``, ``downstream.eps_rel`` and ``eval.eps_rel_grid``
are fractions of a measured scale of the synthetic world, resolved here to the absolute budgets a run uses.

The scale is the median size of one feature's contribution to an input, ``||M_j z_j||`` over active features j, in
the threat model's norm. Allen-Zhu & Li (2020, "Feature purification") need the adversarial budget below that size
and large enough to punish a unit that mixes features (docs/theory.md, "When the reconstruction expects
purification"), so a fraction of it means the same thing in every world: eps_rel = 0.25 is a quarter of a feature,
whether the values are +-1 or +-U[a, 1] and whatever the dictionary. The code's share is analytic (the median of
|z_j|: 1 for +-1 values, (a + 1) / 2 for +-U[a, 1]); the column's is the median of ``||M_j||`` over the world's own
dictionary (the seed's, as the run draws it), so it is deterministic per world and needs no sampling. With l2 and
unit-norm columns the scale is the median |z_j|: exactly 1 in the default world, where eps_rel = 0.25 is the run
of eps = 0.25.

Resolution happens before a run has an id: the resolved config carries the absolute budgets and no fractions, so
its id is the absolute budget's run and atlases, sweeps and single runs share it in the store.
"""

from __future__ import annotations

from typing import Any

import torch

from robinherit.config import DataConfig, ExperimentConfig, Norm, Values, with_updates
from robinherit.errors import ConfigError
from robinherit.world.sparse_coding import make_world


def _tidy(x: float) -> float:
    # 6 significant digits: float32 column norms of 1 - 6e-8 must give the absolute run's eps, not a neighbour of it.
    return float(f"{x:.6g}")


def feature_scale(data: DataConfig, seed: int, norm: Norm) -> float:
    """Median ``||M_j z_j||`` (in ``norm``) over active features of the world of ``data`` and ``seed``."""
    magnitude = 1.0 if data.values == Values.sign else (data.value_low + 1.0) / 2.0
    m = make_world(data, seed).M.double()
    ord_ = 2 if norm == Norm.l2 else float("inf")
    columns = torch.linalg.vector_norm(m, ord=ord_, dim=0)
    return _tidy(magnitude * float(columns.median()))


def has_relative_budget(cfg: ExperimentConfig) -> bool:
    return cfg.pretrain.eps_rel is not None or cfg.downstream.eps_rel is not None or cfg.eval.eps_rel_grid is not None


def resolve_budget(cfg: ExperimentConfig) -> tuple[ExperimentConfig, dict[str, Any] | None]:
    """``cfg`` with its fractional budgets turned into absolute ones (and the fractions reset to None), and what was
    resolved: ``{"scale", "norm", "pretrain": {"eps_rel", "eps"}, ...}`` per budget set; ``(cfg, None)`` when it has
    none."""
    if not has_relative_budget(cfg):
        return cfg, None
    if not isinstance(cfg.data, DataConfig):
        raise ConfigError("pretrain.eps_rel, downstream.eps_rel and eval.eps_rel_grid need the synthetic world")
    updates: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    scales: dict[Norm, float] = {}

    def scale(norm: Norm) -> float:
        if norm not in scales:
            scales[norm] = feature_scale(cfg.data, cfg.seed, norm)
        return scales[norm]

    if cfg.pretrain.eps_rel is not None:
        eps = _tidy(cfg.pretrain.eps_rel * scale(cfg.pretrain.norm))
        updates |= {"pretrain.eps": eps, "pretrain.eps_rel": None}
        budget["pretrain"] = {"eps_rel": cfg.pretrain.eps_rel, "scale": scale(cfg.pretrain.norm), "eps": eps}
    if cfg.downstream.eps_rel is not None:
        eps = _tidy(cfg.downstream.eps_rel * scale(cfg.eval.norm))
        updates |= {"downstream.eps": eps, "downstream.eps_rel": None}
        budget["downstream"] = {"eps_rel": cfg.downstream.eps_rel, "scale": scale(cfg.eval.norm), "eps": eps}
    if cfg.eval.eps_rel_grid is not None:
        grid = [_tidy(r * scale(cfg.eval.norm)) for r in cfg.eval.eps_rel_grid]
        updates |= {"eval.eps_grid": grid, "eval.eps_rel_grid": None}
        budget["eval"] = {"eps_rel": list(cfg.eval.eps_rel_grid), "scale": scale(cfg.eval.norm), "eps": grid}
    return with_updates(cfg, **updates), budget


def resolved(cfg: ExperimentConfig) -> ExperimentConfig:
    """:func:`resolve_budget`'s config alone."""
    return resolve_budget(cfg)[0]
