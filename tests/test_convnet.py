"""The conv encoder: shapes on images and 1-D signals, a seeded init, its first-layer filters as patch vectors,
row normalisation of the feature layer, and gradients through the conv stack."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robinherit.config import load_config
from robinherit.models.conv import ConvConfig, ConvNet

SMALL = ConvConfig(channels=(4, 8), kernel=3)
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 1, 40)]


def model_cfg(*overrides: str):
    return load_config(overrides=["model.width=16", *overrides]).model


def net_of(shape, *overrides: str, seed: int = 0, conv: ConvConfig = SMALL, n_out: int = 3) -> ConvNet:
    return ConvNet(shape, conv, model_cfg(*overrides), n_out, g=torch.Generator().manual_seed(seed))


def flat_inputs(shape, n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, math.prod(shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32", "signal-1x1x40"])
def test_output_shapes(shape):
    net = net_of(shape)
    x = flat_inputs(shape)  # inputs arrive flat, as every data pipeline gives them
    assert net.features(x).shape == (5, 16)
    assert net(x).shape == (5, 3)
    torch.testing.assert_close(net(x), net.head(net.features(x)))  # the head reads the features
    # an image-shaped batch is the same input
    torch.testing.assert_close(net.features(x.reshape(5, *shape)), net.features(x))


@pytest.mark.parametrize("shape", SHAPES, ids=["1x28x28", "3x32x32", "signal-1x1x40"])
def test_first_layer_filters_shape(shape):
    net = net_of(shape)
    c, h, _ = shape
    kh = 1 if h == 1 else 3  # a 1-pixel-high signal gets 1 x k kernels
    assert net.first_layer_filters().shape == (4, c * kh * 3)
    assert torch.equal(net.weight(), net.first_layer_filters())  # the TwoLayerNet interface purification reads


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 40)], ids=["3x32x32", "signal-1x1x40"])
def test_first_layer_filters_are_patch_space_vectors(shape):
    """Row o dotted with a flattened (channel, row, column) input patch is the first layer's response there."""
    net = net_of(shape)
    kh = 1 if shape[1] == 1 else 3
    image = flat_inputs(shape, n=2).reshape(2, *shape)
    patches = F.unfold(image, kernel_size=(kh, 3), padding=(kh // 2, 1))  # (n, c*kh*3, h*w), same ordering
    response = net.first_layer_filters() @ patches  # (n, out, h*w)
    first = net.convs[0]
    torch.testing.assert_close(response + first.bias[None, :, None], first(image).flatten(2))


def test_init_is_a_function_of_the_generator():
    shape = (1, 28, 28)
    torch.manual_seed(123)
    a = net_of(shape, seed=0)
    torch.manual_seed(456)  # the global stream must not matter
    b = net_of(shape, seed=0)
    c = net_of(shape, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    drawn = [name for name in sa if not torch.equal(sa[name], sc[name])]
    assert {"convs.0.weight", "convs.2.weight", "fc.weight", "head.weight"} <= set(drawn)
    x = flat_inputs(shape)
    torch.testing.assert_close(a(x), b(x))


def test_initial_threshold_and_its_training():
    net = net_of((1, 28, 28), "model.threshold=0.2")
    assert torch.equal(net.threshold(), torch.full((16,), 0.2))
    assert not net.b.requires_grad
    assert net_of((1, 28, 28), "model.learn_threshold=true").b.requires_grad


@pytest.mark.parametrize("normalize", [True, False])
def test_normalize_rows(normalize):
    """With normalize_rows a feature unit sees its weight row's direction only: rescaling rows leaves the features
    alone. Without it (and threshold 0, where the unit is the identity) the features scale with the rows."""
    shape = (1, 28, 28)
    net = net_of(shape, f"model.normalize_rows={str(normalize).lower()}", "model.threshold=0")
    x = flat_inputs(shape)
    before = net.features(x).detach()
    scale = torch.linspace(0.5, 4.0, 16)  # one factor per feature unit
    with torch.no_grad():
        net.fc.weight.mul_(scale[:, None])
    after = net.features(x).detach()
    assert float(before.abs().max()) > 0
    if normalize:
        torch.testing.assert_close(after, before)
    else:
        torch.testing.assert_close(after, before * scale)


def test_normalize_rows_divides_by_the_row_norms():
    shape = (3, 32, 32)
    x = flat_inputs(shape)
    normalized = net_of(shape, "model.normalize_rows=true", "model.threshold=0")
    raw = net_of(shape, "model.normalize_rows=false", "model.threshold=0")  # the same draws
    norms = raw.fc.weight.detach().norm(dim=1)
    torch.testing.assert_close(normalized.features(x) * norms, raw.features(x))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 1, 40)], ids=["1x28x28", "signal-1x1x40"])
def test_gradient_flows_to_every_conv_layer_and_the_input(shape):
    net = net_of(shape, "model.threshold=0.05")
    x = flat_inputs(shape).requires_grad_(True)
    net(x).square().sum().backward()
    convs = [m for m in net.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2
    for layer in convs:
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0
        assert layer.bias.grad is not None and float(layer.bias.grad.abs().sum()) > 0
    assert float(net.fc.weight.grad.abs().sum()) > 0
    assert x.grad is not None and float(x.grad.abs().sum()) > 0  # attacks differentiate with respect to the input
