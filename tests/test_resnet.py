"""The residual encoders: shapes, the seed alone fixing the weights, and flat [0, 1] inputs."""

from __future__ import annotations

import torch

from robinherit.models.resnet import resnet18, resnet_small


def test_resnet18_is_the_cifar_form_with_its_usual_size():
    net = resnet18((3, 32, 32), 10, torch.Generator().manual_seed(0))
    assert net.feature_dim == 512
    assert 11_100_000 < sum(p.numel() for p in net.parameters()) < 11_250_000  # ResNet-18 on CIFAR: 11.17 M
    net.eval()
    assert net.features(torch.rand(2, 3 * 32 * 32)).shape == (2, 512)


def test_small_resnet_weights_are_a_function_of_the_seed_and_outputs_have_the_head_size():
    a = resnet_small((1, 28, 28), 10, torch.Generator().manual_seed(3))
    b = resnet_small((1, 28, 28), 10, torch.Generator().manual_seed(3))
    c = resnet_small((1, 28, 28), 10, torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.stem.weight, c.stem.weight)
    assert a(torch.rand(3, 784)).shape == (3, 10) and a.feature_dim == 64


def test_building_a_resnet_leaves_the_global_random_stream_alone():
    state = torch.random.get_rng_state()
    resnet_small((1, 28, 28), 10, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
