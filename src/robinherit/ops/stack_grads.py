"""Closed-form losses and gradients of a stack of two-layer networks (``robinherit.models.stacked``): the backward
passes of supervised training and of SimCLR's InfoNCE (Chen et al. 2020) written out for S models at once, and the
losses the attacks of adversarial training (Madry et al. 2018; RoCL, Kim et al. 2020) maximise on a stack. Pure
functions of tensors where they can be, so ``torch.compile`` takes them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robinherit.config import ModelConfig
from robinherit.models.stacked import StackedTwoLayer
from robinherit.models.units import Threshold, active_grad, row_norms, unit
from robinherit.ops.closed_form import (
    InfoNCEViewLoss,
    TwoLayerLoss,
    back_through_head,
    embed,
    first_layer,
    info_nce_and_grad,
    view_loss,
)
from robinherit.ops.losses import LOSS_GRADS


def per_example(loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, targets: Tensor) -> Tensor:
    """A per-example loss of ``robinherit.ops.losses`` on stacked (S, n, ...) inputs -> (S, n)."""
    S, n = logits.shape[:2]
    return loss_fn(logits.reshape(S * n, *logits.shape[2:]), targets.reshape(S * n, *targets.shape[2:])).reshape(S, n)


def stack_attack_loss(
    net: StackedTwoLayer, loss_fn: Callable[[Tensor, Tensor], Tensor], targets: Tensor
) -> TwoLayerLoss:
    """The per-model loss (S, n) of ``net`` at its current weights, with closed-form input gradients: what the
    attacks of stacked adversarial training maximise."""
    return TwoLayerLoss(
        weight=net.weight().detach(),
        threshold=net.threshold().detach(),
        head_weight=net.V.detach(),
        head_bias=net.c.detach()[:, None, :],
        activation=net.cfg.activation,
        loss=loss_fn,
        targets=targets,
    )


@torch.no_grad()
def stack_loss_and_grads(
    net: StackedTwoLayer, x: Tensor, targets: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Mean loss per model (S,) on (S, n, d) inputs; sets every trainable parameter's ``.grad`` in closed form
    (:func:`closed_form_grads`)."""
    loss, (g_w, g_b, g_v, g_c) = closed_form_grads(
        net.W, net.b, net.V, net.c, x, targets, LOSS_GRADS[loss_fn], net.cfg, net.b.requires_grad
    )
    net.W.grad, net.V.grad, net.c.grad = g_w, g_v, g_c
    if g_b is not None:
        net.b.grad = g_b
    return loss


def closed_form_grads(
    W: Tensor,
    b: Tensor,
    V: Tensor,
    c: Tensor,
    x: Tensor,
    targets: Tensor,
    loss_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    cfg: ModelConfig,
    learn_b: bool,
    threshold: float | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor, Tensor]]:
    """Mean loss per model (S,) and the gradients (dW, db or None, dV, dc) of the stack's summed mean losses.

    The backward pass of ``StackedTwoLayer.forward`` written out (what autograd would compute), which spares
    the graph and the four-op activation of the autograd path: with g = dL/dlogits / n, dV = g^T h,
    dc = sum_n g, dU = (g V) * act'(u), dW_eff = dU^T x, and through w / ||w||:
    dW = (dW_eff - w_hat <w_hat, dW_eff>) / ||w||. A pure function of tensors, so it can be compiled.
    ``threshold``: b as one float where it is fixed and the same for every unit (``StackedTwoLayer.fixed_threshold``).
    """
    n = x.shape[1]
    w, norms, u, h, thr = _first_layer(W, b, x, cfg, threshold)
    logits = torch.baddbmm(c[:, None, :], h, V.transpose(1, 2))  # (S, n, K)
    loss, g = loss_grad(logits, targets)  # (S, n), (S, n, K)
    g = g / n
    g_v = g.transpose(1, 2) @ h  # (S, K, m)
    g_c = g.sum(dim=1)  # (S, K)
    g_u = unit(cfg.activation).active(back_through_head(g, V), u, h, thr, overwrite=True)  # (S, n, m)
    g_w, g_b = _first_layer_grads(g_u, u, x, w, norms, b, cfg, learn_b)
    return loss.mean(dim=1), (g_w, g_b, g_v, g_c)


