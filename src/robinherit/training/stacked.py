"""S independent runs as one batched computation: supervised or contrastive (adversarial) pre-training of stacked
models.

At the default sizes one two-layer step is far too small to keep a CPU busy: time goes to Python and
autograd overhead. Stacking S models that share shapes (weights (S, m, d), inputs (S, n, d)) turns S
small matmuls into one batched matmul, with the overhead paid once per step instead of S times.

Every model keeps its own run: its own named random streams (``seeding.generator(seed, name)``), so its
own init, data batches and attack random starts; Adam and SGD act elementwise, so one optimiser over the
stacked tensors is S independent optimisers. A model's result equals the one ``run_experiment`` gives for
its config (to float rounding: a batched matmul sums in another order). Adversarial training is
Madry et al. (2018), with PGD/FGM run per model on the stack using closed-form input gradients
(``robinherit.ops.closed_form``). Contrastive pre-training is SimCLR's InfoNCE, adversarial as in RoCL (Kim et al.
2020),
with each model's own augmented views and its own batch as negatives, its weight gradients in closed form too.
Only pre-training is batched (it is the dominant cost); purification, downstream heads and evaluation run per
model, exactly as in ``run_experiment``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from robinherit.attacks.gradient import random_start
from robinherit.config import AdversarialView, AttackKind, EncoderKind, ExperimentConfig, Method, ModelConfig, Norm
from robinherit.data.augment import make_views
from robinherit.models.two_layer import TwoLayerNet, projector_weight
from robinherit.models.units import Threshold, active_grad, row_norms, uniform_threshold, unit, unit_rows
from robinherit.ops.closed_form import (
    MIN_CLOSED_FORM_TEMPERATURE,
    InfoNCEViewLoss,
    TwoLayerLoss,
    back_through_head,
    embed,
    first_layer,
    info_nce_and_grad,
    two_layer_loss,
    two_layer_loss_and_grad,
    view_loss,
)
from robinherit.ops.losses import LOSS_GRADS, multilabel_bce
from robinherit.seeding import generator
from robinherit.training.allocator import keep_freed_memory
from robinherit.training.optim import PretrainLog, check_finite, make_optimizer
from robinherit.world.sparse_coding import BatchStream, next_stacked

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Methods whose pre-training has a batched implementation; others run one model at a time.
BATCHED_METHODS = frozenset({Method.supervised, Method.contrastive})


def supports_config(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg``'s pre-training has a stacked, closed-form path: the two-layer encoder, a method of
    ``BATCHED_METHODS``, a training attack of ``STACKED_ATTACKS``, and for contrastive pre-training a temperature
    of at least ``fused.MIN_CLOSED_FORM_TEMPERATURE`` (below it the shifted exponentials could underflow). Every
    other config trains on the autograd loop of ``robinherit.training.pretraining``."""
    pcfg = cfg.pretrain
    if pcfg.method not in BATCHED_METHODS or cfg.model.encoder != EncoderKind.two_layer:
        return False
    if pcfg.eps > 0 and pcfg.attack not in STACKED_ATTACKS:
        return False
    return pcfg.method != Method.contrastive or pcfg.temperature >= MIN_CLOSED_FORM_TEMPERATURE


def batch_key(cfg: ExperimentConfig) -> str | None:
    """Configs with the same key can be pre-trained as one stack; None where there is no batched path.

    Everything that shapes pre-training must agree except the seed and the attack budget (kept per model);
    clean and adversarial runs go to different stacks, so clean ones do not pay for an attack.
    """
    if not supports_config(cfg):
        return None
    raw = cfg.resolved()
    pre = dict(raw["pretrain"], eps=None, adversarial=cfg.pretrain.eps > 0)
    return json.dumps([raw["data"], raw["model"], pre, raw["device"]], sort_keys=True)


