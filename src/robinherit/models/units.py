"""The hidden units of the two-layer network, each defined once: its function, a fast form, its derivative rule
and its kinks. The model, the closed-form gradients (``robinherit.ops.closed_form``), the stacked path
(``robinherit.training.stacked``) and the certifier (``robinherit.evaluation.certify``) all read this registry, so a
new unit is one
entry here (``model.activation`` accepts every name of ``UNITS``).

The default unit is the symmetric thresholded ReLU of Allen-Zhu & Li (2020, "Feature purification"),
ReLU(u - b) - ReLU(-u - b): zero on [-b, b], linear outside. With b = 0 it is the identity, so the whole
network is linear.

``UNITS`` is ``robinherit.registry.UNITS``: the built-in units are declared there by name, so the config validates
``model.activation`` without importing this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robinherit.registry import UNITS

# A threshold per unit, broadcastable against the pre-activations, or one float shared by every unit.
Threshold = Tensor | float


@dataclass(frozen=True)
class Unit:
    """A thresholded, piecewise-linear unit h = f(u, b) with slope 1 where it is active and 0 elsewhere.

    ``function`` is the reference form; ``fast`` gives the same values to the bit in fewer passes (what the
    closed-form paths call); ``kinks(b)`` are the points between which it is linear (the certifier's relaxation
    is built on them); ``threshold_sign(u)`` is -dh/db where the unit is active (for a learned threshold);
    ``grad(g, u, h, b, out)``, optional, is g * f'(u) given u and h = fast(u, b) in fewer passes than the generic
    :func:`active_grad` (which :meth:`active` falls back to), written into ``out`` where that is not None (``out``
    is then ``g`` itself: an elementwise kernel may write over the input it reads).

    ``fast`` and ``grad`` also take the threshold as one float (every unit's, see :func:`uniform_threshold`),
    for which some units have one-pass kernels; the values are the same either way.
    """

    function: Callable[[Tensor, Tensor], Tensor]
    fast: Callable[[Tensor, Threshold], Tensor]
    kinks: Callable[[Tensor], tuple[Tensor, ...]]
    threshold_sign: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor, Tensor, Tensor, Threshold, Tensor | None], Tensor] | None = None

    def active(self, grad: Tensor, u: Tensor, h: Tensor, b: Threshold, overwrite: bool = False) -> Tensor:
        """``grad * f'(u)``: ``self.grad`` where the unit has one, else :func:`active_grad`. With ``overwrite`` the
        result goes into ``grad``'s memory (a temporary of the caller's; not where autograd tracks it): the same
        values without a fresh (n, m) buffer, which at S = 32 is 4 MiB whose first touch costs more than the pass."""
        out = grad if overwrite and not grad.requires_grad and grad.is_contiguous() else None
        return active_grad(grad, h, out) if self.grad is None else self.grad(grad, u, h, b, out)


def _sym_relu(u: Tensor, b: Tensor) -> Tensor:
    return torch.relu(u - b) - torch.relu(-u - b)


def _sym_relu_fast(u: Tensor, b: Threshold) -> Tensor:
    if isinstance(b, float):
        # softshrink is u - clip(u, -b, b) to the last bit (u - b above b, u + b below -b, zero between, NaN kept)
        # in one pass over (n, m); it takes one threshold for every unit
        return torch.nn.functional.softshrink(u, b)
    # u - clip(u, -b, b) is ReLU(u - b) - ReLU(-u - b) to the last bit (the same single rounding on each
    # branch), in two passes over (n, m) instead of four.
    return u - torch.clamp(u, -b, b)


def _sym_relu_grad(grad: Tensor, u: Tensor, h: Tensor, b: Threshold, out: Tensor | None = None) -> Tensor:
    if isinstance(b, float):
        # softshrink's backward keeps grad where |u| > b, which is where h != 0 for finite u: one pass, no |h| to build
        if out is None:
            return torch.ops.aten.softshrink_backward(grad, u, b)
        return torch.ops.aten.softshrink_backward.grad_input(grad, u, b, grad_input=out)
    return active_grad(grad, h, out)


def _relu(u: Tensor, b: Tensor) -> Tensor:
    return torch.relu(u - b)


def _relu_fast(u: Tensor, b: Threshold) -> Tensor:
    return (u - b).clamp_min_(0.0)


def _relu_grad(grad: Tensor, u: Tensor, h: Tensor, b: Threshold, out: Tensor | None = None) -> Tensor:
    return _threshold_backward(grad, h, out)  # h >= 0, so h > 0 is h != 0 without |h|


# The built-in entries of UNITS (model.activation -> unit). A new unit is one entry of that registry: the config
# accepts every name it holds (docs/extending.md).
SYM_RELU = Unit(_sym_relu, _sym_relu_fast, lambda b: (-b, b), torch.sign, _sym_relu_grad)
RELU = Unit(_relu, _relu_fast, lambda b: (b,), torch.ones_like, _relu_grad)


def unit(activation: str) -> Unit:
    return UNITS[activation]  # a config.Activation member or its name; an unknown one is an error naming the units


def active_grad(grad: Tensor, h: Tensor, out: Tensor | None = None) -> Tensor:
    """``grad * f'(u)`` given h = f(u, b) for every unit of ``UNITS``: the slope is 1 where h != 0 and 0 elsewhere
    (at the kink too, as in autograd). ReLU's own backward kernel does this in one pass; a boolean mask costs
    5-20x more on CPU. Written into ``out`` (``grad`` itself, or None for a new tensor)."""
    return _threshold_backward(grad, h.abs(), out)


def _threshold_backward(grad: Tensor, h: Tensor, out: Tensor | None) -> Tensor:
    """grad where h > 0, else 0 (ReLU's backward kernel), into ``out`` where given."""
    if out is None:
        return torch.ops.aten.threshold_backward(grad, h, 0.0)
    return torch.ops.aten.threshold_backward.grad_input(grad, h, 0.0, grad_input=out)


def uniform_threshold(threshold: Tensor) -> Threshold:
    """``threshold`` as one Python float where every entry is the same (the configs' fixed thresholds), else itself.

    Call it once per fixed set of weights (it reads the tensor, a device sync on a GPU), not per step, and only
    where the threshold is not being learned: a float is a constant to the code it goes into."""
    lo, hi = torch.aminmax(threshold.detach())
    return float(hi) if bool(lo == hi) else threshold


def unit_rows(W: Tensor) -> Tensor:
    """Rows of W (..., m, d) scaled to unit l2 norm: the effective weights of ``model.normalize_rows``."""
    return W / row_norms(W)


def row_norms(W: Tensor) -> Tensor:
    """(..., m, 1) l2 norms of W's rows, clamped away from 0 (a zero row stays zero instead of NaN)."""
    return W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
