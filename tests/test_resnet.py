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


def test_the_resnets_are_encoders_of_run_supervised_and_contrastive(tmp_path):
    from robinherit.config import load_config
    from robinherit.runs.experiment import run_experiment
    from test_datasets import make_mnist_files

    make_mnist_files(tmp_path, n_train=48, n_test=16)
    base = [f"data.root={tmp_path}", "data.source=mnist", "data.protocol=same_task", "model.encoder=resnet_small"]
    base += ["pretrain.steps=2", "pretrain.batch_size=8", "pretrain.eps=0.1", "pretrain.norm=linf"]
    base += ["downstream.n_train=24", "downstream.steps=2", "downstream.heads=[clean]", "eval.n_test=8"]
    base += ["eval.eps_grid=[0,0.1]", "eval.norm=linf", "eval.steps=2", "pretrain.attack_steps=2"]
    for method in ("supervised", "contrastive"):
        rec, art = run_experiment(load_config(None, [*base, f"pretrain.method={method}"]))
        assert set(rec["downstream"]["clean_head"]["robust_acc"]) == {"0", "0.1"}
        assert "stem.weight" in art["encoder"]  # the stored state dict, for audits and robinherit.load