# The largest stack of a method on the CPU, where larger stacks cost more per model: a contrastive step's (2n, 2n)
# similarity matrices, 1 MiB per model at batch 256, leave the caches as S grows. Measured on the 2-core machine,
# one thread, `python -m benchmarks.contrastive_step --steps 20 --repeats 3 --sizes 2,4,8,16,32`: CPU ms per model
# and step 27.8 (S = 1), 23.4, 23.5, 22.7 (S = 8), 25.4, 26.3 (S = 32).
CPU_MAX_STACK: dict[Method, int] = {Method.contrastive: 8}


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

    def attack_loss(self, loss_fn: Callable[[Tensor, Tensor], Tensor], targets: Tensor) -> TwoLayerLoss:
        """The per-model loss (S, n) at the current weights, with closed-form input gradients."""
        return TwoLayerLoss(
            weight=self.weight().detach(),
            threshold=self.threshold().detach(),
            head_weight=self.V.detach(),
            head_bias=self.c.detach()[:, None, :],
            activation=self.cfg.activation,
            loss=loss_fn,
            targets=targets,
        )

    @torch.no_grad()
    def loss_and_grads(self, x: Tensor, targets: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Mean loss per model (S,) on (S, n, d) inputs; sets every trainable parameter's ``.grad`` in closed form
        (:func:`closed_form_grads`)."""
        loss, (g_w, g_b, g_v, g_c) = closed_form_grads(
            self.W, self.b, self.V, self.c, x, targets, LOSS_GRADS[loss_fn], self.cfg, self.b.requires_grad
        )
        self.W.grad, self.V.grad, self.c.grad = g_w, g_v, g_c
        if g_b is not None:
            self.b.grad = g_b
        return loss

    @torch.no_grad()
    def unstack(self, models: Sequence[TwoLayerNet]) -> None:
        """Copy each model's trained weights back into ``models``."""
        for s, m in enumerate(models):
            m.W.copy_(self.W[s])
            m.b.copy_(self.b[s])
            m.head.weight.copy_(self.V[s])
            m.head.bias.copy_(self.c[s])


def closed_form_grads(
    W: Tensor,
    b: Tensor,
    V: Tensor,
    c: Tensor,
    x: Tensor,
    targets: Tensor,
    loss_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    cfg: ModelConfig,
    learn_b: bool,
    threshold: float | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor, Tensor]]:
    """Mean loss per model (S,) and the gradients (dW, db or None, dV, dc) of the stack's summed mean losses.

    The backward pass of ``StackedTwoLayer.forward`` written out (what autograd would compute), which spares
    the graph and the four-op activation of the autograd path: with g = dL/dlogits / n, dV = g^T h,
    dc = sum_n g, dU = (g V) * act'(u), dW_eff = dU^T x, and through w / ||w||:
    dW = (dW_eff - w_hat <w_hat, dW_eff>) / ||w||. A pure function of tensors, so it can be compiled.
    ``threshold``: b as one float where it is fixed and the same for every unit (:func:`fixed_threshold`).
    """
    n = x.shape[1]
    w, norms, u, h, thr = _first_layer(W, b, x, cfg, threshold)
    logits = torch.baddbmm(c[:, None, :], h, V.transpose(1, 2))  # (S, n, K)
    loss, g = loss_grad(logits, targets)  # (S, n), (S, n, K)
    g = g / n
    g_v = g.transpose(1, 2) @ h  # (S, K, m)
    g_c = g.sum(dim=1)  # (S, K)
    g_u = unit(cfg.activation).active(back_through_head(g, V), u, h, thr, overwrite=True)  # (S, n, m)
    g_w, g_b = _first_layer_grads(g_u, u, x, w, norms, b, cfg, learn_b)
    return loss.mean(dim=1), (g_w, g_b, g_v, g_c)


