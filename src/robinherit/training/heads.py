"""Downstream heads on a frozen pre-trained encoder.

A *clean* head is plain logistic regression on the features (standard linear fine-tuning, SLF); an
*adversarial* head is trained on PGD examples crafted through the frozen encoder (adversarial linear
fine-tuning, ALF). Robustness inheritance is the claim that SLF on adversarially pre-trained features is
already robust.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from robinherit.attacks.gradient import pgd
from robinherit.config import DownstreamConfig, HeadKind, Norm
from robinherit.evaluation.robust import forward
from robinherit.models.encoder import CLOSED_FORM, supports
from robinherit.models.two_layer import LinearHead
from robinherit.models.units import uniform_threshold
from robinherit.ops.closed_form import TwoLayerLoss, attack_loss
from robinherit.ops.losses import cross_entropy
from robinherit.ops.stack_grads import per_example
from robinherit.training.optim import make_stepper
from robinherit.training.step import adversarial_step


def head_steps(n: int, cfg: DownstreamConfig) -> int:
    """Optimiser steps of a head on ``n`` examples: ``steps``, or ``epochs`` passes of ``batch_size`` minibatches."""
    if cfg.epochs is None:
        return cfg.steps
    per_epoch = 1 if cfg.batch_size is None else math.ceil(n / min(cfg.batch_size, n))
    return cfg.epochs * per_epoch


def head_rows(n: int, cfg: DownstreamConfig) -> int:
    """Training rows a head's optimiser steps see in all (what :func:`batches` yields, summed): ``steps`` x ``n``
    full batch; with minibatches, every epoch is ``n`` rows, a started one counted by its batches."""
    steps = head_steps(n, cfg)
    if cfg.batch_size is None or cfg.batch_size >= n:
        return steps * n
    per_epoch = math.ceil(n / cfg.batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * n + min(rest * cfg.batch_size, n)


def batches(n: int, cfg: DownstreamConfig, g: torch.Generator) -> Iterator[Tensor | slice]:
    """The rows of each optimiser step (``head_steps``): all of them every step (full batch, ``batch_size`` None),
    or consecutive minibatches of epochs over a fresh shuffle each (the field's SLF / ALF protocol: epochs over
    minibatches, so an adversarial head attacks a minibatch per step, not the whole training set)."""
    steps = head_steps(n, cfg)
    if cfg.batch_size is None or cfg.batch_size >= n:
        for _ in range(steps):
            yield slice(None)
        return
    done = 0
    while True:
        order = torch.randperm(n, generator=g, device=g.device)
        for start in range(0, n, cfg.batch_size):
            if done == steps:
                return
            yield order[start : start + cfg.batch_size]
            done += 1


def _train_clean(
    head: LinearHead, x: Tensor, y: Tensor, cfg: DownstreamConfig, *, g: torch.Generator, **_: object
) -> None:
    # the encoder is frozen: its features are computed once, a minibatch at a time (a deep encoder's activations of a
    # whole training split at once would not fit in memory; each example's features are the same either way)
    feats = forward(head.encoder.features, x, cfg.batch_size)
    step = make_stepper(head.linear.parameters(), cfg, head_steps(x.shape[0], cfg))
    for rows in batches(x.shape[0], cfg, g):
        step(cross_entropy(head.linear(feats[rows]), y[rows]).mean())


def _train_adversarial(
    head: LinearHead,
    x: Tensor,
    y: Tensor,
    cfg: DownstreamConfig,
    *,
    norm: Norm,
    g: torch.Generator,
    clip: tuple[float, float] | None = None,
) -> None:
    step = make_stepper(head.linear.parameters(), cfg, head_steps(x.shape[0], cfg))

    def attack(loss: Callable[[Tensor], Tensor], xb: Tensor) -> Tensor:
        return pgd(loss, xb, eps=cfg.eps, norm=norm, steps=cfg.attack_steps, generator=g, clip=clip)

    def loss_at_weights(yb: Tensor) -> Callable[[Tensor], Tensor]:  # closed-form input gradient, current weights
        return attack_loss(head, cross_entropy, yb)

    def train_loss(xb: Tensor, yb: Tensor) -> Tensor:
        return cross_entropy(head(xb), yb).mean()

    for rows in batches(x.shape[0], cfg, g):
        adversarial_step(x[rows], y[rows], train_loss, step, attack=attack, attack_loss=loss_at_weights)


HEAD_TRAINERS: dict[HeadKind, Callable[..., None]] = {
    HeadKind.clean: _train_clean,
    HeadKind.adversarial: _train_adversarial,
}


def train_head(
    encoder: nn.Module,
    width: int,
    n_classes: int,
    x: Tensor,
    y: Tensor,
    kind: HeadKind,
    cfg: DownstreamConfig,
    *,
    norm: Norm,
    g: torch.Generator,
    clip: tuple[float, float] | None = None,
) -> LinearHead:
    """Train a linear head of ``kind`` on frozen ``encoder`` features of (x, y). The encoder is frozen in full:
    gradients off and eval mode, so its batch-norm statistics and dropout do not move while the head trains."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder.eval()
    head = LinearHead(encoder, width, n_classes).to(x.device).eval()  # a linear head has no mode of its own
    HEAD_TRAINERS[HeadKind(kind)](head, x, y, cfg, norm=norm, g=g, clip=clip)
    return head


