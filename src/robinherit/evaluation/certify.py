"""Certified robust accuracy of a two-layer network with a linear head: sound lower bounds on the margin.

IBP: Gowal et al. (2018), "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
Models". CROWN: Zhang et al. (2018), "Efficient Neural Network Robustness Certification with General
Activation Functions" (linear relaxations per unit, chosen adaptively, then the dual norm).

The network is logits = V h(x) + c with h_i = act(<w_i, x>, b_i) and act monotone and piecewise linear
(the symmetric thresholded ReLU of the theory, or a plain thresholded ReLU). A *specification* S (n, r, C)
turns logits into r margins per example (true class minus each other class, or signed task logits);
an example is certified at eps when the lower bound of every margin over the eps-ball is > 0. A certificate
is a proof: no input of the ball changes the prediction, so certified accuracy <= true robust accuracy
<= attacked (PGD) accuracy.

Written here, not with auto_LiRPA: its PyPI release (0.3) pins torch<1.13 and torchvision<0.14, so it does
not install beside the supported torch 2.x, and it has no operator for the thresholded symmetric unit. The
two-layer case is short: the first layer is linear, so its pre-activation bounds are exact,
<w_i, x0> +- eps ||w_i||_* (dual norm), and only the units need a relaxation.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor, nn

from robinherit.config import Norm
from robinherit.models.encoder import CERTIFIABLE, supports
from robinherit.models.two_layer import LinearHead
from robinherit.models.units import unit
from robinherit.ops.losses import class_margin, multilabel_margin
from robinherit.records import eps_key


class BoundMethod(str, Enum):
    ibp = "ibp"
    crown = "crown"
    best = "best"  # elementwise max of the sound bounds above: still sound, never looser


@dataclass(frozen=True)
class TwoLayerLinear:
    """The network as the bounds see it, in float64 (rounding must not create a false certificate)."""

    W: Tensor  # (m, d) effective first-layer weights
    b: Tensor  # (m,) thresholds >= 0
    activation: str  # a name of activations.UNITS
    V: Tensor  # (C, m) head weights
    c: Tensor  # (C,) head bias
    center: Tensor | None = None  # (d,) input centre: the model reads x - center

    def act(self, u: Tensor) -> Tensor:
        return unit(self.activation).function(u, self.b)

    def centred(self, x: Tensor) -> Tensor:
        """x - center in float64: a ball around x is the same ball around x - center (a translation), so every
        bound below is taken in centred coordinates."""
        x = x.to(self.W)
        return x if self.center is None else x - self.center

    def logits(self, x: Tensor) -> Tensor:
        return self.act(self.centred(x) @ self.W.T) @ self.V.T + self.c  # (n, C)


def as_two_layer(model: nn.Module) -> TwoLayerLinear | None:
    """The bound view of an encoder that declares the ``certifiable`` capability (``models.encoder``: the two-layer
    net) or of a ``LinearHead`` on one, else None."""
    if isinstance(model, LinearHead) and supports(model.encoder, CERTIFIABLE):
        enc, head = model.encoder, model.linear
    elif supports(model, CERTIFIABLE):
        enc, head = model, model.head
    else:
        return None
    with torch.no_grad():
        f64 = dict(dtype=torch.float64)
        return TwoLayerLinear(
            W=enc.weight().detach().to(**f64),
            b=enc.threshold().detach().to(**f64),
            activation=enc.cfg.activation,
            V=head.weight.detach().to(**f64),
            c=head.bias.detach().to(**f64),
            center=None if enc.center is None else enc.center.detach().to(**f64),
        )


# --- specifications: which linear functions of the logits must stay positive -----------------------------


def class_spec(y: Tensor, n_classes: int) -> Tensor:
    """(n, C-1, C): rows e_y - e_j for every j != y (logit of the true class minus each other logit)."""
    n = y.shape[0]
    eye = torch.eye(n_classes, device=y.device, dtype=torch.float64)
    others = torch.arange(n_classes, device=y.device).expand(n, n_classes)
    others = others[others != y[:, None]].reshape(n, n_classes - 1)  # (n, C-1)
    return eye[y][:, None, :] - eye[others]


def multilabel_spec(targets: Tensor, n_classes: int | None = None) -> Tensor:
    """(n, K, K): task k's logit signed by its {0, 1} target (positive iff task k is right)."""
    return torch.diag_embed(2 * targets.to(torch.float64) - 1)


# A margin function of evaluation -> the specification that certifies it.
SPECS: dict[Callable[[Tensor, Tensor], Tensor], Callable[..., Tensor]] = {
    class_margin: class_spec,
    multilabel_margin: multilabel_spec,
}


# --- bounds ---------------------------------------------------------------------------------------------


