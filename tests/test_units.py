"""Unit measures on the features a head reads, against cases where the answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robinherit.config import Norm
from robinherit.evaluation.units import (
    class_selectivity,
    feature_count,
    participation,
    representation_shift,
    unit_shift,
)


def test_class_selectivity_is_one_for_a_unit_of_one_class_and_zero_for_a_shared_one():
    y = torch.arange(300) % 3
    one_hot = torch.nn.functional.one_hot(y, 3).float()  # unit j fires for class j only
    shared = torch.ones(300, 2)
    sel = class_selectivity(torch.cat([one_hot, shared], dim=1), y)
    assert torch.allclose(sel, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]), atol=1e-6)


def test_participation_counts_entries():
    loads = np.stack([np.eye(4)[:, 0], np.ones(4), np.array([1.0, 1.0, 0, 0])], axis=1)  # (4, 3)
    np.testing.assert_allclose(participation(loads), [1.0, 4.0, 2.0])


def test_feature_count_tells_single_feature_units_from_mixtures():
    g = np.random.default_rng(0)
    z = g.standard_normal((1500, 8)) * (g.random((1500, 8)) < 0.15)  # sparse codes: the true features
    pure = feature_count(torch.tensor(z, dtype=torch.float32), seed=0)
    rot, _ = np.linalg.qr(g.standard_normal((8, 8)))
    mixed = feature_count(torch.tensor(z @ rot, dtype=torch.float32), seed=0)
    assert np.median(pure) < 1.5 < np.median(mixed)


@pytest.mark.parametrize("norm", [Norm.l2, Norm.linf])
def test_unit_and_representation_shift_of_a_linear_map_match_their_closed_form(norm):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 12, generator=g)
    x = torch.randn(40, 12, generator=g)

    def features(xa):
        return xa @ W.T

    eps = 0.3
    shift = unit_shift(features, x, eps=eps, norm=norm, steps=20, generator=g)
    dual = W.norm(dim=1) if norm == Norm.l2 else W.abs().sum(dim=1)  # max |w . delta| over the ball
    expected = eps * dual / (x @ W.T).std(dim=0)
    # PGD reaches the maximum up to its last steps (l2: the random start's orthogonal part is only scaled down),
    # and never passes it: the ball holds no larger shift
    assert bool((shift >= 0.97 * expected).all()) and bool((shift <= expected * 1.0001).all()), (shift, expected)
    if norm == Norm.l2:
        rep = representation_shift(features, x, eps=eps, norm=norm, steps=50, generator=g)
        f0 = features(x)
        top = eps * torch.linalg.matrix_norm(W, ord=2) / (f0 - f0.mean(0)).norm(dim=1).mean()
        assert 0.9 * float(top) <= rep <= float(top) * 1.0001
