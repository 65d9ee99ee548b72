"""The plain reference for ``benchmarks.train_step``: adversarial pre-training written the obvious way.

One ``torch.nn.Module`` and an autograd PGD loop (Madry et al. 2018, l2, random start), with no
fusion and no batching of models: what the toolkit's fast paths are measured against. It trains the
same model as ``robinherit.models.two_layer.TwoLayerNet`` (row-normalised weights, symmetric thresholded ReLU,
linear head, multilabel BCE) on the same data stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReferenceNet(nn.Module):
    def __init__(self, d: int, width: int, n_out: int, threshold: float, g: torch.Generator | None = None):
        super().__init__()
        self.W = nn.Parameter(torch.randn(width, d, generator=g) / math.sqrt(d))
        self.register_buffer("b", torch.full((width,), threshold))
        self.head = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:
        w = self.W / self.W.norm(dim=1, keepdim=True)
        u = x @ w.T
        h = torch.relu(u - self.b) - torch.relu(-u - self.b)
        return self.head(h)


def pgd_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, g: torch.Generator | None) -> Tensor:
    alpha = 2.5 * eps / steps
    delta = torch.randn(x.shape, generator=g, device=x.device)
    delta = delta / delta.norm(dim=1, keepdim=True) * eps * torch.rand(x.shape[0], 1, generator=g, device=x.device)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + alpha * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = delta * torch.clamp(eps / delta.norm(dim=1, keepdim=True).clamp_min(1e-12), max=1.0)
    return (x + delta).detach()


def train(model: nn.Module, sample, steps: int, eps: float, attack_steps: int, lr: float, seed: int = 0) -> None:
    """``sample()`` -> (x, y) batches; ``steps`` Adam steps of l2 PGD-``attack_steps`` adversarial training."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for _ in range(steps):
        x, y = sample()
        x_adv = pgd_l2(model, x, y, eps, attack_steps, g)
        loss = F.binary_cross_entropy_with_logits(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
