"""The plain references for ``benchmarks.realdata_step``: adversarial pre-training on 28 x 28 images, written the
obvious way.

Two ``torch.nn.Module`` networks and one autograd PGD loop, with no closed forms, no fusion and no batching of
models: what the toolkit's real-data paths are measured against.

- :class:`ReferenceTwoLayer`: 784 -> width symmetric thresholded ReLU units, ReLU(u - b) - ReLU(-u - b), on the
  centred input, then a linear head (the network of ``robinherit.models.two_layer.TwoLayerNet`` with
  ``normalize_rows: false`` and a fixed threshold, as in the shipped ``fashion_mnist_two_layer`` config).
- :class:`ReferenceConvNet`: the layers of ``robinherit.models.conv.ConvNet``: 3 x 3 convolutions with ReLU (stride 1,
  then 2; padding 1), a bias-free linear feature layer with the same thresholded unit, and a linear head.

:func:`pgd_linf` is l-inf PGD (Madry et al. 2018) from a uniform random start, step 2.5 eps / steps, keeping per
example the iterate of highest loss (the random start and the point after the last step included): the attack the
toolkit's pre-training runs. Like that attack it does not clip the iterates to the image box [0, 1] (the
toolkit's evaluation attacks do), so both sides time the same computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sym_relu(u: Tensor, b: Tensor) -> Tensor:
    """Zero on [-b, b], linear outside."""
    return torch.relu(u - b) - torch.relu(-u - b)


class ReferenceTwoLayer(nn.Module):
    """Flat (n, d) inputs -> (n, n_out) logits; the input centre (the training mean) is part of the model."""

    def __init__(self, d: int, width: int, n_out: int, threshold: float, center: Tensor, g: torch.Generator | None):
        super().__init__()
        self.hidden = nn.Linear(d, width, bias=False)
        self.head = nn.Linear(width, n_out)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.randn(width, d, generator=g) / math.sqrt(d))
            self.head.weight.copy_(torch.randn(n_out, width, generator=g) / math.sqrt(width))
            self.head.bias.zero_()
        self.register_buffer("b", torch.full((width,), float(threshold)))
        self.register_buffer("center", center.detach().reshape(d).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(sym_relu(self.hidden(x - self.center), self.b))


class ReferenceConvNet(nn.Module):
    """(n, c, h, w) images -> (n, n_out) logits."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        width: int,
        n_out: int,
        threshold: float,
        center: Tensor,
        g: torch.Generator | None,
    ):
        super().__init__()
        c = image_shape[0]
        layers: list[nn.Module] = []
        for i, out in enumerate(channels):
            layers += [nn.Conv2d(c, out, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
            c = out
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *image_shape)).numel()
        self.fc = nn.Linear(flat, width, bias=False)
        self.head = nn.Linear(width, n_out)
        with torch.no_grad():  # He-normal weights, zero biases
            for m in (*self.convs, self.fc, self.head):
                if isinstance(m, nn.Conv2d | nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / m.weight[0].numel()))
                    if m.bias is not None:
                        m.bias.zero_()
        self.register_buffer("b", torch.full((width,), float(threshold)))
        self.register_buffer("center", center.detach().reshape(image_shape).clone())

    def forward(self, x: Tensor) -> Tensor:
        u = self.fc(self.convs(x - self.center).flatten(1))
        return self.head(sym_relu(u, self.b))


def pgd_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    g: torch.Generator | None,
) -> Tensor:
    """l-inf PGD on the cross-entropy from a uniform random start; the highest-loss iterate per example."""
    alpha = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
    best_x, best_loss = x.clone(), torch.full((x.shape[0],), -math.inf)
    for t in range(steps + 1):
        x_adv = x + delta
        x_adv.requires_grad_(t < steps)
        with torch.set_grad_enabled(t < steps):
            loss = F.cross_entropy(model(x_adv), y, reduction="none")
        better = loss.detach() > best_loss
        best_loss = torch.where(better, loss.detach(), best_loss)
        best_x = torch.where(better.reshape(-1, *[1] * (x.dim() - 1)), x_adv.detach(), best_x)
        if t == steps:
            break
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        delta = (x_adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)
    return best_x


def train(
    model: nn.Module,
    sample: Callable[[], tuple[Tensor, Tensor]],
    steps: int,
    eps: float,
    attack_steps: int,
    lr: float,
    g: torch.Generator | None,
) -> None:
    """``steps`` Adam steps of l-inf PGD-``attack_steps`` adversarial training on ``sample()`` -> (x, y) batches;
    ``g`` draws the attack's random starts."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x, y = sample()
        x_adv = pgd_linf(model, x, y, eps, attack_steps, g) if eps > 0 else x
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