def _first_layer(
    W: Tensor, b: Tensor, x: Tensor, cfg: ModelConfig, threshold: float | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Threshold]:
    """The stacked first layer's forward from raw parameters, keeping what its backward (``_first_layer_grads``)
    needs: effective weights w (S, m, d), row norms (S, m, 1), pre-activations u = x w^T, features h (S, n, m)
    and the threshold they used (``threshold`` where given, else b's, (S, 1, m))."""
    norms = row_norms(W)
    w = W / norms if cfg.normalize_rows else W
    u = first_layer(x, w)
    thr = b.clamp_min(0.0)[:, None, :] if threshold is None else threshold
    return w, norms, u, unit(cfg.activation).fast(u, thr), thr


def _first_layer_grads(
    g_u: Tensor, u: Tensor, x: Tensor, w: Tensor, norms: Tensor, b: Tensor, cfg: ModelConfig, learn_b: bool
) -> tuple[Tensor, Tensor | None]:
    """(dW, db or None) from the gradient at the pre-activations g_u = dL/du (S, n, m), u = x w^T, w the effective
    weights (W / ||W|| with ``normalize_rows``, whose row norms are ``norms``)."""
    g_w = g_u.transpose(1, 2) @ x  # (S, m, d)
    if cfg.normalize_rows:
        g_w = (g_w - w * (g_w * w).sum(dim=2, keepdim=True)) / norms
    g_b = None
    if learn_b:
        # dh/db = -threshold_sign(u) where the unit is active (g_u is 0 elsewhere); clamp_min(0) passes b >= 0.
        g_b = -(g_u * unit(cfg.activation).threshold_sign(u)).sum(dim=1) * (b >= 0)
    return g_w, g_b


def contrastive_grads(
    W: Tensor,
    b: Tensor,
    P: Tensor | None,
    x1: Tensor,
    x2: Tensor,
    *,
    temperature: float,
    cfg: ModelConfig,
    learn_b: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor | None]]:
    """Mean InfoNCE per model (S,) of the views x1, x2 (S, n, d) and the gradients (dW, db or None, dP or None) of
    the stack's summed mean losses: the backward pass of ``pretraining.pretrain_contrastive``'s training step
    written out (what autograd computes through ``losses.info_nce``).

    Both views go through the encoder as one batch of 2n, e = act(x w^T, b) P^T (P the optional linear
    projector (S, k, m)); ``fused.info_nce_and_grad`` gives dL/de in closed form, and from there
    dP = g_e^T h, dU = (g_e P) * act'(u), and the first layer as in :func:`closed_form_grads`. The model's head
    takes no part. A pure function of tensors.
    """
    n = x1.shape[1]
    x = torch.cat([x1, x2], dim=1)  # (S, 2n, d)
    w, norms, u, h, _ = _first_layer(W, b, x, cfg)  # u, h (S, 2n, m)
    e = h if P is None else h @ P.transpose(1, 2)  # (S, 2n, k)
    loss, g_e = info_nce_and_grad(e, temperature)  # (S, n), (S, 2n, k)
    g_e = g_e.div_(n)  # of the mean over the batch
    g_p = None if P is None else g_e.transpose(1, 2) @ h  # (S, k, m)
    g_u = active_grad(g_e if P is None else g_e @ P, h)  # (S, 2n, m)
    g_w, g_b = _first_layer_grads(g_u, u, x, w, norms, b, cfg, learn_b)
    return loss.mean(dim=1), (g_w, g_b, g_p)


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
    start ``delta`` (:func:`pgd_from`), then :func:`closed_form_grads` at the attack's points. What
    ``pretrain_stacked`` compiles with ``ROBINHERIT_COMPILE=1``; the eager path computes the same.
    ``threshold`` as in :func:`closed_form_grads`."""
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
    """What ``pgd_from`` needs of a loss: its value and its value with the input gradient."""

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


def _run_step(*args: Any, **kwargs: Any) -> tuple[Tensor, tuple[Tensor, Tensor | None, Tensor, Tensor]]:
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


def per_example(loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, targets: Tensor) -> Tensor:
    """A per-example loss of ``robinherit.ops.losses`` on stacked (S, n, ...) inputs -> (S, n)."""
    S, n = logits.shape[:2]
    return loss_fn(logits.reshape(S * n, *logits.shape[2:]), targets.reshape(S * n, *targets.shape[2:])).reshape(S, n)


# ---- attacks on a stack: the same steps as robinherit.attacks.gradient, one budget and one generator per model ----


def _norm_last(t: Tensor, norm: Norm) -> Tensor:
    """Per-example norm over the last dim of (S, n, d), shaped (S, n, 1)."""
    return t.norm(dim=-1, keepdim=True) if norm == Norm.l2 else t.abs().amax(dim=-1, keepdim=True)


def _project(delta: Tensor, eps: Tensor, norm: Norm) -> Tensor:
    """``attacks.project`` with a per-model budget ``eps`` of shape (S, 1, 1)."""
    if norm == Norm.linf:
        return torch.clamp(delta, -eps, eps)
    return delta * torch.clamp(eps * (1 - 1e-6) / _norm_last(delta, Norm.l2).clamp_min(1e-12), max=1.0)


def _ascent(grad: Tensor, norm: Norm) -> Tensor:
    return grad.sign() if norm == Norm.linf else grad / _norm_last(grad, Norm.l2).clamp_min(1e-12)


def stacked_random_start(x: Tensor, eps: Sequence[float], norm: Norm, generators: Sequence[torch.Generator]) -> Tensor:
    """Each model's PGD random start, drawn from its own generator as its single run draws it
    (``attacks.random_start``, to the bit): the draws per model, the arithmetic once on the stack (S, n, d), which
    at S = 32 spares about 300 small operations per step."""
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
    # attacks.project: its float / tensor is Tensor.__rtruediv__, a reciprocal and a multiply
    inside = torch.tensor([v * (1 - 1e-6) for v in eps], **kw)[:, None, None]
    return delta.mul_(torch.clamp(delta.norm(dim=-1, keepdim=True).clamp_min(1e-12).reciprocal() * inside, max=1.0))


def budgets(eps: Sequence[float], steps: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(eps, step size 2.5 eps / steps) per model, shaped (S, 1, 1)."""
    eps_t = torch.tensor(eps, dtype=x.dtype, device=x.device)[:, None, None]
    alpha = torch.tensor([2.5 * e / steps for e in eps], dtype=x.dtype, device=x.device)[:, None, None]
    return eps_t, alpha


