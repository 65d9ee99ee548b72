"""Input-space gradient attacks as pure functions, for one model's inputs or for a stack of models' at once.

PGD: Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial Attacks".
FGM/FGSM: Goodfellow et al. (2015); the l2 variant (fast gradient method) of Miyato et al. (2017).

Every attack takes ``loss_fn(x_adv)`` -> per-example losses to *maximise*, so one attack serves supervised,
contrastive and evaluation losses. Inputs are unbounded unless ``clip=(lo, hi)`` is given (synthetic data lives in
all of R^d; images in [0, 1]). Attacks differentiate with respect to the input only: model parameters get no
gradients and the model's train/eval mode is not touched.

One model or a stack, told apart by the budget:

- ``eps`` a float: one model's inputs ``x`` (n, ...), ``loss_fn -> (n,)``, ``generator`` one ``torch.Generator``
  (or None).
- ``eps`` a sequence of S floats: the inputs of S models stacked ``x`` (S, n, d) (``robinherit.training.stacked``),
  ``loss_fn -> (S, n)``, ``generator`` a sequence of S generators. Model s is attacked with ``eps[s]`` and draws
  from ``generator[s]`` exactly what its own single attack draws, so each model's result is its own attack's (to
  the rounding of batched products). One restart with a random start and no clip, as adversarial training runs it.

The stack's PGD (:func:`pgd_from`) is the training fast path and keeps its own arithmetic: the l2 step is one
multiply-add per element (:func:`l2_step`) and the best point is gathered once after the last step
(:func:`best_point`), because at training sizes elementwise passes cost as much as the matmuls.

Written here rather than taken from torchattacks because those clamp to [0, 1] (invalid for the
synthetic world) and hide mode state; the project needs a generic per-example loss instead of a model.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from robinherit.config import AttackKind, Norm

LossFn = Callable[[Tensor], Tensor]
# one model's budget, or one per model of a stack
Budget = float | Sequence[float]
Generators = torch.Generator | Sequence[torch.Generator] | None


def is_stack(eps: Any) -> bool:
    """Whether a budget is one per model of a stack (a sequence) rather than one model's (a number)."""
    return not isinstance(eps, numbers.Real)


# ---- shared pieces: norms, projection, ascent direction, random start, budgets ----


def _flat_norm(t: Tensor, norm: Norm) -> Tensor:
    """Per-example norm of one model's (n, ...) tensor, shaped to broadcast against ``t``: (n, 1, ..., 1)."""
    flat = t.reshape(t.shape[0], -1)
    val = flat.norm(dim=1) if norm == Norm.l2 else flat.abs().amax(dim=1)
    return val.reshape(-1, *([1] * (t.dim() - 1)))


def _last_norm(t: Tensor, norm: Norm) -> Tensor:
    """Per-example norm of a stack's (S, n, d) tensor over its last dim, shaped (S, n, 1)."""
    return t.norm(dim=-1, keepdim=True) if norm == Norm.l2 else t.abs().amax(dim=-1, keepdim=True)


def _example_norm(t: Tensor, norm: Norm, stack: bool) -> Tensor:
    return _last_norm(t, norm) if stack else _flat_norm(t, norm)


def project(delta: Tensor, eps: float | Tensor, norm: Norm) -> Tensor:
    """Nearest point of the eps-ball (l-inf) or radial projection onto it (l2). ``eps`` a float for one model's
    offsets (n, ...), or a stack's per-model budgets (S, 1, 1) (:func:`budgets`) for its offsets (S, n, d)."""
    if norm == Norm.linf:
        return delta.clamp(-eps, eps)
    n = _example_norm(delta, Norm.l2, isinstance(eps, Tensor))
    # Slightly inside the ball so rounding never leaves it.
    scale = torch.clamp(eps * (1 - 1e-6) / n.clamp_min(1e-12), max=1.0)
    return delta * scale


def _ascent_direction(grad: Tensor, norm: Norm, stack: bool = False) -> Tensor:
    """The steepest ascent direction of unit ``norm``: the gradient's sign (l-inf) or its normalised self (l2)."""
    if norm == Norm.linf:
        return grad.sign()
    return grad / _example_norm(grad, Norm.l2, stack).clamp_min(1e-12)


def random_start(x: Tensor, eps: Budget, norm: Norm, g: Generators) -> Tensor:
    """A uniform point of the ball around 0, shaped like ``x``: one model's, or a stack's (``eps`` and ``g`` one per
    model, each model's start drawn as its own single start is, to the bit)."""
    if is_stack(eps):
        return _stack_random_start(x, eps, norm, g)
    if norm == Norm.linf:
        return (torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    direction = direction / _flat_norm(direction, Norm.l2).clamp_min(1e-12)
    dim = x[0].numel()
    radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=g, device=x.device, dtype=x.dtype)
    return project(direction * eps * radius ** (1.0 / dim), eps, norm)


