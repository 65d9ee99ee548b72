"""Input centring is part of the two-layer model, and every fast path handles it exactly: the closed-form input
gradients, the stacked pre-training, the certifier and the contrastive attack. On digits, a real-data run gets
all three of stacked pre-training, closed-form attacks and certified accuracy."""

from __future__ import annotations

import pytest
import torch

from robinherit.attacks.gradient import input_grad, pgd
from robinherit.config import ModelConfig, Norm, load_config
from robinherit.data.sources import build_source
from robinherit.evaluation.certify import as_two_layer, certified_mask, class_spec
from robinherit.models.two_layer import LinearHead, TwoLayerNet
from robinherit.ops import closed_form as fused
from robinherit.ops.closed_form import fused_loss, info_nce_view_loss
from robinherit.ops.losses import class_margin, cross_entropy, info_nce
from robinherit.runs import experiment
from robinherit.training import stacked as batched
from robinherit.training.pretraining import pretrain_supervised

D, WIDTH, N = 10, 16, 30


def _centred_net(seed: int = 0, n_out: int = 3) -> TwoLayerNet:
    g = torch.Generator().manual_seed(seed)
    center = torch.rand(D, generator=g) * 2 - 1  # far from zero, so a dropped centre changes everything
    net = TwoLayerNet(D, ModelConfig(width=WIDTH, threshold=0.3), n_out, g, center=center)
    with torch.no_grad():
        net.head.bias.normal_(generator=g)
    return net.freeze()


def test_centre_is_subtracted_before_the_first_layer():
    net = _centred_net()
    x = torch.randn(N, D)
    plain = TwoLayerNet(D, net.cfg, 3)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "center"})
    torch.testing.assert_close(net(x), plain(x - net.center))


@pytest.mark.parametrize("loss_fn", [cross_entropy, class_margin])
def test_closed_form_gradient_of_a_centred_net_equals_autograd(loss_fn):
    net = _centred_net()
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(4))
    for model in (net, LinearHead(net, WIDTH, 3)):
        fl = fused_loss(model, loss_fn, y)
        assert fl is not None and fl.center is not None  # the fast path is taken, with the centre
        loss, grad = fl.value_and_grad(x)
        ref_loss, ref_grad = input_grad(lambda xa, m=model: loss_fn(m(xa), y), x)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_contrastive_attack_closed_form_with_a_centre():
    net = _centred_net()
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(5))
    partner = net.features(torch.randn(N, D, generator=torch.Generator().manual_seed(6)))
    closed = info_nce_view_loss(net, torch.nn.Identity(), partner, 0.2)
    assert closed is not None
    loss, grad = closed.value_and_grad(x)
    ref_loss, ref_grad = input_grad(lambda xa: info_nce(net.features(xa), partner, 0.2), x)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", [Norm.l2, Norm.linf])
def test_certificate_of_a_centred_net_is_sound_and_moves_with_the_centre(norm):
    net = _centred_net(seed=1)
    x = torch.randn(200, D, generator=torch.Generator().manual_seed(7))
    y = net(x).argmax(1)
    bound = as_two_layer(net)
    assert bound is not None and bound.center is not None
    eps = 0.3
    cert = certified_mask(bound, x, class_spec(y, 3), eps=eps, norm=norm)
    assert 0 < cert.float().mean() < 1  # neither vacuous nor trivial
    # sound: PGD breaks no certified example
    x_adv = pgd(lambda xa: -class_margin(net(xa), y), x, eps=eps, norm=norm, steps=30, restarts=2)
    assert not (cert & (class_margin(net(x_adv), y) <= 0)).any()
    # the same network without its centre, on centred inputs, gets the same certificates
    plain = TwoLayerNet(D, net.cfg, 3)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "center"})
    shifted = certified_mask(as_two_layer(plain), x - net.center, class_spec(y, 3), eps=eps, norm=norm)
    assert torch.equal(cert, shifted)


def digits_cfg(**over):
    sets = [
        "data.source=digits",
        "model.width=32",
        "pretrain.eps=0.5",
        "pretrain.steps=40",
        "pretrain.batch_size=64",
        "pretrain.attack_steps=2",
        "downstream.steps=30",
        "downstream.n_train=300",
        "eval.eps_grid=[0,0.5,1]",
        "eval.n_test=120",
        "eval.steps=5",
        "eval.restarts=1",
    ]
    return load_config(None, sets + [f"{k}={v}" for k, v in over.items()])


def test_stacked_pretraining_on_digits_equals_the_generic_loop():
    cfg = digits_cfg()
    assert cfg.data.center and batched.batch_key(cfg) is not None  # real two-layer runs can be stacked
    source = build_source(cfg)
    fast = experiment.build_encoder(cfg, source)
    slow = experiment.build_encoder(cfg, source)
    assert fast.center is not None
    log_fast = pretrain_supervised(fast, source.pretrain_stream(cfg, torch.device("cpu")), cfg, cross_entropy)
    log_slow = pretrain_supervised(
        slow, source.pretrain_stream(cfg, torch.device("cpu")), cfg, cross_entropy, fast=False
    )
    for p, q in zip(fast.parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.tensor(log_fast.losses), torch.tensor(log_slow.losses), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fast.W, experiment.build_encoder(cfg, source).W)  # it really trained


def test_a_digits_run_takes_every_fast_path_and_reports_certificates(monkeypatch):
    calls = {"stacked": 0, "closed_form": 0}
    real_stacked, real_fused = batched.pretrain_stacked, fused.fused_loss

    def stacked(*a, **k):
        calls["stacked"] += 1
        return real_stacked(*a, **k)

    def closed(*a, **k):
        out = real_fused(*a, **k)
        calls["closed_form"] += out is not None
        return out

    monkeypatch.setattr(batched, "pretrain_stacked", stacked)
    monkeypatch.setattr(fused, "fused_loss", closed)
    import robinherit.evaluation.robust as evaluation

    monkeypatch.setattr(evaluation, "fused_loss", closed)
    rec, art = experiment.run_experiment(digits_cfg())
    assert calls["stacked"] == 1  # pre-training went through the stacked (closed-form) step
    assert calls["closed_form"] >= 3  # the evaluation attacks of the pre-trained model and both heads
    assert "center" in art["encoder"]
    for section in (rec["pretrain"], rec["downstream"]["clean_head"], rec["downstream"]["adversarial_head"]):
        cert, rob = section["certified_acc"], section["robust_acc"]
        assert set(cert) == set(rob) == {"0", "0.5", "1"}
        assert all(cert[k] <= rob[k] + 1e-12 for k in rob)
        assert cert["0.5"] > 0 or rob["0.5"] == 0  # the certificate is not vacuous where something is robust
    assert rec["pretrain"]["clean_acc"] > 0.5  # 10 digit classes: the pre-trained model really learned