def stacked_pgd(
    loss: TwoLayerLoss,
    x: Tensor,
    *,
    eps: Sequence[float],
    norm: Norm,
    steps: int,
    generators: Sequence[torch.Generator],
) -> Tensor:
    """``attacks.pgd`` (one restart, random start) on a stack: x (S, n, d), model s attacked with eps[s]."""
    x = x.detach()
    eps_t, alpha = budgets(eps, steps, x)
    return pgd_from(loss, x, stacked_random_start(x, eps, norm, generators), eps_t, alpha, norm, steps)


def pgd_from(
    loss: TwoLayerLoss | _Loss, x: Tensor, delta: Tensor, eps: Tensor, alpha: Tensor, norm: Norm, steps: int
) -> Tensor:
    """PGD on a stack from the start ``delta``, with per-model budgets ``eps`` and step sizes ``alpha`` (S, 1, 1);
    the point of highest loss per example over the iterates. A pure function of tensors.

    The same iterates as ``attacks.pgd`` up to rounding; the step is folded into one multiply-add per
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
            value, grad = loss.value_and_grad(x_adv)
        else:
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
            delta = torch.clamp(delta + grad.sign() * alpha, -eps, eps)
        else:
            delta = l2_step(delta, grad, alpha, radius)
    return best_point(points, values) if keep else best_x


def l2_step(delta: Tensor, grad: Tensor, alpha: Tensor, radius: Tensor) -> Tensor:
    """One l2 PGD step of :func:`pgd_from` on a stack: the offset ``delta`` moved by ``alpha`` along the normalised
    ``grad``, then scaled back into the ball of ``radius`` (eps (1 - 1e-6), as ``attacks.project``), with alpha and
    radius (S, 1, 1). The move is one multiply-add per element."""
    delta = torch.addcmul(delta, grad, alpha / grad.norm(dim=-1, keepdim=True).clamp_min_(1e-12))
    return delta * torch.clamp(radius / delta.norm(dim=-1, keepdim=True).clamp_min_(1e-12), max=1.0)


# pgd_from keeps every iterate where they take at most this much memory together (a training minibatch's do)
KEEP_ITERATES_BYTES = 64 * 2**20


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


def stacked_fgm(
    loss: TwoLayerLoss, x: Tensor, *, eps: Sequence[float], norm: Norm, steps: int, generators: Sequence
) -> Tensor:
    """``attacks.fgm`` on a stack (no randomness, so ``generators`` is unused)."""
    eps_t = torch.tensor(eps, dtype=x.dtype, device=x.device)[:, None, None]
    _, grad = loss.value_and_grad(x.detach())
    return x.detach() + _project(eps_t * _ascent(grad, norm), eps_t, norm)


STACKED_ATTACKS: dict[AttackKind, Callable[..., Tensor]] = {AttackKind.pgd: stacked_pgd, AttackKind.fgm: stacked_fgm}


def pretrain_stacked(
    net: StackedTwoLayer,
    streams: Sequence[BatchStream],
    cfgs: Sequence[ExperimentConfig],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = multilabel_bce,
    on_step: Callable[[int, int], None] | None = None,
) -> list[PretrainLog]:
    """``pretraining.pretrain_supervised`` for a stack: model s sees streams[s] and is attacked at its eps."""
    keep_freed_memory()
    pcfg = cfgs[0].pretrain  # shared by the stack except eps (see batch_key)
    eps = [c.pretrain.eps for c in cfgs]
    # PGD with closed-form gradients: attack and gradients as one pure function (adversarial_grads), compiled
    # with ROBINHERIT_COMPILE=1; eager, it is bit for bit the step below. Adam takes its one-kernel form (the same
    # update up to float rounding; `python -m benchmarks.profile_step single` shows what the optimiser costs).
    fuse_step = pcfg.eps > 0 and pcfg.attack == AttackKind.pgd and loss_fn in LOSS_GRADS
    opt = make_optimizer(list(net.parameters()), pcfg, fused=True)
    gens = [generator(c.seed, "pretrain-attack", c.device) for c in cfgs]
    attack = STACKED_ATTACKS[pcfg.attack]
    logs = [PretrainLog() for _ in cfgs]
    running = torch.zeros(len(cfgs), dtype=torch.float64)  # float64, as the single run sums Python floats
    eps_t, alpha = budgets(eps, pcfg.attack_steps, net.W)
    threshold = net.fixed_threshold()
    for step in range(pcfg.steps):
        x, y = next_stacked(streams)  # (S, n, d), (S, n, K)
        x = net.centred(x)  # no clip in training, so delta is the same
        opt.zero_grad(set_to_none=True)
        if fuse_step:
            loss, grads = _run_step(
                *(p.detach() for p in (net.W, net.b, net.V, net.c)),
                x,
                y,
                stacked_random_start(x, eps, pcfg.norm, gens),
                eps_t,
                alpha,
                loss_fn=loss_fn,
                cfg=net.cfg,
                learn_b=net.b.requires_grad,
                norm=pcfg.norm,
                steps=pcfg.attack_steps,
                threshold=threshold,
            )
            net.W.grad, net.V.grad, net.c.grad = grads[0], grads[2], grads[3]
            if grads[1] is not None:
                net.b.grad = grads[1]
        else:
            if pcfg.eps > 0:  # FGM (PGD with a closed-form loss takes the fused step above)
                x = attack(
                    net.attack_loss(loss_fn, y), x, eps=eps, norm=pcfg.norm, steps=pcfg.attack_steps, generators=gens
                )
            if loss_fn in LOSS_GRADS:
                loss = net.loss_and_grads(x, y, loss_fn)  # (S,), .grad set in closed form
            else:
                loss = per_example(loss_fn, net(x), y).mean(dim=1)  # (S,)
                loss.sum().backward()  # model s's parameters get exactly the gradient of its own mean loss
        _end_step(opt, loss, step, cfgs, logs, running, on_step)
    return logs


def _end_step(
    opt: torch.optim.Optimizer,
    loss: Tensor,
    step: int,
    cfgs: Sequence[ExperimentConfig],
    logs: Sequence[PretrainLog],
    running: Tensor,
    on_step: Callable[[int, int], None] | None,
) -> None:
    """The end of every stacked step, supervised or contrastive: the finiteness check before the update, the
    update, the loss log and the progress callback."""
    _check_stack_finite(loss, step, cfgs)
    opt.step()
    _log_step(logs, running, loss, step)
    if on_step is not None:
        on_step(step + 1, cfgs[0].pretrain.steps)


def _check_stack_finite(loss: Tensor, step: int, cfgs: Sequence[ExperimentConfig]) -> None:
    """The single run's finiteness check, for the first model of the stack whose loss (S,) is not finite."""
    finite = torch.isfinite(loss.detach())
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        check_finite(loss[bad], step, cfgs[bad].pretrain)


