"""Two-layer networks of the theory: h_i(x) = act(<w_i, x>, b_i), i = 1..m, and a linear head.

The default unit is the symmetric thresholded ReLU of Allen-Zhu & Li (2020),
ReLU(u - b) - ReLU(-u - b): zero on [-b, b], linear outside. With b = 0 it is the identity, so the
whole network is linear.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robinherit.config import Activation, ModelConfig


def sym_relu(u: Tensor, b: Tensor) -> Tensor:
    return torch.relu(u - b) - torch.relu(-u - b)


def relu(u: Tensor, b: Tensor) -> Tensor:
    return torch.relu(u - b)


ACTIVATIONS: dict[Activation, Callable[[Tensor, Tensor], Tensor]] = {
    Activation.sym_relu: sym_relu,
    Activation.relu: relu,
}


class TwoLayerNet(nn.Module):
    """Encoder ``features(x) -> (n, m)`` and a linear head ``forward(x) -> (n, n_out)``."""

    def __init__(self, d: int, cfg: ModelConfig, n_out: int, g: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.act = ACTIVATIONS[cfg.activation]
        self.W = nn.Parameter(torch.randn(cfg.width, d, generator=g) / math.sqrt(d))
        self.b = nn.Parameter(torch.full((cfg.width,), float(cfg.threshold)), requires_grad=cfg.learn_threshold)
        self.head = nn.Linear(cfg.width, n_out)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(n_out, cfg.width, generator=g) / math.sqrt(cfg.width))
            self.head.bias.zero_()

    def weight(self) -> Tensor:
        """(m, d) effective first-layer weights (row-normalised when configured)."""
        if self.cfg.normalize_rows:
            return self.W / self.W.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.W

    def threshold(self) -> Tensor:
        return self.b.clamp_min(0.0)

    def preactivation(self, x: Tensor) -> Tensor:
        return x @ self.weight().T  # (n, m)

    def features(self, x: Tensor) -> Tensor:
        return self.act(self.preactivation(x), self.threshold())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def freeze(self) -> TwoLayerNet:
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class LinearHead(nn.Module):
    """A head on a frozen encoder: logits = V features(x) + c."""

    def __init__(self, encoder: nn.Module, width: int, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.linear = nn.Linear(width, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.encoder.features(x))


def build_model(d: int, cfg: ModelConfig, n_out: int, g: torch.Generator | None = None) -> TwoLayerNet:
    return TwoLayerNet(d, cfg, n_out, g)
