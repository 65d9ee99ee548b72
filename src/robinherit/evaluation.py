"""Clean and robust accuracy over a grid of budgets, with self-checks.

Robust accuracy comes from PGD on the margin loss (the attack minimises the classification margin,
Carlini & Wagner 2017 style) with random restarts; an example counts as robust at eps only if no attack
at any budget <= eps broke it (a point inside a smaller ball lies inside every larger one), so the
curve is non-increasing by construction. Checks that fail become warnings in the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from robinherit.attacks import _flat_norm, input_grad, pgd
from robinherit.config import Norm

MarginFn = Callable[[Tensor, Tensor], Tensor]


def eps_key(eps: float) -> str:
    """The key of a budget in result records: 0.25 -> "0.25", 1.0 -> "1"."""
    return f"{float(eps):g}"


@dataclass
class EvalResult:
    clean_acc: float
    robust_acc: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    # per-example correctness under attack at each eps key, (n,) bool; not part of the stored record
    robust_mask: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"clean_acc": self.clean_acc, "robust_acc": self.robust_acc, "warnings": self.warnings}


def evaluate(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    margin_fn: MarginFn,
    *,
    eps_grid: tuple[float, ...],
    norm: Norm,
    steps: int,
    restarts: int,
    g: torch.Generator,
    clip: tuple[float, float] | None = None,
    zero_grad_warn_share: float = 0.5,
) -> EvalResult:
    """Clean accuracy and robust accuracy at each eps of ``eps_grid`` (PGD-``steps``, ``restarts`` restarts)."""
    norm = Norm(norm)
    warnings: list[str] = []

    def attack_loss(xa: Tensor) -> Tensor:
        return -margin_fn(model(xa), y)

    with torch.no_grad():
        correct = margin_fn(model(x), y) > 0
    clean_acc = float(correct.float().mean())

    _, grad = input_grad(attack_loss, x)
    zero_share = float((_flat_norm(grad, norm).flatten() <= 1e-12).float().mean())
    if zero_share > zero_grad_warn_share:
        warnings.append(
            f"input gradient is zero on {zero_share:.0%} of test examples: gradient-based attacks may be "
            "blind here (gradient masking); treat robust accuracy as an upper bound"
        )

    robust: dict[str, float] = {}
    masks: dict[str, Tensor] = {}
    still = correct.clone()
    non_monotone = 0
    for eps in sorted(eps_grid):
        if eps > 0:
            x_adv = pgd(attack_loss, x, eps=eps, norm=norm, steps=steps, restarts=restarts, generator=g, clip=clip)
            dist = _flat_norm(x_adv - x, norm).flatten()
            if bool((dist > eps * (1 + 1e-5) + 1e-7).any()):
                warnings.append(f"perturbation outside the eps={eps} ball (max {float(dist.max()):.4g})")
            with torch.no_grad():
                ok = margin_fn(model(x_adv), y) > 0
            non_monotone += int((~still & ok & correct).sum() > 0)
            still &= ok
        robust[eps_key(eps)] = float(still.float().mean())
        masks[eps_key(eps)] = still.clone()
    if non_monotone:
        warnings.append(
            "the attack at a larger eps missed examples broken at a smaller one; the smaller-eps points were "
            "kept (robust accuracy is non-increasing by construction), but the attack may be weak: raise "
            "eval.steps or eval.restarts"
        )
    if any(v > clean_acc + 1e-9 for v in robust.values()):
        warnings.append("robust accuracy above clean accuracy: the evaluation is inconsistent")
    return EvalResult(clean_acc, robust, warnings, masks)
