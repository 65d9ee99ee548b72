"""One definition per unit serves the model, the closed form, the stacked path and the certifier: its parts must
agree with each other and with autograd."""

from __future__ import annotations

import itertools

import pytest
import torch

from robinherit.config import Activation
from robinherit.models.units import UNITS, active_grad, uniform_threshold, unit_rows


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


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns, zeros' signs set aside (a zero feature is a zero feature either way)."""
    return torch.where(t == 0, torch.zeros_like(t), t).view(torch.int32)


@pytest.mark.parametrize("act", list(UNITS))
def test_one_float_threshold_gives_the_tensor_forms_bits(act):
    # the one-pass kernels a shared float threshold selects (softshrink and its backward for sym_relu) must give
    # the tensor forms' values to the bit, at the kinks, beside them, at zero and on NaN
    b = 0.3
    bt = torch.full((64,), b)
    u = torch.randn(400, 64, generator=torch.Generator().manual_seed(4)) * 0.5
    u[0, :8] = torch.tensor([b, -b, float(bt[0]), -float(bt[0]), 0.0, -0.0, float("nan"), 1e-30])
    u[1, :2] = torch.nextafter(torch.tensor([b, -b]), torch.tensor([1.0, -1.0]))
    fast_f, fast_t = UNITS[act].fast(u.clone(), b), UNITS[act].fast(u.clone(), bt)
    assert torch.equal(torch.isnan(fast_f), torch.isnan(fast_t)) and torch.isnan(fast_f).any()
    finite = ~torch.isnan(fast_t)
    assert torch.equal(_bits(fast_f[finite]), _bits(fast_t[finite]))
    g = torch.randn(400, 64, generator=torch.Generator().manual_seed(5))
    h = fast_t
    grad_f, grad_t = UNITS[act].active(g, u, h, b), UNITS[act].active(g, u, h, bt)
    assert torch.equal(grad_t, active_grad(g, h))  # the generic rule
    # the same everywhere but at a NaN pre-activation, whose loss is NaN already (the one-pass form passes no
    # gradient there, the generic one passes g)
    assert torch.equal(grad_f[finite], grad_t[finite])
    assert (grad_f == 0).any() and (grad_f != 0).any()
    # written over the gradient's own memory (what the closed-form paths ask for): the same bits, in that memory
    for thr, ref in ((b, grad_f), (bt, grad_t)):
        g_tmp = g.clone()
        out = UNITS[act].active(g_tmp, u, h, thr, overwrite=True)
        assert out.data_ptr() == g_tmp.data_ptr() and torch.equal(_bits(out), _bits(ref))
    # never over a tensor autograd tracks, nor over a broadcast view whose elements share memory
    tracked = g.clone().requires_grad_()
    assert UNITS[act].active(tracked, u, h, b, overwrite=True).data_ptr() != tracked.data_ptr()
    row = g[:1].expand(400, 64)
    assert torch.equal(UNITS[act].active(row, u, h, b, overwrite=True), UNITS[act].active(row.contiguous(), u, h, b))


def test_uniform_threshold_is_a_float_only_when_every_unit_shares_one():
    assert uniform_threshold(torch.full((2, 1, 5), 0.25)) == 0.25
    assert isinstance(uniform_threshold(torch.full((5,), 0.25)), float)
    mixed = torch.tensor([0.25, 0.25, 0.5])
    assert uniform_threshold(mixed) is mixed
