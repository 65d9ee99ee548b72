"""Input-space attacks as pure functions.

PGD: Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial Attacks".
FGM/FGSM: Goodfellow et al. (2015); the l2 variant (fast gradient method) of Miyato et al. (2017).

Every attack takes ``loss_fn(x_adv) -> (n,)`` per-example losses to *maximise*, so one attack serves
supervised, contrastive and evaluation losses. Inputs are unbounded unless ``clip=(lo, hi)`` is given
(synthetic data lives in all of R^d; images in [0, 1]). Attacks differentiate with respect to the input
only: model parameters get no gradients and the model's train/eval mode is not touched.

Written here rather than taken from torchattacks because those clamp to [0, 1] (invalid for the
synthetic world) and hide mode state; the project needs a generic per-example loss instead of a model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robinherit.config import AttackKind, Norm

LossFn = Callable[[Tensor], Tensor]


def _flat_norm(t: Tensor, norm: Norm) -> Tensor:
    """Per-example norm, shaped to broadcast against ``t``: (n, 1, ..., 1)."""
    flat = t.reshape(t.shape[0], -1)
    val = flat.norm(dim=1) if norm == Norm.l2 else flat.abs().amax(dim=1)
    return val.reshape(-1, *([1] * (t.dim() - 1)))


def project(delta: Tensor, eps: float, norm: Norm) -> Tensor:
    """Nearest point of the eps-ball (l-inf) or radial projection onto it (l2)."""
    if norm == Norm.linf:
        return delta.clamp(-eps, eps)
    n = _flat_norm(delta, Norm.l2)
    # Slightly inside the ball so rounding never leaves it.
    scale = torch.clamp(eps * (1 - 1e-6) / n.clamp_min(1e-12), max=1.0)
    return delta * scale


def random_start(x: Tensor, eps: float, norm: Norm, g: torch.Generator | None) -> Tensor:
    """A uniform point of the ball around 0, shaped like ``x``."""
    if norm == Norm.linf:
        return (torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    direction = direction / _flat_norm(direction, Norm.l2).clamp_min(1e-12)
    dim = x[0].numel()
    radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=g, device=x.device, dtype=x.dtype)
    return project(direction * eps * radius ** (1.0 / dim), eps, norm)


def _ascent_direction(grad: Tensor, norm: Norm) -> Tensor:
    if norm == Norm.linf:
        return grad.sign()
    return grad / _flat_norm(grad, Norm.l2).clamp_min(1e-12)


def _clip(x: Tensor, clip: tuple[float, float] | None) -> Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


def input_grad(loss_fn: LossFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example losses at ``x`` and their gradient with respect to ``x``."""
    value_and_grad = getattr(loss_fn, "value_and_grad", None)
    if value_and_grad is not None:  # a closed-form gradient (robinherit.ops.closed_form): no autograd graph per step
        with torch.no_grad():
            return value_and_grad(x.detach())
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def pgd(
    loss_fn: LossFn,
    x: Tensor,
    *,
    eps: float,
    norm: Norm = Norm.l2,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_init: bool = True,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> Tensor:
    """Projected gradient ascent on ``loss_fn`` inside the ``norm`` ball of radius ``eps`` around ``x``.

    Threat model: l2 or l-inf, inputs unbounded (or clipped to ``clip``). Shapes: ``x`` (n, ...),
    returns (n, ...). Keeps, per example, the highest-loss point seen over all steps and restarts.
    Default step size 2.5 eps / steps (Madry et al.).

    Example::

        x_adv = pgd(lambda xa: F.cross_entropy(model(xa), y, reduction="none"), x, eps=0.25, steps=20)
    """
    norm = Norm(norm)
    x = x.detach()
    if eps <= 0:
        return x.clone()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    best_x = x.clone()
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
    for r in range(restarts):
        delta = random_start(x, eps, norm, generator) if (random_init or r > 0) else torch.zeros_like(x)
        x_adv = _clip(x + delta, clip)
        for t in range(steps + 1):
            if t < steps:
                loss, grad = input_grad(loss_fn, x_adv)
            else:
                with torch.no_grad():
                    loss = loss_fn(x_adv)
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            # (n, 1, ..., 1) mask; torch.where avoids the gather/scatter of boolean indexing
            best_x = torch.where(better.reshape(-1, *([1] * (x.dim() - 1))), x_adv, best_x)
            if t == steps:
                break
            delta = project(x_adv + alpha * _ascent_direction(grad, norm) - x, eps, norm)
            x_adv = _clip(x + delta, clip)
    return best_x.detach()


def fgm(
    loss_fn: LossFn,
    x: Tensor,
    *,
    eps: float,
    norm: Norm = Norm.l2,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = None,
    **_: object,
) -> Tensor:
    """One gradient step of length ``eps`` (FGSM for l-inf, normalised-gradient FGM for l2)."""
    norm = Norm(norm)
    x = x.detach()
    if eps <= 0:
        return x.clone()
    _, grad = input_grad(loss_fn, x)
    delta = project(eps * _ascent_direction(grad, norm), eps, norm)
    return _clip(x + delta, clip).detach()


ATTACKS: dict[AttackKind, Callable[..., Tensor]] = {AttackKind.pgd: pgd, AttackKind.fgm: fgm}


def training_attack(
    kind: AttackKind, *, eps: float, norm: Norm, steps: int, generator: torch.Generator | None = None
) -> Callable[[LossFn, Tensor], Tensor]:
    """The inner maximisation of adversarial training, bound to its settings."""
    attack = ATTACKS[AttackKind(kind)]

    def run(loss_fn: LossFn, x: Tensor) -> Tensor:
        return attack(loss_fn, x, eps=eps, norm=norm, steps=steps, generator=generator)

    return run