def _stack_random_start(x: Tensor, eps: Sequence[float], norm: Norm, generators: Sequence[torch.Generator]) -> Tensor:
    """:func:`random_start` of a stack (S, n, d): the draws per model, the arithmetic once on the stack, which at
    S = 32 spares about 300 small operations per step."""
    if x.dim() != 3:
        return torch.stack(
            [random_start(x[s], e, norm, g) for s, (e, g) in enumerate(zip(eps, generators, strict=True))]
        )
    shape, kw = x.shape[1:], {"device": x.device, "dtype": x.dtype}
    # per-model scalars as random_start's Python floats meet its tensors: rounded once from double to x's dtype
    e = torch.tensor(list(eps), **kw)[:, None, None]
    # each generator draws into its slice of one buffer (the bits of a fresh tensor's draw), and the arithmetic
    # runs in place on it: no stack of S draws, no new (S, n, d) buffer per pass
    draws = torch.empty((len(generators), *shape), **kw)
    if norm == Norm.linf:
        for s, g in enumerate(generators):
            draws[s].uniform_(generator=g)
        return draws.mul_(2).sub_(1).mul_(e)
    radii = []
    for s, g in enumerate(generators):  # random_start's order within each generator: the direction, then the radius
        draws[s].normal_(generator=g)
        # the power per model: pow's vectorised and scalar kernels round differently, so its bits depend on where
        # an element sits in the tensor (exact arithmetic, norms and clamps do not)
        radii.append(torch.rand((shape[0], 1), generator=g, **kw) ** (1.0 / shape[-1]))
    delta = draws.div_(draws.norm(dim=-1, keepdim=True).clamp_min(1e-12)).mul_(e).mul_(torch.stack(radii))
    # project's float / tensor is Tensor.__rtruediv__, a reciprocal and a multiply
    inside = torch.tensor([v * (1 - 1e-6) for v in eps], **kw)[:, None, None]
    return delta.mul_(torch.clamp(delta.norm(dim=-1, keepdim=True).clamp_min(1e-12).reciprocal() * inside, max=1.0))