def _log_step(logs: Sequence[PretrainLog], running: Tensor, loss: Tensor, step: int) -> None:
    """``PretrainLog.add`` for every model of the stack; ``running`` (S,) float64, as the single run sums floats."""
    running += loss.detach().cpu().double()
    if (step + 1) % logs[0].log_every == 0:
        for s, log in enumerate(logs):
            log.losses.append(float(running[s]) / log.log_every)
        running.zero_()


def stacked_view_loss(
    net: StackedTwoLayer, projector: Tensor | None, partner: Tensor, temperature: float
) -> InfoNCEViewLoss:
    """The RoCL attack's loss on the stack (``fused.InfoNCEViewLoss``, closed-form input gradient) at the current
    weights, against the partner views ``partner`` (S, n, d, centred), whose embeddings are held fixed."""
    w, thr = net.weight().detach(), net.threshold().detach()  # effective weights, once for both uses
    p = None if projector is None else projector.detach()
    with torch.no_grad():
        _, target = embed(partner, w, thr, net.cfg.activation, p)
    return view_loss(w, thr, net.cfg.activation, p, target, temperature)


def pretrain_contrastive_stacked(
    net: StackedTwoLayer,
    streams: Sequence[Any],
    cfgs: Sequence[ExperimentConfig],
    on_step: Callable[[int, int], None] | None = None,
) -> list[PretrainLog]:
    """``pretraining.pretrain_contrastive`` for a stack: model s sees streams[s], its own augmented views (the
    seed's ``augment`` stream), its own projector (the ``projector`` stream) and, when adversarial, its own attack
    starts (``pretrain-attack``) and budget; its batch alone gives its negatives. The training step's gradients
    are in closed form (:func:`contrastive_grads`), the attack's too (``fused.InfoNCEViewLoss`` on the stack).
    The model's head is not trained; the projector is discarded afterwards, as in the single run.
    """
    keep_freed_memory()
    if len({batch_key(c) for c in cfgs}) != 1 or batch_key(cfgs[0]) is None:
        raise ValueError("a contrastive stack needs configs with one shared batch_key (see robinherit.runs.schedule)")
    pcfg = cfgs[0].pretrain  # shared by the stack except eps (see batch_key)
    dev, dtype = net.W.device, net.W.dtype
    views = [make_views(pcfg, getattr(s, "world", None), c.seed, dev) for s, c in zip(streams, cfgs, strict=True)]
    projector = None
    if pcfg.projector_dim > 0:
        width = net.W.shape[1]
        weights = [projector_weight(pcfg.projector_dim, width, generator(c.seed, "projector")) for c in cfgs]
        projector = nn.Parameter(torch.stack(weights).to(device=dev, dtype=dtype))
    params = [net.W] + ([net.b] if net.b.requires_grad else []) + ([projector] if projector is not None else [])
    opt = make_optimizer(params, pcfg, fused=True)
    eps = [c.pretrain.eps for c in cfgs]
    gens = [generator(c.seed, "pretrain-attack", c.device) for c in cfgs]
    attack = STACKED_ATTACKS[pcfg.attack]
    t = pcfg.temperature
    logs = [PretrainLog() for _ in cfgs]
    running = torch.zeros(len(cfgs), dtype=torch.float64)

    def attack_against(x: Tensor, partner: Tensor) -> Tensor:
        with torch.no_grad():  # closed-form input gradients: no graph
            loss = stacked_view_loss(net, projector, partner, t)
            return attack(loss, x, eps=eps, norm=pcfg.norm, steps=pcfg.attack_steps, generators=gens)

    for step in range(pcfg.steps):
        batches = [s.next() for s in streams]
        # each model draws its first view, then its second, from its own generator, as its single run does; the
        # views are made of the raw inputs and then centred, as the encoder centres them
        v1 = net.centred(torch.stack([view(b) for view, b in zip(views, batches, strict=True)]))  # (S, n, d)
        v2 = net.centred(torch.stack([view(b) for view, b in zip(views, batches, strict=True)]))
        if pcfg.eps > 0:  # RoCL: view 1 against the clean view 2 (and, with "both", view 2 against the clean view 1)
            a1 = attack_against(v1, v2)
            v2 = attack_against(v2, v1) if pcfg.adversarial_view == AdversarialView.both else v2
            v1 = a1
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            loss, (g_w, g_b, g_p) = contrastive_grads(
                net.W, net.b, projector, v1, v2, temperature=t, cfg=net.cfg, learn_b=net.b.requires_grad
            )
        net.W.grad = g_w
        if g_b is not None:
            net.b.grad = g_b
        if projector is not None:
            projector.grad = g_p
        _end_step(opt, loss, step, cfgs, logs, running, on_step)
    return logs