def dual_norm(v: Tensor, norm: Norm) -> Tensor:
    """||v||_* over the last axis: l2 for an l2 ball, l1 for an l-inf ball."""
    return v.norm(dim=-1) if Norm(norm) == Norm.l2 else v.abs().sum(dim=-1)


def preactivation_bounds(net: TwoLayerLinear, x: Tensor, eps: float, norm: Norm) -> tuple[Tensor, Tensor]:
    """(n, m) exact bounds of <w_i, x'> over the ball around ``x`` (centred coordinates): a single linear layer
    attains them."""
    u0 = x.to(net.W) @ net.W.T
    r = eps * dual_norm(net.W, norm)  # (m,)
    return u0 - r, u0 + r


def _ibp(net: TwoLayerLinear, x: Tensor, spec: Tensor, eps: float, norm: Norm) -> Tensor:
    lo, hi = preactivation_bounds(net, x, eps, norm)
    # Both units are non-decreasing, so the image of [lo, hi] is [act(lo), act(hi)].
    h_lo, h_hi = net.act(lo), net.act(hi)  # (n, m)
    A = spec @ net.V  # (n, r, m): margins as linear functions of h
    low = (A.clamp_min(0) * h_lo[:, None, :] + A.clamp_max(0) * h_hi[:, None, :]).sum(-1)
    return low + spec @ net.c


