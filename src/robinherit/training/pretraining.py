"""Pre-training of the two-layer encoder: clean or adversarial (Madry et al. 2018) supervised training.

Adversarial training replaces each batch by the output of the inner maximisation (PGD-K or FGM) of
the same per-example loss before the optimiser step (``robinherit.training.step.adversarial_step``). Methods are a
registry: ``PRETRAINERS[method]``.
Contrastive pre-training: SimCLR (Chen et al. 2020), adversarial as in RoCL (Kim et al. 2020).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import torch
from torch import Tensor, nn

from robinherit.attacks.gradient import training_attack
from robinherit.config import AdversarialView, ExperimentConfig, Method
from robinherit.data.augment import make_views
from robinherit.models.two_layer import projector_weight
from robinherit.ops.closed_form import attack_loss, info_nce_view_loss
from robinherit.ops.losses import info_nce, multilabel_bce
from robinherit.seeding import generator
from robinherit.training import stacked as batched
from robinherit.training.optim import PretrainLog, check_finite, make_optimizer, optimizer_step
from robinherit.training.step import adversarial_step
from robinherit.world.sparse_coding import Batch

StepCallback = Callable[[int, int], None]


class Stream(Protocol):
    def next(self) -> Batch: ...


def pretrain_attack(cfg: ExperimentConfig) -> Callable[[Callable[[Tensor], Tensor], Tensor], Tensor]:
    """The inner maximisation of ``cfg``'s adversarial pre-training, drawing its random starts from the seed's
    ``pretrain-attack`` stream (supervised and contrastive alike)."""
    pcfg = cfg.pretrain
    return training_attack(
        pcfg.attack,
        eps=pcfg.eps,
        norm=pcfg.norm,
        steps=pcfg.attack_steps,
        generator=generator(cfg.seed, "pretrain-attack", cfg.device),
    )


def pretrain_supervised(
    model: nn.Module,
    stream: Stream,
    cfg: ExperimentConfig,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = multilabel_bce,
    on_step: StepCallback | None = None,
    fast: bool = True,
) -> PretrainLog:
    """Supervised pre-training on ``stream``'s targets; adversarial when ``cfg.pretrain.eps > 0``.

    With ``fast`` (the default) the two-layer network trains as a stack of one model
    (``robinherit.training.stacked``: closed-form attack and parameter gradients, the same iterates up to float
    rounding); other models, and ``fast=False``, take the generic loop below (autograd training step).
    """
    if fast and batched.supports(model, cfg):
        return batched.pretrain_one(model, stream, cfg, loss_fn, on_step)
    pcfg = cfg.pretrain
    opt = make_optimizer(list(model.parameters()), pcfg)
    attack = pretrain_attack(cfg)
    log = PretrainLog()

    def train_loss(x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(model(x), y).mean()

    def loss_at_weights(y: Tensor) -> Callable[[Tensor], Tensor]:  # closed-form input gradient where ops has one
        return attack_loss(model, loss_fn, y)

    for step in range(pcfg.steps):
        batch = stream.next()
        value = adversarial_step(
            batch.x,
            batch.y,
            train_loss,
            partial(optimizer_step, opt, step=step, cfg=pcfg),
            attack=attack if pcfg.eps > 0 else None,
            attack_loss=loss_at_weights,
        )
        log.add(step, value)
        if on_step is not None:
            on_step(step + 1, pcfg.steps)
    return log


def adversarial_view(
    attack: Callable[[Callable[[Tensor], Tensor], Tensor], Tensor],
    embed: Callable[[Tensor], Tensor],
    x: Tensor,
    partner: Tensor,
    temperature: float,
    closed_form: Callable[[Tensor], Callable[[Tensor], Tensor] | None] | None = None,
) -> Tensor:
    """RoCL's instance-wise attack: move view ``x`` to maximise each example's InfoNCE against ``partner``.

    The partner view's embedding is held fixed (no gradient flows into it); the rest of the batch serves
    as negatives, as in training. Returns the perturbed view, (n, d). ``closed_form(target)``, where given,
    builds the same loss with a closed-form input gradient (``closed_form.info_nce_view_loss``), or returns None.
    """
    with torch.no_grad():
        target = embed(partner)
    loss = closed_form(target) if closed_form is not None else None
    if loss is None:
        loss = lambda xa: info_nce(embed(xa), target, temperature)  # noqa: E731 - the autograd closure
    return attack(loss, x)


def pretrain_contrastive(
    model: nn.Module, stream: Stream, cfg: ExperimentConfig, on_step: StepCallback | None = None, fast: bool = True
) -> PretrainLog:
    """SimCLR-style contrastive pre-training of the encoder; RoCL-style adversarial when ``cfg.pretrain.eps > 0``.

    Clean: InfoNCE between two augmented views of each batch, on the hidden features h(x) (or a linear
    projection of them when ``pretrain.projector_dim > 0``; the projector is discarded afterwards, only
    the encoder goes downstream). The model's ``head`` is not trained.

    Adversarial (Kim et al. 2020, "Adversarial Self-Supervised Contrastive Learning"): an instance-wise
    attack (PGD or FGM, ``pretrain.attack``) moves one view to maximise its contrastive loss against the
    other, clean view, with the rest of the batch as negatives; the step is then taken on the perturbed
    view. ``adversarial_view=both`` perturbs each view against the other clean one.

    With ``fast`` (the default) the two-layer network trains as a stack of one model wherever
    ``batched.supports`` says so (``batched.pretrain_contrastive_one``: closed-form attack and training step, the
    same iterates up to float rounding); other models, and ``fast=False``, take :func:`pretrain_contrastive_generic`
    (autograd training step and attack: a model the stack rejects has no closed-form view loss either, e.g. a
    temperature below ``fused.MIN_CLOSED_FORM_TEMPERATURE``; ``closed_form_attack=True`` there, which
    ``benchmarks.contrastive_step`` times, pairs the closed-form attack with the autograd step).
    """
    if fast and batched.supports(model, cfg):
        return batched.pretrain_contrastive_one(model, stream, cfg, on_step)
    return pretrain_contrastive_generic(model, stream, cfg, on_step, closed_form_attack=fast)


def pretrain_contrastive_generic(
    model: nn.Module,
    stream: Stream,
    cfg: ExperimentConfig,
    on_step: StepCallback | None = None,
    closed_form_attack: bool = True,
) -> PretrainLog:
    """:func:`pretrain_contrastive`'s loop for any encoder: autograd through ``losses.info_nce`` for the training
    step; the attack differentiates by autograd too unless ``closed_form_attack`` and ``fused.info_nce_view_loss``
    has a closed form for the model. The reference the stacked path is tested against."""
    pcfg = cfg.pretrain
    dev = torch.device(cfg.device)
    views = make_views(pcfg, getattr(stream, "world", None), cfg.seed, dev)
    first = stream.next()
    with torch.no_grad():  # the feature size, whatever the encoder (two-layer, or a conv net on real data)
        width = model.features(first.x[:1]).shape[1]
    projector: nn.Module = nn.Identity()
    if pcfg.projector_dim > 0:
        # skip_init: the default initialisation would draw from (and so move) torch's global random stream
        projector = nn.utils.skip_init(nn.Linear, width, pcfg.projector_dim, bias=False)
        with torch.no_grad():
            projector.weight.copy_(projector_weight(pcfg.projector_dim, width, generator(cfg.seed, "projector")))
        projector = projector.to(dev)
    head_params = {id(p) for p in model.head.parameters()}
    encoder_params = [p for p in model.parameters() if id(p) not in head_params]
    opt = make_optimizer(encoder_params + list(projector.parameters()), pcfg)
    attack = pretrain_attack(cfg)

    def embed(x: Tensor) -> Tensor:
        return projector(model.features(x))  # (n, m) or (n, projector_dim)

    def closed_form(target: Tensor) -> Callable[[Tensor], Tensor] | None:
        return info_nce_view_loss(model, projector, target, pcfg.temperature) if closed_form_attack else None

    def attack_against(x: Tensor, other: Tensor) -> Tensor:
        return adversarial_view(attack, embed, x, other, pcfg.temperature, closed_form)

    log = PretrainLog()
    for step in range(pcfg.steps):
        batch = first if step == 0 else stream.next()
        v1, v2 = views(batch), views(batch)  # (n, d) each
        if pcfg.eps > 0:
            a1 = attack_against(v1, v2)
            v2 = attack_against(v2, v1) if pcfg.adversarial_view == AdversarialView.both else v2
            v1 = a1
        log.add(step, optimizer_step(opt, info_nce(embed(v1), embed(v2), pcfg.temperature).mean(), step, pcfg))
        if on_step is not None:
            on_step(step + 1, pcfg.steps)
    return log


# method -> pre-training function(model, stream, cfg, on_step=...) -> PretrainLog
PRETRAINERS: dict[Method, Callable[..., PretrainLog]] = {
    Method.supervised: pretrain_supervised,
    Method.contrastive: pretrain_contrastive,
}

# The training loop's shared pieces live in robinherit.training.optim; they are re-exported here, where callers of the
# pre-trainers have always found them.
__all__ = [
    "PRETRAINERS",
    "PretrainLog",
    "adversarial_view",
    "check_finite",
    "make_optimizer",
    "optimizer_step",
    "pretrain_contrastive",
    "pretrain_contrastive_generic",
    "pretrain_supervised",
]
