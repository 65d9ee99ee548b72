"""S two-layer networks with the same shapes as one module of stacked weights, so that S small matmuls become one
batched matmul (``robinherit.training.stacked`` trains S runs this way). Its closed-form losses and gradients are in
``robinherit.ops.stack_grads``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robinherit.config import ModelConfig
from robinherit.models.two_layer import TwoLayerNet
from robinherit.models.units import uniform_threshold, unit, unit_rows


class StackedTwoLayer(nn.Module):
    """S two-layer networks with the same shapes: W (S, m, d), b (S, m), head V (S, K, m), c (S, K).

    The stack works in the models' centred coordinates: where the models have an input centre (one for the whole
    stack, since stacked runs share their data), callers pass x - center, which ``centred`` gives.
    """

    def __init__(self, models: Sequence[TwoLayerNet]):
        super().__init__()
        self.cfg: ModelConfig = models[0].cfg
        centers = [m.center for m in models]
        same = [(c is None and centers[0] is None) or (c is not None and torch.equal(c, centers[0])) for c in centers]
        if not all(same):
            raise ValueError("a stack's models must share one input centre (stacked runs share their data)")
        self.register_buffer("center", None if centers[0] is None else centers[0].clone())
        self.W = nn.Parameter(torch.stack([m.W.detach() for m in models]))
        self.b = nn.Parameter(torch.stack([m.b.detach() for m in models]), requires_grad=self.cfg.learn_threshold)
        self.V = nn.Parameter(torch.stack([m.head.weight.detach() for m in models]))
        self.c = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]))

    def weight(self) -> Tensor:
        """(S, m, d) effective weights, row-normalised as in ``TwoLayerNet.weight``."""
        return unit_rows(self.W) if self.cfg.normalize_rows else self.W

    def threshold(self) -> Tensor:
        return self.b.clamp_min(0.0)[:, None, :]  # (S, 1, m)

    def fixed_threshold(self) -> float | None:
        """The threshold as one float where it is not learned and every unit of every model has the same one (the
        configs' default), else None: the unit's fast forms then take one pass (``activations.Unit``). Read once
        per training run; a learned threshold changes every step."""
        if self.b.requires_grad:
            return None
        thr = uniform_threshold(self.threshold())
        return thr if isinstance(thr, float) else None

    def centred(self, x: Tensor) -> Tensor:
        """Raw (S, n, d) inputs in the stack's coordinates."""
        return x if self.center is None else x - self.center

    def forward(self, x: Tensor) -> Tensor:
        """(S, n, d) centred inputs -> (S, n, K) logits."""
        h = unit(self.cfg.activation).function(x @ self.weight().transpose(1, 2), self.threshold())  # (S, n, m)
        return torch.baddbmm(self.c[:, None, :], h, self.V.transpose(1, 2))

    @torch.no_grad()
    def unstack(self, models: Sequence[TwoLayerNet]) -> None:
        """Copy each model's trained weights back into ``models``."""
        for s, m in enumerate(models):
            m.W.copy_(self.W[s])
            m.b.copy_(self.b[s])
            m.head.weight.copy_(self.V[s])
            m.head.bias.copy_(self.c[s])


__all__ = ["StackedTwoLayer"]
