"""The pieces every training loop shares: the loss log, the finiteness check and the optimiser with its learning-rate
schedule (a leaf module, so pre-training, the stacked path and the heads can all use it without importing each
other). Each serves one model or a stack of S models (``robinherit.training.stacked``) alike."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robinherit.config import DownstreamConfig, LrSchedule, Optimizer, PretrainConfig
from robinherit.errors import NonFiniteLossError


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

    @staticmethod
    def add_stack(logs: Sequence[PretrainLog], step: int, loss: Tensor) -> None:
        """:meth:`add` for every model of a stack, ``loss`` (S,) one per model, in one transfer from the device. The
        values are summed as doubles, as a single run sums its Python floats."""
        for log, value in zip(logs, loss.detach().cpu().double().tolist(), strict=True):
            log.add(step, value)


def optimizer_step(opt: torch.optim.Optimizer, loss: Tensor, step: int, cfg: PretrainConfig) -> float:
    """Check the loss is finite, then one optimiser step on it; returns its value."""
    check_finite(loss, step, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def make_optimizer(
    params: Iterable[nn.Parameter], cfg: PretrainConfig | DownstreamConfig, fused: bool = False
) -> torch.optim.Optimizer:
    """Adam or SGD with momentum 0.9, at the learning rate and weight decay of ``cfg`` (pre-training's or a head's).
    ``fused``: Adam's one-kernel implementation where torch has it (the same update, rounded differently; the
    stacked path uses it, the generic loop keeps the per-tensor one)."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == Optimizer.adam:
        if fused:
            try:
                return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            except (RuntimeError, TypeError):  # no fused kernel for this device or torch version
                pass
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def make_schedule(
    opt: torch.optim.Optimizer, cfg: PretrainConfig | DownstreamConfig, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of ``cfg`` over ``steps`` optimiser steps: None for a constant rate (pre-training
    has no schedule), cosine decay to 0 (Loshchilov & Hutter 2017) where a head asks for it."""
    if getattr(cfg, "lr_schedule", LrSchedule.constant) == LrSchedule.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return None


def make_stepper(
    params: Iterable[nn.Parameter], cfg: PretrainConfig | DownstreamConfig, steps: int
) -> Callable[[Tensor], None]:
    """One optimiser step on a loss (backward included) of :func:`make_optimizer`'s optimiser for ``params``, with
    :func:`make_schedule`'s schedule over ``steps`` steps."""
    opt = make_optimizer(params, cfg)
    sched = make_schedule(opt, cfg, steps)

    def step(loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

    return step


def check_finite(loss: Tensor, step: int, cfg: PretrainConfig | Sequence[PretrainConfig]) -> None:
    """Raise :class:`NonFiniteLossError` where the loss is not finite: one run's scalar loss with its config, or a
    stack's losses (S,) with one config per model (the error names the first model whose loss is not finite)."""
    if loss.dim() > 0:
        finite = torch.isfinite(loss.detach())
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            check_finite(loss[bad], step, cfg[bad])
        return
    if not math.isfinite(float(loss.detach())):
        raise NonFiniteLossError(
            f"pre-training loss became {float(loss.detach())} at step {step} of {cfg.steps} "
            f"({cfg.method.value}, optimizer={cfg.optimizer.value}, lr={cfg.lr}). Likely cause: the learning "
            "rate is too large for this optimizer or the inputs are not finite; lower pretrain.lr (e.g. by 10x) "
            "or check the data. Nothing was stored for this run."
        )
