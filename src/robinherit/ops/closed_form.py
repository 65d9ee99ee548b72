"""Closed-form input gradients of the two-layer model, for the inner maximisation of PGD/FGM.

The network of Allen-Zhu & Li (2020) is small enough to differentiate by hand: with u = x W^T,
h = act(u, b), logits = h V^T + c and a per-example loss L(logits, y),

    dL/dx = ((dL/dlogits V) * act'(u)) W

Inside an attack the weights are fixed, so the row normalisation of W needs no derivative: W here is
the effective (already normalised) weight. This replaces an autograd graph per attack step by three
matmuls and a few elementwise ops. The same code serves one model, x (n, d), and a stack of S models,
x (S, n, d) with weights (S, m, d) (see ``robinherit.training.stacked``).

``attacks.input_grad`` uses ``value_and_grad`` when a loss function provides it, so a
:class:`TwoLayerLoss` goes into ``pgd``/``fgm`` wherever a ``loss_fn(x) -> (n,)`` closure would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robinherit.models.encoder import CLOSED_FORM, supports
from robinherit.models.two_layer import LinearHead
from robinherit.models.units import Threshold, active_grad, unit
from robinherit.ops.losses import LOSS_GRADS


def back_through_head(g_logits: Tensor, head_weight: Tensor) -> Tensor:
    """``g_logits @ head_weight``, (..., n, K) x (..., K, m). With one output (K = 1) it is an outer product,
    which a broadcast multiply computes to the same bits at a fraction of a batched matmul's cost."""
    if head_weight.shape[-2] == 1:
        return g_logits * head_weight
    return g_logits @ head_weight


def _linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """h V^T + c for one model (h (n, m), V (K, m)) or a stack (h (S, n, m), V (S, K, m), c (S, 1, K))."""
    if weight.dim() == 2:
        return F.linear(h, weight, bias)
    return torch.baddbmm(bias, h, weight.transpose(1, 2))


@dataclass(frozen=True)
class TwoLayerLoss:
    """``sign * loss(V act(x W^T, b) + c, targets)`` per example, with its closed-form input gradient.

    Shapes, one model: weight (m, d), threshold (m,), head_weight (K, m), head_bias (K,), x (n, d).
    Stack of S models: weight (S, m, d), threshold (S, 1, m), head_weight (S, K, m), head_bias (S, 1, K),
    x (S, n, d); losses come out as (S, n). ``sign=-1`` turns a margin into a loss to maximise.
    """

    weight: Tensor
    threshold: Threshold  # (m,), (S, 1, m), or one float (activations.uniform_threshold)
    head_weight: Tensor
    head_bias: Tensor
    activation: str  # a name of activations.UNITS
    loss: Callable[[Tensor, Tensor], Tensor]
    targets: Tensor
    sign: float = 1.0
    center: Tensor | None = None  # (d,) input centre of the model, subtracted before the first layer

    def _args(self) -> tuple:
        return (
            self.weight,
            self.threshold,
            self.head_weight,
            self.head_bias,
            self.activation,
            self.loss,
            self.targets,
            self.center,
        )

    def __call__(self, x: Tensor) -> Tensor:
        return self.sign * two_layer_loss(x, *self._args())

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example losses (..., n) and their gradients with respect to x (..., n, d)."""
        loss, g_x = two_layer_loss_and_grad(x, *self._args())
        if self.sign != 1.0:
            return self.sign * loss, self.sign * g_x
        return loss, g_x


def first_layer(x: Tensor, weight: Tensor) -> Tensor:
    """u = x W^T for one model (x (n, d), W (m, d)) or a stack (x (S, n, d), W (S, m, d)). The stack calls ``bmm``
    itself: ``@`` on two 3-d tensors reaches the same kernel through three more operations."""
    if x.dim() == 3 and weight.dim() == 3:
        return torch.bmm(x, weight.transpose(1, 2))
    return x @ weight.transpose(-1, -2)


def back_through_first(g_u: Tensor, weight: Tensor) -> Tensor:
    """g_u W, (..., n, m) x (..., m, d): the input gradient through the first layer (``bmm`` for a stack)."""
    if g_u.dim() == 3 and weight.dim() == 3:
        return torch.bmm(g_u, weight)
    return g_u @ weight


def _forward(
    x: Tensor, weight: Tensor, threshold: Threshold, head_weight: Tensor, head_bias: Tensor, activation, center=None
) -> tuple[Tensor, Tensor, Tensor]:
    """(u, h, logits): pre-activations, features and logits."""
    if center is not None:  # an affine map of the input: d/dx of f(x - c) is f'(x - c), so gradients are unchanged
        x = x - center
    u = first_layer(x, weight)
    h = unit(activation).fast(u, threshold)  # (..., n, m)
    return u, h, _linear(h, head_weight, head_bias)


def two_layer_loss(
    x: Tensor,
    weight: Tensor,
    threshold: Threshold,
    head_weight: Tensor,
    head_bias: Tensor,
    activation: str,
    loss: Callable[[Tensor, Tensor], Tensor],
    targets: Tensor,
    center: Tensor | None = None,
) -> Tensor:
    """:class:`TwoLayerLoss`'s value (sign +1) as a function of tensors (what compiled code calls)."""
    _, _, logits = _forward(x, weight, threshold, head_weight, head_bias, activation, center)
    return LOSS_GRADS[loss](logits, targets)[0]


