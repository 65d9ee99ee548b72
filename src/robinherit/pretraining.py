"""Pre-training of the two-layer encoder: clean or adversarial (Madry et al. 2018) supervised training.

Adversarial training replaces each batch by the output of the inner maximisation (PGD-K or FGM) of
the same per-example loss before the optimiser step. Methods are a registry: ``PRETRAINERS[method]``.
Contrastive pre-training: SimCLR (Chen et al. 2020), adversarial as in RoCL (Kim et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from robinherit.attacks import training_attack
from robinherit.augment import make_views
from robinherit.config import AdversarialView, ExperimentConfig, Method, Optimizer, PretrainConfig
from robinherit.data import Batch
from robinherit.errors import NonFiniteLossError
from robinherit.fused import attack_loss, info_nce_view_loss
from robinherit.losses import info_nce, multilabel_bce
from robinherit.seeding import generator

StepCallback = Callable[[int, int], None]


class Stream(Protocol):
    def next(self) -> Batch: ...


@dataclass
class PretrainLog:
    losses: list[float] = field(default_factory=list)  # mean loss of every ``log_every``-th step
    log_every: int = 50
    _running: float = 0.0

    def add(self, step: int, loss: float) -> None:
        """Accumulate the loss of ``step`` (0-based); close a window every ``log_every`` steps."""
        self._running += loss
        if (step + 1) % self.log_every == 0:
            self.losses.append(self._running / self.log_every)
            self._running = 0.0


def optimizer_step(opt: torch.optim.Optimizer, loss: Tensor, step: int, cfg: PretrainConfig) -> float:
    """Check the loss is finite, then one optimiser step on it; returns its value."""
    check_finite(loss, step, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def make_optimizer(params: list[nn.Parameter], cfg: PretrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """Adam or SGD with momentum 0.9. ``fused``: Adam's one-kernel implementation where torch has it (the same
    update, rounded differently; the stacked path uses it, the generic loop keeps the per-tensor one)."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == Optimizer.adam:
        if fused:
            try:
                return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            except (RuntimeError, TypeError):  # no fused kernel for this device or torch version
                pass
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def check_finite(loss: Tensor, step: int, cfg: PretrainConfig) -> None:
    if not math.isfinite(float(loss.detach())):
        raise NonFiniteLossError(
            f"pre-training loss became {float(loss.detach())} at step {step} of {cfg.steps} "
            f"({cfg.method.value}, optimizer={cfg.optimizer.value}, lr={cfg.lr}). Likely cause: the learning "
            "rate is too large for this optimizer or the inputs are not finite; lower pretrain.lr (e.g. by 10x) "
            "or check the data. Nothing was stored for this run."
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
    (``robinherit.batched``: closed-form attack and parameter gradients, the same iterates up to float
    rounding); other models, and ``fast=False``, take the generic loop below (autograd training step).
    """
    from robinherit import batched  # batched builds on this module; imported here to keep the import order

    if fast and batched.supports(model, cfg):
        return batched.pretrain_one(model, stream, cfg, loss_fn, on_step)
    pcfg = cfg.pretrain
    opt = make_optimizer(list(model.parameters()), pcfg)
    attack = training_attack(
        pcfg.attack,
        eps=pcfg.eps,
        norm=pcfg.norm,
        steps=pcfg.attack_steps,
        generator=generator(cfg.seed, "pretrain-attack", cfg.device),
    )
    log = PretrainLog()
    for step in range(pcfg.steps):
        batch = stream.next()
        x = batch.x
        if pcfg.eps > 0:
            x = attack(attack_loss(model, loss_fn, batch.y), x)  # closed-form input gradient (robinherit.fused)
        log.add(step, optimizer_step(opt, loss_fn(model(x), batch.y).mean(), step, pcfg))
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
    builds the same loss with a closed-form input gradient (``fused.info_nce_view_loss``), or returns None.
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

    With ``fast`` (the default) the attack on a two-layer encoder uses the closed-form input gradient of
    InfoNCE (``fused.InfoNCEViewLoss``: the same iterates up to float rounding; the whole pre-training is about
    1.6x faster at the default sizes, ``benchmarks/contrastive_step.py``); ``fast=False`` and other encoders
    differentiate with autograd.
    """
    pcfg = cfg.pretrain
    dev = torch.device(cfg.device)
    views = make_views(pcfg, getattr(stream, "world", None), cfg.seed, dev)
    first = stream.next()
    with torch.no_grad():  # the feature size, whatever the encoder (two-layer, or a conv net on real data)
        width = model.features(first.x[:1]).shape[1]
    projector: nn.Module = nn.Identity()
    if pcfg.projector_dim > 0:
        projector = nn.Linear(width, pcfg.projector_dim, bias=False)
        with torch.no_grad():
            g_proj = generator(cfg.seed, "projector")
            projector.weight.copy_(torch.randn(pcfg.projector_dim, width, generator=g_proj) / math.sqrt(width))
        projector = projector.to(dev)
    head_params = {id(p) for p in model.head.parameters()}
    encoder_params = [p for p in model.parameters() if id(p) not in head_params]
    opt = make_optimizer(encoder_params + list(projector.parameters()), pcfg)
    attack = training_attack(
        pcfg.attack,
        eps=pcfg.eps,
        norm=pcfg.norm,
        steps=pcfg.attack_steps,
        generator=generator(cfg.seed, "pretrain-attack", cfg.device),
    )

    def embed(x: Tensor) -> Tensor:
        return projector(model.features(x))  # (n, m) or (n, projector_dim)

    def closed_form(target: Tensor) -> Callable[[Tensor], Tensor] | None:
        return info_nce_view_loss(model, projector, target, pcfg.temperature) if fast else None

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