def relaxation(net: TwoLayerLinear, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lines ``a_l u + c_l <= act(u) <= a_u u + c_u`` valid on [lo, hi], each (n, m).

    A line lies above a piecewise-linear function on an interval iff it lies above it at the interval's ends
    and at the kinks inside, so for any slope the tightest valid intercept is a max (min) over those points.
    Candidate slopes: the secants between every pair of those points (this includes 0, 1 and the chord).
    Among them, per unit, the line with the least area to the function (its value at the midpoint) is kept,
    after CROWN's adaptive choice: for a plain ReLU that is the chord above and, below, the best of the lines
    of slope 0, 1 or the chord's slope through the kink.

    One candidate at a time, on (n, m) tensors, keeping the best so far (ties keep the earlier pair, as an
    argmin over the pairs would): the same lines to the bit as broadcasting every pair against every point at
    once (``tests/test_certify.py`` keeps that form as the reference), in about a third of the time, since no
    (n, m, pairs, points) array is built.
    """
    act = unit(net.activation)
    pts = [lo, *(torch.clamp(k.expand_as(lo), lo, hi) for k in act.kinks(net.b)), hi]  # P tensors (n, m)
    vals = [act.function(p, net.b) for p in pts]
    mid = (lo + hi) / 2
    best: list[Tensor] = []  # a_l, c_l, lower line at mid, a_u, c_u, upper line at mid
    for i, j in itertools.combinations(range(len(pts)), 2):
        width = pts[j] - pts[i]
        wide = width > 1e-12
        slope = torch.where(wide, (vals[j] - vals[i]) / torch.where(wide, width, 1.0), 0.0)
        resid = [v - slope * p for v, p in zip(vals, pts, strict=True)]
        c_up, c_low = resid[0], resid[0]
        for r in resid[1:]:
            c_up, c_low = torch.maximum(c_up, r), torch.minimum(c_low, r)
        cand = [slope, c_low, slope * mid + c_low, slope, c_up, slope * mid + c_up]
        if not best:
            best = cand
            continue
        take_low, take_up = cand[2] > best[2], cand[5] < best[5]
        best = [torch.where(take_low if k < 3 else take_up, cand[k], best[k]) for k in range(6)]
    return best[0], best[1], best[3], best[4]


class RelaxationMemo:
    """The relaxations of recent (first layer, inputs, eps, norm), by content: a run evaluates its pre-training
    network and each head on the same test inputs through the same encoder, so the units' intervals, and their
    lines, are the same for all of them (two thirds of a run's certification on the 2-core machine). Keyed by a
    hash of the tensors' bytes, so equal inputs give the stored lines (a pure function, to the bit) and anything
    else a miss; at most ``budget`` bytes are kept, most recent first. CPU tensors only (hashing a GPU tensor
    would copy it to the host)."""

    def __init__(self, budget: int = 64 * 2**20):
        self.budget, self.size = budget, 0  # bytes allowed, bytes held
        self.entries: OrderedDict[str, tuple[Tensor, ...]] = OrderedDict()

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0

    @staticmethod
    def key(net: TwoLayerLinear, x: Tensor, eps: float, norm: Norm) -> str | None:
        if x.device.type != "cpu":
            return None
        h = hashlib.blake2b(f"{net.activation}/{Norm(norm).value}/{eps!r}".encode(), digest_size=16)
        for t in (net.W, net.b, x):
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    def lines(self, net: TwoLayerLinear, x: Tensor, eps: float, norm: Norm) -> tuple[Tensor, ...]:
        key = self.key(net, x, eps, norm)
        if key is not None and key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        lo, hi = preactivation_bounds(net, x, eps, norm)
        out = relaxation(net, lo, hi)
        if key is not None and _nbytes(out) <= self.budget:
            self.entries[key] = out
            self.size += _nbytes(out)
            while self.size > self.budget:
                self.size -= _nbytes(self.entries.popitem(last=False)[1])
        return out


def _nbytes(tensors: tuple[Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


_MEMO = RelaxationMemo()


def _crown(net: TwoLayerLinear, x: Tensor, spec: Tensor, eps: float, norm: Norm) -> Tensor:
    x = x.to(net.W)
    a_l, c_l, a_u, c_u = _MEMO.lines(net, x, eps, norm)
    A = spec @ net.V  # (n, r, m)
    pos = A >= 0
    # A lower bound of sum_i A_i h_i takes each unit's lower line where A_i >= 0 and its upper line elsewhere.
    slope = torch.where(pos, a_l[:, None, :], a_u[:, None, :])
    icpt = torch.where(pos, c_l[:, None, :], c_u[:, None, :])
    g = (A * slope) @ net.W  # (n, r, d): the margin's lower line as a function of x
    const = (A * icpt).sum(-1) + spec @ net.c
    # min of <g, x'> over the ball = <g, x0> - eps ||g||_* (Hoelder, attained): exact for the linear function.
    return (g @ x[:, :, None]).squeeze(-1) - eps * dual_norm(g, norm) + const


BOUNDS: dict[BoundMethod, Callable[[TwoLayerLinear, Tensor, Tensor, float, Norm], Tensor]] = {
    BoundMethod.ibp: _ibp,
    BoundMethod.crown: _crown,
    BoundMethod.best: lambda *a: torch.maximum(_ibp(*a), _crown(*a)),
}


def margin_lower_bound(
    net: TwoLayerLinear, x: Tensor, spec: Tensor, *, eps: float, norm: Norm, method: BoundMethod = BoundMethod.best
) -> Tensor:
    """(n, r) lower bounds of ``spec @ logits(x')`` over every x' with ||x' - x|| <= eps (the bound functions work
    in the model's centred coordinates)."""
    return BOUNDS[BoundMethod(method)](net, net.centred(x), spec.to(net.W), float(eps), Norm(norm))


def logit_bounds(
    net: TwoLayerLinear, x: Tensor, *, eps: float, norm: Norm, method: BoundMethod = BoundMethod.best
) -> tuple[Tensor, Tensor]:
    """(n, C) lower and upper bounds of the logits over the ball (specifications +-I)."""
    eye = torch.eye(net.V.shape[0], dtype=net.W.dtype, device=net.W.device).expand(x.shape[0], -1, -1)
    low = margin_lower_bound(net, x, eye, eps=eps, norm=norm, method=method)
    up = -margin_lower_bound(net, x, -eye, eps=eps, norm=norm, method=method)
    return low, up


def certified_mask(
    net: TwoLayerLinear, x: Tensor, spec: Tensor, *, eps: float, norm: Norm, method: BoundMethod = BoundMethod.best
) -> Tensor:
    """(n,) bool: every margin provably positive on the whole eps-ball."""
    return margin_lower_bound(net, x, spec, eps=eps, norm=norm, method=method).amin(dim=1) > 0


Certifier = Callable[[Tensor, Tensor, float], Tensor]  # (x, y, eps) -> (n,) bool certified


def certifier_for(
    model: nn.Module,
    margin_fn: Callable[[Tensor, Tensor], Tensor],
    norm: Norm,
    method: BoundMethod = BoundMethod.best,
) -> Certifier | None:
    """A certifier for ``model`` under ``margin_fn``, or None when the model or the margin is not supported."""
    net = as_two_layer(model) if isinstance(model, nn.Module) else None
    make_spec = SPECS.get(margin_fn)
    if net is None or make_spec is None:
        return None
    n_classes = net.V.shape[0]

    def run(x: Tensor, y: Tensor, eps: float) -> Tensor:
        return certified_mask(net, x, make_spec(y, n_classes), eps=eps, norm=norm, method=method)

    return run


def certified_accuracy(
    certifier: Certifier, x: Tensor, y: Tensor, *, eps_grid: tuple[float, ...]
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Certified accuracy at each eps and the per-example masks.

    A certificate for a ball covers every smaller ball, so an example certified at some eps counts as
    certified at every smaller eps of the grid (the curve is non-increasing by construction).
    """
    masks: dict[str, Tensor] = {}
    covered = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for eps in sorted(eps_grid, reverse=True):
        covered = covered | certifier(x, y, eps).to(x.device)
        masks[eps_key(eps)] = covered.clone()
    ordered = {eps_key(e): masks[eps_key(e)] for e in sorted(eps_grid)}
    return {k: float(m.float().mean()) for k, m in ordered.items()}, ordered