def two_layer_loss_and_grad(
    x: Tensor,
    weight: Tensor,
    threshold: Threshold,
    head_weight: Tensor,
    head_bias: Tensor,
    activation: str,
    loss: Callable[[Tensor, Tensor], Tensor],
    targets: Tensor,
    center: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:class:`TwoLayerLoss`'s value and input gradient (sign +1) as a function of tensors."""
    u, h, logits = _forward(x, weight, threshold, head_weight, head_bias, activation, center)
    value, g_logits = LOSS_GRADS[loss](logits, targets)  # (..., n), (..., n, K)
    g_u = unit(activation).active(back_through_head(g_logits, head_weight), u, h, threshold, overwrite=True)
    return value, back_through_first(g_u, weight)  # (..., n, d)


def fused_loss(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], targets: Tensor, sign: float = 1.0
) -> TwoLayerLoss | None:
    """The closed-form version of ``lambda x: sign * loss_fn(model(x), targets)``, or None where there is none.

    ``model`` is an encoder that declares the ``closed_form`` capability (``models.encoder``: the two-layer net)
    or a :class:`LinearHead` on one; its current weights are captured (detached), so build a new one after every
    optimiser step.
    """
    if loss_fn not in LOSS_GRADS:
        return None
    if supports(model, CLOSED_FORM):
        encoder, head = model, model.head
    elif isinstance(model, LinearHead) and supports(model.encoder, CLOSED_FORM):
        encoder, head = model.encoder, model.linear
    else:
        return None
    return TwoLayerLoss(
        weight=encoder.weight().detach(),
        threshold=encoder.threshold().detach(),
        head_weight=head.weight.detach(),
        head_bias=head.bias.detach(),
        activation=encoder.cfg.activation,
        loss=loss_fn,
        targets=targets,
        sign=sign,
        center=encoder.center,
    )


def attack_loss(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], targets: Tensor
) -> Callable[[Tensor], Tensor]:
    """A loss for ``pgd``/``fgm``: closed-form where ``fused_loss`` has one, else the autograd closure."""
    fused = fused_loss(model, loss_fn, targets)
    if fused is not None:
        return fused
    return lambda x: loss_fn(model(x), targets)


# ---- contrastive: the RoCL attack on InfoNCE (Kim et al. 2020) in closed form ----


def _normalized(e: Tensor) -> tuple[Tensor, Tensor]:
    """``F.normalize(e, dim=-1, eps=1e-12)`` and the clamped norms it divided by, (..., n, 1)."""
    r = e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return e / r, r


def _addmm(bias: Tensor, a: Tensor, b: Tensor, alpha: float = 1.0) -> Tensor:
    """bias + alpha a b for one model (2-d a, b) or a stack (3-d), in one kernel."""
    if a.dim() == 2:
        return torch.addmm(bias, a, b, alpha=alpha)
    return torch.baddbmm(bias, a, b, alpha=alpha)


# Below this temperature exp(S - 1/t) could underflow (|S| <= 1/t for unit vectors); the autograd path is used.
MIN_CLOSED_FORM_TEMPERATURE = 0.05


