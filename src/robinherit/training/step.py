"""The adversarial training step (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks"): the inner maximisation replaces the batch by its attacked points at the model's current weights, then the
outer step minimises the training loss on them.

:func:`adversarial_step` is that step for every autograd loop: supervised pre-training of one model
(``robinherit.training.pretraining``) or of a stack (``robinherit.training.stacked``), and adversarial heads alone or
stacked (``robinherit.training.heads``). :func:`adversarial_grads` is the same step for a stack of two-layer networks
with the attack and the training gradients in closed form, as one pure function that ``torch.compile`` can take
(``ROBINHERIT_COMPILE=1``); both attack with ``robinherit.attacks.gradient``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from robinherit.attacks.gradient import LossFn, pgd_from
from robinherit.config import ModelConfig, Norm
from robinherit.models.units import unit_rows
from robinherit.ops.closed_form import two_layer_loss, two_layer_loss_and_grad
from robinherit.ops.losses import LOSS_GRADS
from robinherit.ops.stack_grads import closed_form_grads

T = TypeVar("T")


def adversarial_step(
    x: Tensor,
    targets: Tensor,
    train_loss: Callable[[Tensor, Tensor], Tensor],
    update: Callable[[Tensor], T],
    *,
    attack: Callable[[LossFn, Tensor], Tensor] | None = None,
    attack_loss: Callable[[Tensor], LossFn] | None = None,
) -> T:
    """One training step on the batch (``x``, ``targets``), adversarial where ``attack`` is given, else clean.

    ``attack(attack_loss(targets), x)`` is the inner maximisation (``attacks.gradient.training_attack``, or any
    ``(loss_fn, x) -> x_adv``); ``attack_loss`` builds the per-example loss it maximises at the model's weights of
    this step (closed-form input gradients where ``robinherit.ops`` has them). Then ``update`` takes the optimiser's
    step on ``train_loss(x_adv, targets)``, and what it returns is returned. One model's batch x (n, ...), or a
    stack's (S, n, d) with an attack of one budget per model and a training loss that sums the models' mean losses
    (each model's parameters then get the gradient of its own).

    Example::

        attack = training_attack(AttackKind.pgd, eps=0.25, norm=Norm.l2, steps=5, generator=g)
        value = adversarial_step(
            x, y, lambda xa, t: loss_fn(model(xa), t).mean(), step_on, attack=attack,
            attack_loss=lambda t: attack_loss(model, loss_fn, t),
        )
    """
    if attack is not None:
        if attack_loss is None:
            raise ValueError("an adversarial step needs the loss its attack maximises (attack_loss)")
        x = attack(attack_loss(targets), x)
    return update(train_loss(x, targets))


def adversarial_grads(
    W: Tensor,
    b: Tensor,
    V: Tensor,
    c: Tensor,
    x: Tensor,
    targets: Tensor,
    delta: Tensor,
    eps: Tensor,
    alpha: Tensor,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    cfg: ModelConfig,
    learn_b: bool,
    norm: Norm,
    steps: int,
    threshold: float | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor, Tensor]]:
    """One adversarial training step's loss and gradients as a pure function of tensors: PGD from the random
    start ``delta`` (``attacks.gradient.pgd_from``, the stack's PGD), then ``ops.stack_grads.closed_form_grads`` at
    the attack's points. What ``training.stacked.pretrain_stacked`` compiles with ``ROBINHERIT_COMPILE=1``; the eager
    path computes the same. ``threshold`` as in ``closed_form_grads``."""
    with torch.no_grad():
        w = unit_rows(W) if cfg.normalize_rows else W
        # functools.partial of module-level functions, not a TwoLayerLoss: older torch.compile versions failed
        # on building that frozen dataclass inside the compiled function
        args = {
            "weight": w,
            "threshold": b.clamp_min(0.0)[:, None, :] if threshold is None else threshold,
            "head_weight": V,
            "head_bias": c[:, None, :],
            "activation": cfg.activation,
            "loss": loss_fn,
            "targets": targets,
        }
        adv_loss = _Loss(partial(two_layer_loss, **args), partial(two_layer_loss_and_grad, **args))
        x_adv = pgd_from(adv_loss, x, delta, eps, alpha, norm, steps)
        return closed_form_grads(W, b, V, c, x_adv, targets, LOSS_GRADS[loss_fn], cfg, learn_b, threshold)


class _Loss(NamedTuple):
    """What ``attacks.gradient.pgd_from`` needs of a loss: its value and its value with the input gradient."""

    value: Callable[[Tensor], Tensor]
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]]

    def __call__(self, x: Tensor) -> Tensor:
        return self.value(x)


def compile_requested() -> bool:
    """``ROBINHERIT_COMPILE=1`` in the environment: compile the adversarial step with ``torch.compile``.

    Off by default: compiling costs tens of seconds per process and per stack shape, which a single run or
    ``reproduce --quick`` does not win back; long runs and sweeps do (see docs/performance.md)."""
    return os.environ.get("ROBINHERIT_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


_compiled_step: Callable[..., Any] | None = None
_compile_failed = False


def _step_fn() -> Callable[..., Any]:
    """``adversarial_grads``, compiled when asked for and possible. If compiling fails (no C++ compiler, an
    unsupported backend), a warning says why and every later step runs eagerly: same results, no speed-up."""
    global _compiled_step
    if not compile_requested() or _compile_failed:
        return adversarial_grads
    if _compiled_step is None:
        _compiled_step = torch.compile(adversarial_grads, dynamic=False)
    return _compiled_step


def run_adversarial_grads(*args: Any, **kwargs: Any) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor, Tensor]]:
    """:func:`adversarial_grads`, compiled where ``ROBINHERIT_COMPILE=1`` asks for it and compiling works."""
    global _compile_failed
    fn = _step_fn()
    if fn is adversarial_grads:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # a compiler problem must not lose a run: fall back to the same step, eager
        _compile_failed = True
        warnings.warn(
            f"ROBINHERIT_COMPILE=1 but torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
            "running eagerly (same results, no speed-up). Unset ROBINHERIT_COMPILE to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return adversarial_grads(*args, **kwargs)


__all__ = ["adversarial_grads", "adversarial_step", "compile_requested", "run_adversarial_grads"]
