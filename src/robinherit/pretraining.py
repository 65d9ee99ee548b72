"""Pre-training of the two-layer encoder: clean or adversarial (Madry et al. 2018) supervised training.

Adversarial training replaces each batch by the output of the inner maximisation (PGD-K or FGM) of
the same per-example loss before the optimiser step. Methods are a registry: ``PRETRAINERS[method]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from robinherit.attacks import training_attack
from robinherit.config import ExperimentConfig, Method, Optimizer, PretrainConfig
from robinherit.data import Batch
from robinherit.errors import NonFiniteLossError
from robinherit.losses import multilabel_bce
from robinherit.seeding import generator

StepCallback = Callable[[int, int], None]


class Stream(Protocol):
    def next(self) -> Batch: ...


@dataclass
class PretrainLog:
    losses: list[float] = field(default_factory=list)  # mean loss of every ``log_every``-th step
    log_every: int = 50


def make_optimizer(params: list[nn.Parameter], cfg: PretrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == Optimizer.adam:
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
) -> PretrainLog:
    """Supervised pre-training on ``stream``'s targets; adversarial when ``cfg.pretrain.eps > 0``."""
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
    running = 0.0
    for step in range(pcfg.steps):
        batch = stream.next()
        x = batch.x
        if pcfg.eps > 0:
            x = attack(lambda xa: loss_fn(model(xa), batch.y), x)  # noqa: B023 - used at once
        loss = loss_fn(model(x), batch.y).mean()
        check_finite(loss, step, pcfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        if (step + 1) % log.log_every == 0:
            log.losses.append(running / log.log_every)
            running = 0.0
        if on_step is not None:
            on_step(step + 1, pcfg.steps)
    return log


# method -> pre-training function(model, stream, cfg, on_step=...) -> PretrainLog
PRETRAINERS: dict[Method, Callable[..., PretrainLog]] = {Method.supervised: pretrain_supervised}