def embed(
    x: Tensor,
    weight: Tensor,
    threshold: Tensor,
    activation: str,
    projector: Tensor | None = None,
    center: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Hidden features h = act((x - centre) W^T, b), (..., n, m), and the contrastive embedding e = h P^T (h itself
    without a projector P), for one model or a stack (weight (S, m, d), projector (S, k, m))."""
    if center is not None:
        x = x - center
    h = unit(activation).fast(x @ weight.mT, threshold)
    return h, (h if projector is None else h @ projector.mT)


@dataclass(frozen=True)
class InfoNCEViewLoss:
    """Per-example ``losses.info_nce(embed(x), partner, temperature)`` with its closed-form input gradient, for the
    adversarial view of contrastive pre-training (``pretraining.adversarial_view``).

    embed(x) = act(x W^T, b) P^T (P the optional linear projector, (k, m)); the partner view's embeddings
    (n, k) are held fixed, so their block of the similarity matrix is summed once. With a = e / ||e||
    (e = embed(x)), S_ab = a b^T / t and S_aa = a a^T / t (diagonal excluded), example i's loss is
    1/2 (log Z^a_i + log Z^b_i) - S_ab[i, i], where Z^a_i sums exp over row i of S_ab and S_aa and Z^b_i over
    column i of S_ab and row i of S_bb. The summed loss T has

        dT/dS_ab[i, j] = 1/2 exp(S_ab[i, j]) (1 / Z^a_i + 1 / Z^b_j) - [i = j],
        dT/dS_aa[i, j] = 1/2 exp(S_aa[i, j]) / Z^a_i,

    so dT/da = (G_ab b + (G_aa + G_aa^T) a) / t (S_aa being symmetric, the sum is one elementwise pass), then
    through the normalisation, the projector and the
    activation as in :func:`two_layer_loss_and_grad`. Unit vectors bound |S| by 1/t, so the exponentials are
    taken of S - 1/t (<= 0) directly, without logsumexp's extra passes; ``info_nce_view_loss`` keeps
    temperatures below ``MIN_CLOSED_FORM_TEMPERATURE`` on the autograd path, where they could underflow.
    The gradient is that of the summed loss, as ``attacks.input_grad`` takes it.

    The same code serves a stack of S encoders (``robinherit.training.stacked``): weight (S, m, d), threshold (S, 1, m),
    projector (S, k, m), partner (S, n, k), x (S, n, d); losses (S, n), each model's own batch as its negatives.
    """

    weight: Tensor  # (m, d) effective (row-normalised) first-layer weights
    threshold: Tensor  # (m,)
    activation: str  # a name of activations.UNITS
    projector: Tensor | None  # (k, m), or None for the identity
    partner: Tensor  # (n, k) the partner view's embeddings, normalised
    partner_z: Tensor  # (n,) sum_{j != i} exp(S_bb[i, j] - 1/t)
    temperature: float
    center: Tensor | None = None  # (d,) the encoder's input centre

    def _embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return embed(x, self.weight, self.threshold, self.activation, self.projector, self.center)

    def _terms(self, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """exp(S_ab - 1/t), exp(S_aa - 1/t) (zero diagonal), Z^a and Z^b (both scaled by exp(-1/t)), the losses."""
        e_ab = _shifted_exp(a, self.partner, self.temperature)
        e_aa = _shifted_exp(a, a, self.temperature)
        e_aa.diagonal(dim1=-2, dim2=-1).zero_()
        z_a = e_ab.sum(dim=-1) + e_aa.sum(dim=-1)
        z_b = e_ab.sum(dim=-2) + self.partner_z
        loss = 0.5 * (z_a.log() + z_b.log()) - e_ab.diagonal(dim1=-2, dim2=-1).log()
        return e_ab, e_aa, z_a, z_b, loss

    def __call__(self, x: Tensor) -> Tensor:
        a, _ = _normalized(self._embed(x)[1])
        return self._terms(a)[-1]

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example losses (..., n) and the gradient of their sum with respect to x, (..., n, d)."""
        h, e = self._embed(x)
        a, r = _normalized(e)
        e_ab, e_aa, z_a, z_b, loss = self._terms(a)
        half_a, half_b = 0.5 / z_a, 0.5 / z_b
        g_ab = e_ab * (half_a[..., :, None] + half_b[..., None, :])
        g_ab.diagonal(dim1=-2, dim2=-1).sub_(1.0)
        # G_aa + G_aa^T in one pass: S_aa is symmetric, so (G_aa^T)[i, j] = 1/2 exp(S_aa[i, j]) / Z^a_j
        g_aa = e_aa.mul_(half_a[..., :, None] + half_a[..., None, :])
        g_a = _addmm(g_ab @ self.partner, g_aa, a).div_(self.temperature)
        # through a = e / max(||e||, 1e-12): the radial part drops out unless the norm was clamped
        radial = (a * g_a).sum(dim=-1, keepdim=True).masked_fill_(r <= 1e-12, 0.0)
        g_e = (g_a - a * radial) / r
        g_h = g_e if self.projector is None else g_e @ self.projector
        return loss, active_grad(g_h, h) @ self.weight


def _shifted_exp(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """exp(a b^T / t - 1/t) for unit rows: entries in [exp(-2/t), 1]."""
    return _addmm(a.new_full((), -1.0 / temperature), a, b.mT, alpha=1.0 / temperature).exp_()


def info_nce_and_grad(e: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """:func:`info_nce` of two views and the gradient of its sum over examples, in closed form, for the training
    step of contrastive pre-training (``robinherit.training.stacked``) where both views are trained.

    ``e`` (..., 2n, k) holds the raw embeddings of view a (rows 0..n-1) then view b (rows n..2n-1); returns the
    per-example losses (..., n), equal to ``info_nce(e[..., :n, :], e[..., n:, :], temperature)``, and their summed
    gradient with respect to ``e``, (..., 2n, k). Works on one batch or a stack of S batches.

    The 2n views as one set: with u = e / ||e|| and S = u u^T / t (diagonal excluded), row r's anchor loss is
    log Z_r - S[r, r'] with Z_r = sum_j exp(S[r, j]) and r' its partner view, and example i's loss is the mean of
    rows i and n + i. The summed loss T therefore has dT/dS[r, j] = 1/2 exp(S[r, j]) / Z_r - 1/2 [j = r'], and as
    S is symmetric, dT/du = G u / t with G[r, j] = 1/2 exp(S[r, j]) (1 / Z_r + 1 / Z_j) - [j = r'] (no transpose
    pass), then through the normalisation. Unit vectors bound |S| by 1/t, so the exponentials are taken of
    S - 1/t (entries in [exp(-2/t), 1]) directly, without logsumexp's extra passes; callers keep temperatures
    below ``MIN_CLOSED_FORM_TEMPERATURE`` (where those could underflow) on the autograd path.
    """
    n = e.shape[-2] // 2
    u, r = _normalized(e)
    t = temperature
    ex = _shifted_exp(u, u, t)
    ex.diagonal(dim1=-2, dim2=-1).zero_()  # an embedding is never its own negative
    z = ex.sum(dim=-1)  # (..., 2n), each scaled by exp(-1/t)
    pos = (u[..., :n, :] * u[..., n:, :]).sum(dim=-1)  # (..., n) cosine of the positive pair
    log_z = z.log()
    loss = 0.5 * (log_z[..., :n] + log_z[..., n:]) - (pos - 1.0) / t
    half = 0.5 / z
    g = ex.mul_(half[..., :, None] + half[..., None, :])
    g[..., :n, n:].diagonal(dim1=-2, dim2=-1).sub_(1.0)  # the positive of anchor i is n + i ...
    g[..., n:, :n].diagonal(dim1=-2, dim2=-1).sub_(1.0)  # ... and that of n + i is i
    g_u = (g @ u).div_(t)
    # through u = e / max(||e||, 1e-12): the radial part drops out unless the norm was clamped (a zero embedding)
    radial = (u * g_u).sum(dim=-1, keepdim=True).masked_fill_(r <= 1e-12, 0.0)
    return loss, (g_u - u * radial) / r


def view_loss(
    weight: Tensor,
    threshold: Tensor,
    activation: str,
    projector: Tensor | None,
    partner_embedding: Tensor,
    temperature: float,
    center: Tensor | None = None,
) -> InfoNCEViewLoss:
    """:class:`InfoNCEViewLoss` from an encoder's tensors (one model or a stack; all detached) against the raw
    partner embeddings (..., n, k): normalises them and sums their own block of the similarity matrix once."""
    b, _ = _normalized(partner_embedding.detach())
    e_bb = _shifted_exp(b, b, temperature)
    e_bb.diagonal(dim1=-2, dim2=-1).zero_()
    return InfoNCEViewLoss(
        weight=weight,
        threshold=threshold,
        activation=activation,
        projector=projector,
        partner=b,
        partner_z=e_bb.sum(dim=-1),
        temperature=temperature,
        center=center,
    )


def info_nce_view_loss(
    model: nn.Module, projector: nn.Module, partner_embedding: Tensor, temperature: float
) -> InfoNCEViewLoss | None:
    """:class:`InfoNCEViewLoss` at the current weights of an encoder with the ``closed_form`` capability (the two-layer
    net) and an identity or bias-free linear projector, against ``partner_embedding`` (n, k) (raw, detached); None
    for any other model or for a temperature below ``MIN_CLOSED_FORM_TEMPERATURE``."""
    if not supports(model, CLOSED_FORM):
        return None
    if temperature < MIN_CLOSED_FORM_TEMPERATURE:
        return None
    if isinstance(projector, nn.Identity):
        proj = None
    elif type(projector) is nn.Linear and projector.bias is None:
        proj = projector.weight.detach()
    else:
        return None
    return view_loss(
        model.weight().detach(),
        model.threshold().detach(),
        model.cfg.activation,
        proj,
        partner_embedding,
        temperature,
        model.center,
    )