def budgets(eps: Sequence[float], steps: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """A stack's (eps, PGD step size 2.5 eps / steps) per model, shaped (S, 1, 1) in ``x``'s dtype and device."""
    eps_t = torch.tensor(eps, dtype=x.dtype, device=x.device)[:, None, None]
    alpha = torch.tensor([2.5 * e / steps for e in eps], dtype=x.dtype, device=x.device)[:, None, None]
    return eps_t, alpha


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


# ---- PGD ----


def pgd(
    loss_fn: LossFn,
    x: Tensor,
    *,
    eps: Budget,
    norm: Norm = Norm.l2,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_init: bool = True,
    generator: Generators = None,
    clip: tuple[float, float] | None = None,
) -> Tensor:
    """Projected gradient ascent on ``loss_fn`` inside the ``norm`` ball of radius ``eps`` around ``x``
    (Madry et al. 2018).

    Threat model: l2 or l-inf, inputs unbounded (or clipped to ``clip``). Shapes: ``x`` (n, ...), returns (n, ...);
    or a stack (module docstring): ``x`` (S, n, d) with ``eps`` and ``generator`` one per model, returns (S, n, d).
    Keeps, per example, the highest-loss point seen over all steps and restarts. Default step size
    2.5 eps / steps (Madry et al.).

    Example::

        x_adv = pgd(lambda xa: F.cross_entropy(model(xa), y, reduction="none"), x, eps=0.25, steps=20)
        x_adv = pgd(stacked_loss, x_stack, eps=[0.25, 0.5], steps=5, generator=[g0, g1])  # two models at once
    """
    norm = Norm(norm)
    if is_stack(eps):
        if restarts != 1 or not random_init or clip is not None or step_size is not None:
            raise ValueError("PGD on a stack runs one restart from a random start, unclipped, at 2.5 eps / steps")
        x = x.detach()
        eps_t, alpha = budgets(list(eps), steps, x)
        return pgd_from(loss_fn, x, random_start(x, list(eps), norm, generator), eps_t, alpha, norm, steps)
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


# pgd_from keeps every iterate where they take at most this much memory together (a training minibatch's do)
KEEP_ITERATES_BYTES = 64 * 2**20


def pgd_from(loss: Any, x: Tensor, delta: Tensor, eps: Tensor, alpha: Tensor, norm: Norm, steps: int) -> Tensor:
    """PGD on a stack (S, n, d) from the start ``delta``, with per-model budgets ``eps`` and step sizes ``alpha``
    (S, 1, 1) (:func:`budgets`); the point of highest loss per example over the iterates. ``loss`` -> (S, n), with a
    closed-form ``value_and_grad`` (``robinherit.ops``) or differentiated by autograd (:func:`input_grad`). A pure
    function of tensors, which ``torch.compile`` takes.

    The same iterates as the single :func:`pgd` up to rounding; the step is folded into one multiply-add per
    element (delta + grad * (alpha / ||grad||)) because at these sizes elementwise passes cost as much
    as the matmuls.
    """
    # the iterates are kept for one gather at the end (best_point) unless they would take much memory (a full-batch
    # attack on a large data set), where the running comparison and copy per iterate keep one point instead
    keep = (steps + 1) * x.numel() * x.element_size() <= KEEP_ITERATES_BYTES
    keep = keep and not (torch.is_grad_enabled() and (x.requires_grad or delta.requires_grad))  # out= below
    values: list[Tensor] = []
    if keep:  # each iterate is written into its slot, so the gather needs no copy of them
        points = torch.empty((steps + 1, *x.shape), device=x.device, dtype=x.dtype)
    else:
        best_x, best_loss = x.clone(), torch.full(x.shape[:2], -float("inf"), device=x.device, dtype=x.dtype)
    radius = eps * (1 - 1e-6)  # the l2 projection's, once
    for t in range(steps + 1):
        x_adv = torch.add(x, delta, out=points[t]) if keep else x + delta
        if t < steps:
            value, grad = input_grad(loss, x_adv)
        else:
            with torch.no_grad():
                value = loss(x_adv)
        if keep:
            values.append(value)
        else:
            better = value > best_loss  # (S, n)
            best_loss = torch.where(better, value, best_loss)
            best_x = torch.lerp(best_x, x_adv, better[..., None].to(x.dtype))  # exact copy where better; 5x cheaper
        if t == steps:
            break
        if norm == Norm.linf:
            delta = project(delta + _ascent_direction(grad, norm, stack=True) * alpha, eps, norm)
        else:
            delta = l2_step(delta, grad, alpha, radius)
    return best_point(points, values) if keep else best_x


def l2_step(delta: Tensor, grad: Tensor, alpha: Tensor, radius: Tensor) -> Tensor:
    """One l2 PGD step of :func:`pgd_from` on a stack: the offset ``delta`` moved by ``alpha`` along the normalised
    ``grad``, then scaled back into the ball of ``radius`` (eps (1 - 1e-6), as :func:`project`), with alpha and
    radius (S, 1, 1). The move is one multiply-add per element."""
    delta = torch.addcmul(delta, grad, alpha / grad.norm(dim=-1, keepdim=True).clamp_min_(1e-12))
    return delta * torch.clamp(radius / delta.norm(dim=-1, keepdim=True).clamp_min_(1e-12), max=1.0)


def best_point(points: Tensor, values: Sequence[Tensor]) -> Tensor:
    """Per example, the point of highest value over the iterates ``points`` (T, S, n, d) with ``values`` (T of
    (S, n)): the earliest where several tie and never one whose value is NaN, as a running ``value > best``
    comparison keeps it. One copy of the chosen rows after the attack instead of a comparison and a copy per
    iterate."""
    # max over dim 0 gives the first maximum's index, as argmax does, at a tenth of argmax's cost along that dim
    best = torch.stack(list(values)).nan_to_num_(nan=-float("inf")).max(dim=0).indices  # (S, n)
    # the chosen point of example i is row best[i] * (S n) + i of the iterates seen as T S n rows, one per example
    # (a view of pgd_from's buffer): index_select copies whole rows, 3x faster than a gather, which indexes every
    # element
    count = best.numel()
    rows = best.reshape(-1) * count + torch.arange(count, device=best.device)
    return points.reshape(points.shape[0] * count, -1).index_select(0, rows).view(points.shape[1:])


# ---- FGM ----


def fgm(
    loss_fn: LossFn,
    x: Tensor,
    *,
    eps: Budget,
    norm: Norm = Norm.l2,
    generator: Generators = None,
    clip: tuple[float, float] | None = None,
    **_: object,
) -> Tensor:
    """One gradient step of length ``eps``: FGSM for l-inf (Goodfellow et al. 2015), the normalised-gradient FGM
    for l2 (Miyato et al. 2017). No randomness, so ``generator`` is unused.

    Threat model: l2 or l-inf, inputs unbounded (or clipped to ``clip``). Shapes: ``x`` (n, ...), returns (n, ...);
    or a stack's ``x`` (S, n, d) with ``eps`` one per model, returns (S, n, d).

    Example::

        x_adv = fgm(lambda xa: F.cross_entropy(model(xa), y, reduction="none"), x, eps=0.25, norm="linf")
    """
    norm = Norm(norm)
    x = x.detach()
    stack = is_stack(eps)
    if not stack and eps <= 0:
        return x.clone()
    budget = budgets(list(eps), 1, x)[0] if stack else eps  # (S, 1, 1) or a float
    _, grad = input_grad(loss_fn, x)
    delta = project(budget * _ascent_direction(grad, norm, stack), budget, norm)
    return _clip(x + delta, clip).detach()


ATTACKS: dict[AttackKind, Callable[..., Tensor]] = {AttackKind.pgd: pgd, AttackKind.fgm: fgm}


def training_attack(
    kind: AttackKind, *, eps: Budget, norm: Norm, steps: int, generator: Generators = None
) -> Callable[[LossFn, Tensor], Tensor]:
    """The inner maximisation of adversarial training, bound to its settings (one model's, or a stack's: ``eps``
    and ``generator`` one per model)."""
    attack = ATTACKS[AttackKind(kind)]

    def run(loss_fn: LossFn, x: Tensor) -> Tensor:
        return attack(loss_fn, x, eps=eps, norm=norm, steps=steps, generator=generator)

    return run
