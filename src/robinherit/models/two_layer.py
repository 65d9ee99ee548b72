"""Two-layer networks of the theory: h_i(x) = act(<w_i, x - c>, b_i), i = 1..m, and a linear head.

The unit is one of ``robinherit.models.units.UNITS`` (default: the symmetric thresholded ReLU of Allen-Zhu & Li
2020). ``c`` is an optional input centre (real data: the training mean), part of the model: attacks act on the
raw inputs, and since x -> x - c is an affine map of the input the closed-form gradients, the stacked path and
the certifier handle it exactly (the input gradient is unchanged; bounds move with the ball's centre).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from robinherit.config import ModelConfig
from robinherit.models.encoder import CERTIFIABLE, CLOSED_FORM, STACKABLE, FirstLayer
from robinherit.models.units import unit, unit_rows


class TwoLayerNet(nn.Module):
    """Encoder ``features(x) -> (n, m)`` and a linear head ``forward(x) -> (n, n_out)``."""

    center: Tensor | None
    capabilities = frozenset({CLOSED_FORM, STACKABLE, CERTIFIABLE})  # it is the fast paths' reference structure

    def __init__(
        self, d: int, cfg: ModelConfig, n_out: int, g: torch.Generator | None = None, center: Tensor | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.act = unit(cfg.activation).function
        self.W = nn.Parameter(torch.randn(cfg.width, d, generator=g) / math.sqrt(d))
        self.b = nn.Parameter(torch.full((cfg.width,), float(cfg.threshold)), requires_grad=cfg.learn_threshold)
        self.head = nn.utils.skip_init(nn.Linear, cfg.width, n_out)  # no default init: it would move torch's stream
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(n_out, cfg.width, generator=g) / math.sqrt(cfg.width))
            self.head.bias.zero_()
        # None (not zeros) where there is no centre, so the synthetic world computes exactly what it always did.
        self.register_buffer("center", None if center is None else center.detach().reshape(d).clone())

    @property
    def feature_dim(self) -> int:
        return self.W.shape[0]

    def first_layer(self) -> FirstLayer:
        return FirstLayer(self.weight())

    def export_weights(self) -> dict[str, Tensor]:
        """What the store keeps of the net: the effective first-layer weights and the threshold (the input centre
        is the source's, rebuilt with it)."""
        return {"W": self.weight(), "b": self.threshold()}

    def load_weights(self, weights: dict[str, Any]) -> None:
        """Weights of :meth:`export_weights`; the stored W is already row-normalised, and normalising it again
        is the identity."""
        with torch.no_grad():
            self.W.copy_(torch.as_tensor(weights["W"]))
            self.b.copy_(torch.as_tensor(weights["b"]))

    def weight(self) -> Tensor:
        """(m, d) effective first-layer weights (row-normalised when configured)."""
        return unit_rows(self.W) if self.cfg.normalize_rows else self.W

    def threshold(self) -> Tensor:
        return self.b.clamp_min(0.0)

    def preactivation(self, x: Tensor) -> Tensor:
        if self.center is not None:
            x = x - self.center
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
        self.linear = nn.utils.skip_init(nn.Linear, width, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.encoder.features(x))


def projector_weight(dim: int, width: int, g: torch.Generator) -> Tensor:
    """(dim, width) initial weight of contrastive pre-training's linear projector (``pretrain.projector_dim``):
    N(0, 1 / width) entries, drawn from ``g`` (the seed's ``projector`` stream), so every path starts alike."""
    return torch.randn(dim, width, generator=g) / math.sqrt(width)


def build_model(
    d: int, cfg: ModelConfig, n_out: int, g: torch.Generator | None = None, center: Tensor | None = None
) -> TwoLayerNet:
    return TwoLayerNet(d, cfg, n_out, g, center)


def build_encoder(
    model_cfg: ModelConfig,
    input_dim: int,
    n_outputs: int,
    image_shape: tuple[int, int, int] | None,
    g: torch.Generator | None,
    center: Tensor | None,
) -> TwoLayerNet:
    """``model.encoder=two_layer`` (``models.encoder.ENCODERS``)."""
    return TwoLayerNet(input_dim, model_cfg, n_outputs, g, center)
