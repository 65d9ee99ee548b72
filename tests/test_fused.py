"""Closed-form input gradients (robinherit.ops.closed_form) against autograd, and their use inside the attacks."""

from __future__ import annotations

import pytest
import torch

from robinherit.attacks.gradient import fgm, input_grad, pgd
from robinherit.config import Activation, ExperimentConfig, ModelConfig, Norm, with_updates
from robinherit.models.two_layer import LinearHead, build_model
from robinherit.ops.closed_form import LOSS_GRADS, TwoLayerLoss, attack_loss, fused_loss
from robinherit.ops.losses import class_margin, cross_entropy, multilabel_bce, multilabel_margin
from robinherit.training import pretraining
from robinherit.world.sparse_coding import BatchStream, make_world

D, WIDTH, N = 12, 24, 40


def _model(activation: Activation, normalize: bool, n_out: int, seed: int = 0):
    cfg = ModelConfig(width=WIDTH, activation=activation, threshold=0.2, normalize_rows=normalize)
    g = torch.Generator().manual_seed(seed)
    model = build_model(D, cfg, n_out, g)
    with torch.no_grad():  # non-zero head bias and uneven row norms, so nothing cancels by accident
        model.head.bias.normal_(generator=g)
        model.W.mul_(torch.rand(WIDTH, 1, generator=g) * 2 + 0.5)
    return model.freeze()


def _targets(loss_fn, n_out: int, g: torch.Generator) -> torch.Tensor:
    if loss_fn in (multilabel_bce, multilabel_margin):
        return torch.randint(0, 2, (N, n_out), generator=g).float()
    return torch.randint(0, n_out, (N,), generator=g)


def _autograd(model, loss_fn, y, x, sign=1.0):
    return input_grad(lambda xa: sign * loss_fn(model(xa), y), x)


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("loss_fn", list(LOSS_GRADS))
def test_value_and_grad_equal_autograd(activation, normalize, loss_fn):
    g = torch.Generator().manual_seed(1)
    n_out = 3
    model = _model(activation, normalize, n_out)
    x = torch.randn(N, D, generator=g)
    y = _targets(loss_fn, n_out, g)
    for sign in (1.0, -1.0):
        fused = fused_loss(model, loss_fn, y, sign=sign)
        loss, grad = fused.value_and_grad(x)
        ref_loss, ref_grad = _autograd(model, loss_fn, y, x, sign)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused(x), ref_loss, rtol=1e-5, atol=1e-6)
    # the activation mask matters: a dense, linear gradient would be a plausible wrong answer
    assert 0 < (model.features(x) == 0).float().mean() < 1


