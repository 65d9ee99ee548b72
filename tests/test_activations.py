"""One definition per unit serves the model, the closed form, the stacked path and the certifier: its parts must
agree with each other and with autograd."""

from __future__ import annotations

import itertools

import pytest
import torch

from robinherit.activations import UNITS, active_grad, unit_rows
from robinherit.config import Activation


@pytest.mark.parametrize("act", [a.value for a in Activation])
def test_every_config_activation_has_a_unit(act):
    assert act in UNITS  # a name in config.Activation without a unit would fail mid-run


@pytest.mark.parametrize("act", list(UNITS))
def test_fast_form_equals_the_reference_to_the_bit(act):
    u = torch.randn(500, 64, generator=torch.Generator().manual_seed(0)) * 2
    b = torch.rand(64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(UNITS[act].fast(u.clone(), b), UNITS[act].function(u, b))


@pytest.mark.parametrize("act", list(UNITS))
def test_derivative_rule_matches_autograd(act):
    u = (torch.randn(300, 16, generator=torch.Generator().manual_seed(2)) * 2).requires_grad_(True)
    b = torch.rand(16, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    h = UNITS[act].function(u, b)
    g = torch.randn_like(h)
    du, db = torch.autograd.grad(h, (u, b), g)
    torch.testing.assert_close(active_grad(g, h.detach()), du)
    # dh/db = -threshold_sign(u) where active: the rule the stacked path uses for a learned threshold
    mine = -(active_grad(g, h.detach()) * UNITS[act].threshold_sign(u.detach())).sum(dim=0)
    torch.testing.assert_close(mine, db)


@pytest.mark.parametrize("act", list(UNITS))
def test_unit_is_linear_between_its_kinks(act):
    b = torch.tensor(0.4)
    pts = sorted(float(k) for k in UNITS[act].kinks(b))
    edges = [-3.0, *pts, 3.0]
    f = UNITS[act].function
    for lo, hi in itertools.pairwise(edges):
        t = torch.linspace(lo, hi, 7)
        vals = f(t, b)
        chord = vals[0] + (vals[-1] - vals[0]) * (t - lo) / (hi - lo)
        torch.testing.assert_close(vals, chord)
    # and not linear across a kink: the certifier's relaxation needs every kink listed
    k = pts[0]
    left, mid, right = f(torch.tensor(k - 0.5), b), f(torch.tensor(k), b), f(torch.tensor(k + 0.5), b)
    assert not torch.isclose(mid, (left + right) / 2)


def test_unit_rows_are_unit_length_and_keep_zero_rows():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = unit_rows(w)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], torch.zeros(2))