def _first_layer(
    W: Tensor, b: Tensor, x: Tensor, cfg: ModelConfig, threshold: float | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Threshold]:
    """The stacked first layer's forward from raw parameters, keeping what its backward (``_first_layer_grads``)
    needs: effective weights w (S, m, d), row norms (S, m, 1), pre-activations u = x w^T, features h (S, n, m)
    and the threshold they used (``threshold`` where given, else b's, (S, 1, m))."""
    norms = row_norms(W)
    w = W / norms if cfg.normalize_rows else W
    u = first_layer(x, w)
    thr = b.clamp_min(0.0)[:, None, :] if threshold is None else threshold
    return w, norms, u, unit(cfg.activation).fast(u, thr), thr


def _first_layer_grads(
    g_u: Tensor, u: Tensor, x: Tensor, w: Tensor, norms: Tensor, b: Tensor, cfg: ModelConfig, learn_b: bool
) -> tuple[Tensor, Tensor | None]:
    """(dW, db or None) from the gradient at the pre-activations g_u = dL/du (S, n, m), u = x w^T, w the effective
    weights (W / ||W|| with ``normalize_rows``, whose row norms are ``norms``)."""
    g_w = g_u.transpose(1, 2) @ x  # (S, m, d)
    if cfg.normalize_rows:
        g_w = (g_w - w * (g_w * w).sum(dim=2, keepdim=True)) / norms
    g_b = None
    if learn_b:
        # dh/db = -threshold_sign(u) where the unit is active (g_u is 0 elsewhere); clamp_min(0) passes b >= 0.
        g_b = -(g_u * unit(cfg.activation).threshold_sign(u)).sum(dim=1) * (b >= 0)
    return g_w, g_b


def contrastive_grads(
    W: Tensor,
    b: Tensor,
    P: Tensor | None,
    x1: Tensor,
    x2: Tensor,
    *,
    temperature: float,
    cfg: ModelConfig,
    learn_b: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor | None]]:
    """Mean InfoNCE per model (S,) of the views x1, x2 (S, n, d) and the gradients (dW, db or None, dP or None) of
    the stack's summed mean losses: the backward pass of the training step of
    ``robinherit.training.pretraining.pretrain_contrastive`` written out (what autograd computes
    through ``losses.info_nce``).

    Both views go through the encoder as one batch of 2n, e = act(x w^T, b) P^T (P the optional linear
    projector (S, k, m)); ``closed_form.info_nce_and_grad`` gives dL/de in closed form, and from there
    dP = g_e^T h, dU = (g_e P) * act'(u), and the first layer as in :func:`closed_form_grads`. The model's head
    takes no part. A pure function of tensors.
    """
    n = x1.shape[1]
    x = torch.cat([x1, x2], dim=1)  # (S, 2n, d)
    w, norms, u, h, _ = _first_layer(W, b, x, cfg)  # u, h (S, 2n, m)
    e = h if P is None else h @ P.transpose(1, 2)  # (S, 2n, k)
    loss, g_e = info_nce_and_grad(e, temperature)  # (S, n), (S, 2n, k)
    g_e = g_e.div_(n)  # of the mean over the batch
    g_p = None if P is None else g_e.transpose(1, 2) @ h  # (S, k, m)
    g_u = active_grad(g_e if P is None else g_e @ P, h)  # (S, 2n, m)
    g_w, g_b = _first_layer_grads(g_u, u, x, w, norms, b, cfg, learn_b)
    return loss.mean(dim=1), (g_w, g_b, g_p)


def stacked_view_loss(
    net: StackedTwoLayer, projector: Tensor | None, partner: Tensor, temperature: float
) -> InfoNCEViewLoss:
    """The RoCL attack's loss on the stack (``closed_form.InfoNCEViewLoss``, closed-form input gradient) at the current
    weights, against the partner views ``partner`` (S, n, d, centred), whose embeddings are held fixed."""
    w, thr = net.weight().detach(), net.threshold().detach()  # effective weights, once for both uses
    p = None if projector is None else projector.detach()
    with torch.no_grad():
        _, target = embed(partner, w, thr, net.cfg.activation, p)
    return view_loss(w, thr, net.cfg.activation, p, target, temperature)


__all__ = [
    "closed_form_grads",
    "contrastive_grads",
    "per_example",
    "stack_attack_loss",
    "stack_loss_and_grads",
    "stacked_view_loss",
]