def test_linear_head_on_frozen_encoder():
    g = torch.Generator().manual_seed(2)
    encoder = _model(Activation.sym_relu, True, 1)
    head = LinearHead(encoder, WIDTH, 2)
    with torch.no_grad():
        head.linear.weight.normal_(generator=g)
        head.linear.bias.normal_(generator=g)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(0, 2, (N,), generator=g)
    for loss_fn in (cross_entropy, class_margin):
        loss, grad = fused_loss(head, loss_fn, y).value_and_grad(x)
        ref_loss, ref_grad = _autograd(head, loss_fn, y, x)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_stacked_models_equal_one_by_one():
    g = torch.Generator().manual_seed(3)
    models = [_model(Activation.sym_relu, True, 2, seed=s) for s in range(3)]
    x = torch.randn(3, N, D, generator=g)
    y = torch.randint(0, 2, (3, N, 2), generator=g).float()
    stacked = TwoLayerLoss(
        weight=torch.stack([m.weight() for m in models]),
        threshold=torch.stack([m.threshold() for m in models])[:, None, :],
        head_weight=torch.stack([m.head.weight for m in models]),
        head_bias=torch.stack([m.head.bias for m in models])[:, None, :],
        activation=Activation.sym_relu,
        loss=multilabel_bce,
        targets=y,
    )
    loss, grad = stacked.value_and_grad(x)
    assert loss.shape == (3, N) and grad.shape == (3, N, D)
    for s, m in enumerate(models):
        ref_loss, ref_grad = _autograd(m, multilabel_bce, y[s], x[s])
        torch.testing.assert_close(loss[s], ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[s], ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", list(Norm))
def test_attacks_take_the_closed_form_path_with_the_same_result(norm):
    model = _model(Activation.sym_relu, True, 1)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(0, 2, (N, 1), generator=g).float()
    fused = fused_loss(model, multilabel_bce, y)
    for attack in (pgd, fgm):
        kw = dict(eps=0.3, norm=norm, steps=7, restarts=2)
        a = attack(fused, x, generator=torch.Generator().manual_seed(5), **kw)
        b = attack(lambda xa: multilabel_bce(model(xa), y), x, generator=torch.Generator().manual_seed(5), **kw)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert not torch.equal(a, x)


def test_fallback_for_losses_and_models_without_a_closed_form():
    model = _model(Activation.sym_relu, True, 1)
    y = torch.zeros(N, 1)

    def custom(logits, targets):
        return (logits - targets).pow(2).mean(dim=1)

    assert fused_loss(model, custom, y) is None
    assert fused_loss(torch.nn.Linear(D, 1), multilabel_bce, y) is None
    closure = attack_loss(model, custom, y)
    assert not hasattr(closure, "value_and_grad")
    x = torch.randn(N, D)
    torch.testing.assert_close(closure(x), custom(model(x), y))
    assert isinstance(attack_loss(model, multilabel_bce, y), TwoLayerLoss)


def test_adversarial_pretraining_with_closed_form_matches_autograd(monkeypatch):
    cfg = with_updates(
        ExperimentConfig(),
        **{"data.d": 16, "model.width": 32, "pretrain.steps": 30, "pretrain.batch_size": 64},
    )

    def train(fast: bool):
        world = make_world(cfg.data, cfg.seed)
        stream = BatchStream(world, cfg.pretrain.batch_size, cfg.seed)
        model = build_model(16, cfg.model, 1, torch.Generator().manual_seed(0))
        pretraining.pretrain_supervised(model, stream, cfg, fast=fast)
        return model.W.detach().clone()

    # fast: a stack of one (closed-form attack and weight gradients); slow: autograd for both
    fast = train(True)
    monkeypatch.setattr(pretraining, "attack_loss", lambda model, loss_fn, y: lambda x: loss_fn(model(x), y))
    slow = train(False)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_adversarial_head_with_closed_form_matches_autograd(monkeypatch):
    from robinherit.config import DownstreamConfig, HeadKind
    from robinherit.training import heads as downstream

    g = torch.Generator().manual_seed(3)
    encoder = _model(Activation.sym_relu, True, 1)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(0, 2, (N,), generator=g)
    cfg = DownstreamConfig(steps=20, eps=0.3)

    def head_weights():
        head = downstream.train_head(
            encoder, WIDTH, 2, x, y, HeadKind.adversarial, cfg, norm=Norm.l2, g=torch.Generator().manual_seed(0)
        )
        return head.linear.weight.detach().clone()

    calls = []
    real = downstream.attack_loss
    monkeypatch.setattr(downstream, "attack_loss", lambda *a: calls.append(1) or real(*a))
    fast = head_weights()
    assert len(calls) == cfg.steps  # one closed-form loss per step, at the head's weights of that step
    assert isinstance(real(LinearHead(encoder, WIDTH, 2), cross_entropy, y), TwoLayerLoss)
    monkeypatch.setattr(downstream, "attack_loss", lambda model, loss_fn, t: lambda xa: loss_fn(model(xa), t))
    slow = head_weights()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_evaluation_attacks_with_closed_form_give_the_autograd_result():
    from robinherit.evaluation.robust import evaluate

    g = torch.Generator().manual_seed(4)
    head = LinearHead(_model(Activation.sym_relu, True, 1), WIDTH, 2)
    with torch.no_grad():
        head.linear.weight.normal_(generator=g)
    x = torch.randn(200, D, generator=g)
    with torch.no_grad():
        y = head(x).argmax(dim=1)  # every example starts correct, so each budget has examples to break
    common = dict(eps_grid=(0.0, 0.1, 0.3, 1.0), norm=Norm.l2, steps=10, restarts=2, certify=False, flip_check=False)
    fast = evaluate(head, x, y, class_margin, g=torch.Generator().manual_seed(0), **common)
    slow = evaluate(lambda xa: head(xa), x, y, class_margin, g=torch.Generator().manual_seed(0), **common)
    assert fast.robust_acc["0.3"] < 1.0  # the attack breaks something, so the comparison is not vacuous
    for eps, acc in slow.robust_acc.items():
        assert abs(fast.robust_acc[eps] - acc) <= 1 / 200  # same iterates up to rounding: at most one flip


@pytest.mark.parametrize("shape", [(40, 24), (3, 40, 24)])
@pytest.mark.parametrize("k", [1, 3])
def test_back_through_head_is_the_matmul_to_the_bit(shape, k):
    from robinherit.ops.closed_form import back_through_head

    g = torch.Generator().manual_seed(9)
    lead, (n, m) = shape[:-2], shape[-2:]
    g_logits, head = torch.randn(*lead, n, k, generator=g), torch.randn(*lead, k, m, generator=g)
    assert torch.equal(back_through_head(g_logits, head), g_logits @ head)