def train_heads(
    encoder: nn.Module,
    width: int,
    n_classes: int,
    x: Tensor,
    ys: Sequence[Tensor],
    kind: HeadKind,
    cfg: DownstreamConfig,
    *,
    norm: Norm,
    gens: Sequence[torch.Generator],
    clip: tuple[float, float] | None = None,
) -> list[LinearHead]:
    """Heads of one ``kind`` on one frozen encoder and one set of inputs ``x``, head s trained on the labels ``ys[s]``
    with the random stream ``gens[s]``: what :func:`train_head` gives for each, trained as one stack.

    Every head takes its own minibatches, random starts and optimiser state, drawn in the order its own
    ``train_head`` draws them; the stack runs the steps of all heads as one batched computation (closed-form PGD
    through the shared encoder, ``attacks.gradient.pgd`` on the stack; one optimiser over the stacked weights,
    whose update is elementwise, so each head's is its own). Equal to the heads trained one by one up to float rounding
    (``tests/test_downstream.py``). Encoders without the ``closed_form``
    capability (``models.encoder``), and clipped inputs, train one by one.
    """
    if not supports(encoder, CLOSED_FORM) or clip is not None or len(ys) < 2:
        return [
            train_head(encoder, width, n_classes, x, y, kind, cfg, norm=norm, g=g, clip=clip)
            for y, g in zip(ys, gens, strict=True)
        ]
    for p in encoder.parameters():
        p.requires_grad_(False)
    encoder.eval()
    S, dev = len(ys), x.device
    V = nn.Parameter(torch.zeros(S, n_classes, width, device=dev, dtype=x.dtype))
    c = nn.Parameter(torch.zeros(S, n_classes, device=dev, dtype=x.dtype))
    _train_stack(encoder, V, c, x, ys, HeadKind(kind) == HeadKind.adversarial, cfg, norm=norm, gens=gens)
    heads = []
    for s in range(S):
        head = LinearHead(encoder, width, n_classes).to(dev).eval()
        with torch.no_grad():
            head.linear.weight.copy_(V[s])
            head.linear.bias.copy_(c[s])
        heads.append(head)
    return heads


def _train_stack(
    encoder: nn.Module,  # with the closed_form capability
    V: nn.Parameter,
    c: nn.Parameter,
    x: Tensor,
    ys: Sequence[Tensor],
    adversarial: bool,
    cfg: DownstreamConfig,
    *,
    norm: Norm,
    gens: Sequence[torch.Generator],
) -> None:
    """:func:`train_heads`' steps on the stacked head weights V (S, K, m) and biases c (S, K)."""
    S = len(ys)
    step = make_stepper([V, c], cfg, head_steps(x.shape[0], cfg))
    y = torch.stack(list(ys))  # (S, n)
    orders = [batches(x.shape[0], cfg, g) for g in gens]
    # frozen: the same every step (and so the threshold can be one float, activations.uniform_threshold)
    w, b = encoder.weight().detach(), uniform_threshold(encoder.threshold())

    def logits(features: Tensor) -> Tensor:  # (S, B, m) -> (S, B, K)
        return torch.baddbmm(c[:, None, :], features, V.transpose(1, 2))

    def attack(loss: Callable[[Tensor], Tensor], xb: Tensor) -> Tensor:  # each head at its own start, as alone
        return pgd(loss, xb, eps=[cfg.eps] * S, norm=norm, steps=cfg.attack_steps, generator=gens)

    def loss_at_weights(yb: Tensor) -> TwoLayerLoss:  # through the shared encoder, at the heads' current weights
        return TwoLayerLoss(
            weight=w,
            threshold=b,
            head_weight=V.detach(),
            head_bias=c.detach()[:, None, :],
            activation=encoder.cfg.activation,
            loss=cross_entropy,
            targets=yb,
            center=encoder.center,
        )

    def train_loss(xb: Tensor, yb: Tensor) -> Tensor:  # each head's own mean loss, summed
        return per_example(cross_entropy, logits(encoder.features(xb)), yb).mean(dim=1).sum()

    # the encoder is frozen: clean features once, a minibatch at a time (as in ``_train_clean``)
    feats = None if adversarial else forward(encoder.features, x, cfg.batch_size)
    for rows in zip(*orders, strict=True):
        yb = torch.stack([y[s][r] for s, r in enumerate(rows)])  # (S, B)
        if adversarial:
            xb = torch.stack([x[r] for r in rows])  # (S, B, d)
            adversarial_step(xb, yb, train_loss, step, attack=attack, attack_loss=loss_at_weights)
        else:
            fb = torch.stack([feats[r] for r in rows])  # (S, B, m)
            step(per_example(cross_entropy, logits(fb), yb).mean(dim=1).sum())