def supports(model: nn.Module, cfg: ExperimentConfig) -> bool:
    """Whether the stacked path (``pretrain_stacked``, ``pretrain_contrastive_stacked``) can train ``model`` under
    ``cfg``: the two-layer net, and a config of :func:`supports_config`."""
    return type(model) is TwoLayerNet and supports_config(cfg)


def pretrain_one(
    model: TwoLayerNet,
    stream: BatchStream,
    cfg: ExperimentConfig,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = multilabel_bce,
    on_step: Callable[[int, int], None] | None = None,
) -> PretrainLog:
    """One model through the stacked path (a stack of one): what ``pretraining.pretrain_supervised`` runs for the
    two-layer network. The stack's fused steps cost fewer passes than the generic autograd loop."""
    net = StackedTwoLayer([model]).to(model.W.device)
    (log,) = pretrain_stacked(net, [stream], [cfg], loss_fn, on_step)
    net.unstack([model])
    return log


def pretrain_contrastive_one(
    model: TwoLayerNet, stream: Any, cfg: ExperimentConfig, on_step: Callable[[int, int], None] | None = None
) -> PretrainLog:
    """One model's contrastive pre-training as a stack of one: what ``pretraining.pretrain_contrastive`` runs for the
    two-layer network (closed-form attack and training step)."""
    net = StackedTwoLayer([model]).to(model.W.device)
    (log,) = pretrain_contrastive_stacked(net, [stream], [cfg], on_step)
    net.unstack([model])
    return log


__all__ = [
    "StackedTwoLayer",
    "batch_key",
    "contrastive_grads",
    "pretrain_contrastive_one",
    "pretrain_contrastive_stacked",
    "pretrain_one",
    "pretrain_stacked",
    "stacked_fgm",
    "stacked_pgd",
    "supports",
    "supports_config",
]
