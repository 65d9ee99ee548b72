"""The pieces every training loop shares: the loss log, the finiteness check and the optimiser (a leaf module, so
pre-training, the stacked path and the heads can all use it without importing each other)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robinherit.config import Optimizer, PretrainConfig
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
