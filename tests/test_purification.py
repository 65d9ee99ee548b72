"""Purity metrics on hand-made weights, where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robinherit.config import DataConfig
from robinherit.evaluation.purity import TAUS, loadings, measure, node_metrics
from robinherit.seeding import generator
from robinherit.world.sparse_coding import make_dictionary

D = 16


@pytest.fixture
def ortho() -> torch.Tensor:
    return make_dictionary(DataConfig(d=D), generator(0, "world"))  # (d, D), random orthogonal


def test_pure_node_has_share_one_and_one_effective_feature(ortho: torch.Tensor):
    w = 2.5 * ortho[:, 3][None, :]  # (1, d): exactly feature 3, any scale
    p = measure(w, ortho)
    assert p.top1_share[0] == pytest.approx(1.0, abs=1e-5)
    assert p.neff[0] == pytest.approx(1.0, abs=1e-5)
    assert p.top_s_energy[0] == pytest.approx(1.0, abs=1e-5)
    assert p.dead_nodes == 0


def test_uniform_node_has_share_one_over_D_and_D_effective_features(ortho: torch.Tensor):  # noqa: N802
    signs = torch.tensor([(-1.0) ** j for j in range(D)])
    w = (ortho @ signs)[None, :]  # equal |loading| on every feature
    p = measure(w, ortho, s=4)
    assert p.top1_share[0] == pytest.approx(1 / D, rel=1e-4)
    assert p.neff[0] == pytest.approx(D, rel=1e-4)
    assert p.top_s_energy[0] == pytest.approx(4 / D, rel=1e-4)


def test_known_loadings_give_known_values(ortho: torch.Tensor):
    alpha = torch.zeros(2, D)
    alpha[0, :2] = torch.tensor([3.0, 4.0])  # shares 9/25 and 16/25
    alpha[1, :3] = torch.tensor([1.0, 1.0, -1.0])
    p = measure(alpha @ ortho.T, ortho, s=2)  # w_i = M alpha_i
    assert p.top1_share == pytest.approx([16 / 25, 1 / 3], rel=1e-4)
    assert p.neff == pytest.approx([625 / (81 + 256), 3.0], rel=1e-4)
    assert p.top_s_energy == pytest.approx([1.0, 2 / 3], rel=1e-4)


def test_frac_pure_counts_nodes_above_each_tau(ortho: torch.Tensor):
    # shares 1, 0.8, 0.6, 0.4 -> above 0.5: 3 of 4, above 0.7: 2, above 0.9: 1
    rows = []
    for share in (1.0, 0.8, 0.6, 0.4):
        a = torch.zeros(D)
        a[0] = math.sqrt(share)
        a[1] = math.sqrt((1 - share) / 2)
        a[2] = math.sqrt((1 - share) / 2)
        rows.append(a)
    p = measure(torch.stack(rows) @ ortho.T, ortho)
    summary = p.summary()
    assert summary["frac_pure"] == pytest.approx({"0.5": 0.75, "0.7": 0.5, "0.9": 0.25})
    assert set(summary["frac_pure"]) == {str(t) for t in TAUS}
    assert summary["top1_share_mean"] == pytest.approx(0.7, rel=1e-4)
    assert summary["top1_share_median"] == pytest.approx(0.7, rel=1e-4)
    assert summary["alive_nodes"] == 4 and summary["dead_nodes"] == 0


def test_dead_nodes_are_excluded_and_counted(ortho: torch.Tensor):
    pure = ortho[:, 0]
    mixed = ortho @ torch.ones(D)
    w = torch.stack([pure, torch.zeros(D), mixed, pure * 1e-9])  # rows 1 and 3: negligible weight
    p = measure(w, ortho)
    assert p.dead_nodes == 2
    assert len(p.top1_share) == 2
    assert p.top1_share == pytest.approx([1.0, 1 / D], rel=1e-4)


def test_nodes_that_never_fire_are_dead(ortho: torch.Tensor):
    w = torch.stack([ortho[:, 0], ortho[:, 1], ortho @ torch.ones(D)])
    feats = torch.tensor([[0.5, 0.0, 0.1], [0.0, 0.0, -0.2]])  # (n, m): node 1 is silent on every probe
    p = measure(w, ortho, feats)
    assert p.dead_nodes == 1
    assert p.top1_share == pytest.approx([1.0, 1 / D], rel=1e-4)


def test_all_dead_gives_nan_summary_not_a_crash(ortho: torch.Tensor):
    p = measure(torch.zeros(3, D), ortho)
    s = p.summary()
    assert s["dead_nodes"] == 3 and s["alive_nodes"] == 0
    assert math.isnan(s["top1_share_mean"])


def test_overcomplete_dictionary_uses_the_pseudo_inverse():
    m = make_dictionary(DataConfig(d=8, n_features=20, dictionary="overcomplete"), generator(0, "world"))
    alpha = torch.randn(5, 8, generator=generator(1, "a")) @ m  # (5, D) in the row space of M: recoverable
    w = alpha @ m.T  # (5, d), w_i = M alpha_i
    got = loadings(w, m)
    assert torch.allclose(got, alpha, atol=1e-4)
    assert not torch.allclose(got, w @ m, atol=1e-2)  # M^T w is wrong when columns are not orthonormal
    assert torch.allclose(got, w @ torch.linalg.pinv(m).T, atol=1e-5)


def test_orthogonal_dictionary_loadings_are_M_transpose_w(ortho: torch.Tensor):  # noqa: N802
    w = torch.randn(6, D, generator=generator(2, "w"))
    assert torch.allclose(loadings(w, ortho), w @ ortho, atol=1e-5)


def test_metrics_ignore_scale_sign_and_feature_order():
    alpha = torch.randn(4, 10, generator=generator(3, "a"))
    base = node_metrics(alpha)
    perm = torch.randperm(10, generator=generator(4, "p"))
    for other in (node_metrics(-3.0 * alpha), node_metrics(alpha[:, perm])):
        for a, b in zip(base, other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    share, neff, _ = base
    assert ((share >= 1 / 10 - 1e-9) & (share <= 1 + 1e-9)).all()
    assert ((neff >= 1 - 1e-9) & (neff <= 10 + 1e-9)).all()
    assert (neff >= 1 / share - 1e-9).all()  # sum p_j^2 <= max p_j, so N_eff >= 1 / P
