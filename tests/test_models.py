"""Two-layer network: the thresholded units, row normalisation, thresholds, heads."""

from __future__ import annotations

import torch

from robinherit.config import Activation, ModelConfig
from robinherit.models.two_layer import LinearHead, build_model
from robinherit.models.units import UNITS
from robinherit.seeding import generator

sym_relu = UNITS[Activation.sym_relu].function
relu = UNITS[Activation.relu].function


def test_sym_relu_is_zero_inside_the_threshold_and_shifted_outside():
    u = torch.tensor([-2.0, -0.5, -0.3, 0.0, 0.2, 0.3, 1.0])
    b = torch.tensor(0.3)
    expected = torch.tensor([-1.7, -0.2, 0.0, 0.0, 0.0, 0.0, 0.7])
    assert torch.allclose(sym_relu(u, b), expected)
    assert torch.allclose(sym_relu(-u, b), -sym_relu(u, b))  # odd


def test_sym_relu_with_zero_threshold_is_the_identity():
    u = torch.randn(100)
    assert torch.equal(sym_relu(u, torch.tensor(0.0)), u)


def test_relu_with_threshold():
    u = torch.tensor([-1.0, 0.2, 0.5])
    assert torch.allclose(relu(u, torch.tensor(0.3)), torch.tensor([0.0, 0.0, 0.2]))


def net(**kw) -> torch.nn.Module:
    return build_model(8, ModelConfig(width=16, **kw), n_out=2, g=generator(0, "init"))


def test_shapes():
    model = net()
    x = torch.randn(5, 8)
    assert model.features(x).shape == (5, 16)
    assert model(x).shape == (5, 2)
    assert model.weight().shape == (16, 8)


def test_zero_threshold_makes_the_network_linear():
    model = net(threshold=0.0)
    x1, x2 = torch.randn(4, 8), torch.randn(4, 8)
    with torch.no_grad():
        bias = model(torch.zeros(1, 8))
        lhs = model(2 * x1 - 3 * x2) - bias
        rhs = 2 * (model(x1) - bias) - 3 * (model(x2) - bias)
    assert torch.allclose(lhs, rhs, atol=1e-5)


def test_threshold_makes_the_network_nonlinear():
    model = net(threshold=0.3)
    x = torch.randn(64, 8)
    with torch.no_grad():
        assert not torch.allclose(model.features(2 * x), 2 * model.features(x), atol=1e-4)
        assert (model.features(0.01 * x) == 0).all()  # small inputs stay below every threshold


def test_normalised_rows_have_unit_norm_and_ignore_the_weight_scale():
    model = net(normalize_rows=True)
    assert torch.allclose(model.weight().norm(dim=1), torch.ones(16), atol=1e-6)
    x = torch.randn(4, 8)
    with torch.no_grad():
        before = model(x)
        model.W.mul_(7.0)
        assert torch.allclose(model(x), before, atol=1e-5)


def test_unnormalised_rows_are_the_raw_weights():
    model = net(normalize_rows=False)
    assert torch.equal(model.weight(), model.W)


def test_threshold_is_fixed_or_learned_and_never_negative():
    assert not net(learn_threshold=False).b.requires_grad
    model = net(learn_threshold=True, threshold=0.2)
    assert model.b.requires_grad
    assert torch.allclose(model.threshold(), torch.full((16,), 0.2))
    with torch.no_grad():
        model.b.fill_(-1.0)
    assert (model.threshold() == 0).all()


def test_init_is_a_pure_function_of_the_generator():
    a, b = net(), net()
    c = build_model(8, ModelConfig(width=16), n_out=2, g=generator(1, "init"))
    assert torch.equal(a.W, b.W) and torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.W, c.W)


def test_freeze_stops_every_gradient():
    model = net(learn_threshold=True).freeze()
    assert not any(p.requires_grad for p in model.parameters())


def test_linear_head_starts_at_zero_and_reads_the_encoder_features():
    encoder = net().freeze()
    head = LinearHead(encoder, 16, 3)
    x = torch.randn(4, 8)
    assert torch.equal(head(x), torch.zeros(4, 3))
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(3, 16))
        assert torch.allclose(head(x), encoder.features(x) @ head.linear.weight.T)
