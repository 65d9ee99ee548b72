"""Clean, robust and certified accuracy over a grid of budgets, with self-checks.

Robust accuracy comes from PGD on the margin loss (the attack minimises the classification margin,
Carlini & Wagner 2017 style) with random restarts; an example counts as robust at eps only if no attack
at any budget <= eps broke it (a point inside a smaller ball lies inside every larger one), so the
curve is non-increasing by construction. An attack only gives an upper bound on the true robust
accuracy; for the two-layer network with a linear head, ``robinherit.evaluation.certify`` adds a lower bound
(``certified_acc``), so each number is sandwiched: certified <= true <= attacked.

Self-checks (failures become warnings in the result; the numbers behind them go to ``checks``):
robust <= clean; certified <= robust; the attack never missed examples it broke at a smaller eps;
perturbations within budget; zero or vanishing input gradients (gradient masking); and the flip check:
for each example the nearest test input the model gives another label is a perturbation that flips it,
so at the largest such distance robust accuracy must be ~0, and at every eps of the grid PGD must not
leave robust an example that such a known point already breaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from robinherit import registry
from robinherit.attacks.autoattack import autoattack_names
from robinherit.attacks.gradient import _flat_norm, input_grad, pgd
from robinherit.config import EvalConfig, Norm
from robinherit.errors import ConfigError
from robinherit.evaluation.certify import certified_accuracy, certifier_for
from robinherit.evaluation.worst_case import accuracies, all_on_all, cascade, chunks, cumulative_masks
from robinherit.ops.closed_form import fused_loss
from robinherit.records import eps_key

MarginFn = Callable[[Tensor, Tensor], Tensor]
# (model, x, y, *, margin, eps, norm, n_classes, image_shape, ecfg, seed) -> (n,) bool: still correct after the
# attack; ``margin(logits, y) > 0`` means correct (class labels, or the K binary tasks of the synthetic world)
EvalAttack = Callable[..., Tensor]

# Attacks run beside PGD, by name: AutoAttack's components (``eval.autoattack`` picks a set of them), ART's PGD
# (``art-pgd``: the peer that ``robinherit.analysis.crosscheck`` holds the toolkit's PGD against) and whatever
# ``eval.attacks`` names. A new evaluation attack is one function and one entry here (docs/extending.md).
EVAL_ATTACKS = registry.EVAL_ATTACKS


def attack_names(ecfg: EvalConfig, n_classes: int) -> list[str]:
    """The attacks ``ecfg`` runs beside PGD, each checked against ``EVAL_ATTACKS``."""
    names = [*autoattack_names(ecfg.autoattack, n_classes), *ecfg.attacks]
    unknown = [n for n in names if n not in EVAL_ATTACKS]
    if unknown:
        raise ConfigError(
            f"eval.attacks names {', '.join(unknown)}, which is not an evaluation attack; attacks: "
            f"{', '.join(EVAL_ATTACKS)}"
        )
    return list(dict.fromkeys(names))


# An input gradient whose dual norm is below this is "vanishing": no gradient step can move the margin.
VANISHING_GRAD = 1e-8
# Share of examples that PGD may leave robust although a known point inside the ball flips them.
FLIP_TOL = 0.02


@dataclass
class EvalResult:
    clean_acc: float
    robust_acc: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    # per-example correctness under attack at each eps key, (n,) bool; not part of the stored record
    robust_mask: dict[str, Tensor] = field(default_factory=dict, repr=False)
    # lower bound of robust accuracy (None when the model has no certifier, see robinherit.evaluation.certify)
    certified_acc: dict[str, float] | None = None
    certified_mask: dict[str, Tensor] = field(default_factory=dict, repr=False)
    # the numbers behind the self-checks (gradient share, flip radius, ...)
    checks: dict[str, Any] = field(default_factory=dict)
    # (n, K) outputs on the clean inputs; not part of the stored record
    clean_logits: Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"clean_acc": self.clean_acc, "robust_acc": self.robust_acc}
        if self.certified_acc is not None:
            out["certified_acc"] = self.certified_acc
        out["warnings"] = self.warnings
        out["checks"] = self.checks
        return out


def flip_radii(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    margin_fn: MarginFn,
    norm: Norm,
    chunk: int = 1024,
    logits: Tensor | None = None,
) -> Tensor:
    """(n,) distance from each example to the nearest test input the model does not give the example's label.

    That input is itself a perturbation of the example which the model gets wrong, so no example is robust at
    an eps >= its radius (inf when every test input gets the example's label).
    """
    logits = forward(model, x, None) if logits is None else logits  # (n, K) on the clean inputs
    labels, which = torch.unique(y, dim=0, return_inverse=True)  # few distinct labels: one pass per label
    p = 2.0 if Norm(norm) == Norm.l2 else float("inf")
    flat = x.reshape(x.shape[0], -1)
    radii = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=flat.dtype)
    for k in range(labels.shape[0]):
        lab = labels[k].expand(x.shape[0], *labels.shape[1:])
        with torch.no_grad():
            wrong = margin_fn(logits, lab) <= 0  # (n,): inputs that flip an example labelled labels[k]
        idx = (which == k).nonzero().flatten()
        if not bool(wrong.any()) or idx.numel() == 0:
            continue
        for start in range(0, idx.numel(), chunk):
            rows = idx[start : start + chunk]
            radii[rows] = torch.cdist(flat[rows], flat[wrong], p=p).amin(dim=1)  # (chunk,)
    return radii


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
    certify: bool = True,
    flip_check: bool = True,
    batch_size: int | None = None,
    clean_logits: Tensor | None = None,
) -> EvalResult:
    """Clean accuracy and robust accuracy at each eps of ``eps_grid`` (PGD-``steps``, ``restarts`` restarts).

    With ``certify`` and a two-layer network with a linear head (``robinherit.evaluation.certify.certifier_for``), also
    certified accuracy at each eps. ``flip_check`` runs one more attack, at the flip radius (module docstring).
    ``batch_size`` attacks the examples that many at a time, in order, from the one generator ``g``: an l-inf
    attack with one random start draws the same starts as on all of them at once.
    """
    norm = Norm(norm)
    warnings: list[str] = []
    checks: dict[str, Any] = {}
    parts = chunks(len(x), batch_size)
    losses = [_attack_loss(model, margin_fn, y[s]) for s in parts]
    attack = partial(_attack, model, margin_fn, losses, parts, x, y, norm, steps, restarts, g, clip, warnings)
    logits = forward(model, x, batch_size) if clean_logits is None else clean_logits
    correct = margin_fn(logits, y) > 0
    clean_acc = float(correct.float().mean())
    _gradient_masking_check(losses, parts, x, correct, zero_grad_warn_share, warnings, checks)
    robust, masks = _robust_curve(attack, correct, eps_grid, clean_acc, warnings)
    if flip_check:
        _flip_check(model, x, y, margin_fn, norm, correct, masks, attack, warnings, checks, logits)
    certified, cert_masks = (
        _certificates(model, margin_fn, norm, x, y, eps_grid, masks, warnings) if certify else (None, {})
    )
    return EvalResult(clean_acc, robust, warnings, masks, certified, cert_masks, checks, logits)


def _attack_loss(model: Callable[[Tensor], Tensor], margin_fn: MarginFn, y: Tensor) -> Callable[[Tensor], Tensor]:
    """The loss PGD ascends: minus the margin, with the closed-form input gradient where the model is the two-layer
    network (or a head on it): the same attack without an autograd graph per step."""
    fused = fused_loss(model, margin_fn, y, sign=-1.0) if isinstance(model, nn.Module) else None
    return fused if fused is not None else (lambda xa: -margin_fn(model(xa), y))


def forward(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int | None) -> Tensor:
    """``model(x)`` without a graph, ``batch_size`` examples at a time."""
    with torch.no_grad():
        outs = [model(x[s]) for s in chunks(len(x), batch_size)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _attack(
    model, margin_fn, losses, parts, x, y, norm, steps, restarts, g, clip, warnings: list[str], eps: float
) -> Tensor:
    """(n,) still correct after PGD at ``eps``, chunk by chunk (``parts``, each with its loss). With restarts, the
    first starts at x (l2 steps of 2.5 eps / steps from a random start orthogonal to the best direction fall a few
    percent short of the worst case) and the others at random points."""
    ok = []
    for loss, s in zip(losses, parts, strict=True):
        x_adv = pgd(
            loss, x[s], eps=eps, norm=norm, steps=steps, restarts=restarts, random_init=restarts == 1, generator=g,
            clip=clip,
        )  # fmt: skip
        dist = _flat_norm(x_adv - x[s], norm).flatten()
        if bool((dist > eps * (1 + 1e-5) + 1e-7).any()):
            warnings.append(f"perturbation outside the eps={eps:g} ball (max {float(dist.max()):.4g})")
        with torch.no_grad():
            ok.append(margin_fn(model(x_adv), y[s]) > 0)
    return ok[0] if len(ok) == 1 else torch.cat(ok)


def _gradient_masking_check(losses, parts, x, correct, warn_share, warnings: list[str], checks: dict) -> None:
    """An attack that follows the gradient cannot move examples whose gradient vanishes: say how many do."""
    grad = torch.cat([input_grad(loss, x[s])[1] for loss, s in zip(losses, parts, strict=True)])
    vanishing = (_flat_norm(grad, Norm.l2).flatten() <= VANISHING_GRAD)[correct]  # only examples to break
    zero_share = float(vanishing.float().mean()) if vanishing.numel() else 0.0
    checks["vanishing_grad_share"] = zero_share
    if zero_share > warn_share:
        warnings.append(
            f"input gradient is zero or vanishing on {zero_share:.0%} of correctly classified test examples: "
            "gradient-based attacks are blind there (gradient masking); treat robust accuracy as a loose upper "
            "bound and compare with certified_acc"
        )


def _robust_curve(
    attack: Callable[[float], Tensor], correct: Tensor, eps_grid, clean_acc: float, warnings: list[str]
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Robust accuracy per eps, cumulative over budgets (:func:`cumulative_masks`), and its masks."""
    masks, non_monotone = cumulative_masks(correct, eps_grid, attack)
    robust = accuracies(masks)
    if non_monotone:
        warnings.append(
            "the attack at a larger eps missed examples broken at a smaller one; the smaller-eps points were "
            "kept (robust accuracy is non-increasing by construction), but the attack may be weak: raise "
            "eval.steps or eval.restarts"
        )
    if any(v > clean_acc + 1e-9 for v in robust.values()):
        warnings.append("robust accuracy above clean accuracy: the evaluation is inconsistent")
    return robust, masks


def _certificates(model, margin_fn, norm, x, y, eps_grid, masks, warnings: list[str]):
    """Certified accuracy per eps where the model has a certifier (``robinherit.evaluation.certify``), and the check
    that no
    attack broke a certified example."""
    certifier = certifier_for(model, margin_fn, norm)
    if certifier is None:
        return None, {}
    certified, cert_masks = certified_accuracy(certifier, x, y, eps_grid=tuple(eps_grid))
    _unsound_warning(cert_masks, masks, warnings)
    return certified, cert_masks


def _unsound_warning(cert_masks: dict[str, Tensor], masks: dict[str, Tensor], warnings: list[str]) -> None:
    unsound = {k: int((cert_masks[k] & ~masks[k]).sum()) for k in cert_masks if k in masks}
    if any(unsound.values()):
        warnings.append(
            "the attack broke examples the bound certified ("
            + ", ".join(f"eps {k}: {v}" for k, v in unsound.items() if v)
            + "): a certificate is a proof, so this is a bug in robinherit.evaluation.certify or the model"
        )


def _flip_check(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    margin_fn: MarginFn,
    norm: Norm,
    correct: Tensor,
    masks: dict[str, Tensor],
    attack: Callable[[float], Tensor],
    warnings: list[str],
    checks: dict[str, Any],
    logits: Tensor,
) -> None:
    """Robust accuracy must be ~0 where a known input flips every example; PGD must find what that input shows."""
    radii = flip_radii(model, x, y, margin_fn, norm, logits=logits)
    finite = correct & torch.isfinite(radii)
    if not bool(finite.any()):
        checks["flip_eps"] = None
        return
    # Missed known flips: robust under PGD at eps although a test input within eps already flips the example.
    missed = {k: float((m & (radii <= float(k))).float().mean()) for k, m in masks.items() if float(k) > 0}
    checks["missed_known_flips"] = missed
    worst = max(missed.items(), key=lambda kv: kv[1], default=None)
    if worst is not None and worst[1] > FLIP_TOL:
        warnings.append(
            f"at eps {worst[0]} PGD left {worst[1]:.1%} of examples robust although another test input inside "
            "the ball is classified differently: the attack is weak or gradients are masked; raise eval.steps "
            "or eval.restarts and compare with certified_acc"
        )
    flip_eps = float(radii[finite].max()) * (1 + 1e-4)
    ok = attack(flip_eps) & correct
    at_flip = float(ok.float().mean())
    checks["flip_eps"] = flip_eps
    checks["robust_at_flip_eps"] = at_flip
    if at_flip > FLIP_TOL:
        warnings.append(
            f"robust accuracy is {at_flip:.1%} at eps {flip_eps:.3g}, where a known input flips every example "
            "(it should be ~0): the attack is weak or gradients are masked"
        )


# --- PGD and AutoAttack together ---------------------------------------------------------------------------


# A head is degenerate when it (nearly) predicts one class, or its clean accuracy is (nearly) the class prior: its
# robust accuracy then reads as robustness while it is that of a constant predictor.
DEGENERATE_SHARE = 0.9
DEGENERATE_PRIOR_GAP = 0.02


def prediction_balance(logits: Tensor, y: Tensor, clean_acc: float) -> dict[str, Any]:
    """``majority_share`` (the share of predictions on the most predicted class, at eps 0), ``class_prior`` (the
    share of the most frequent true class) and ``degenerate`` (majority share >= 0.9, or clean accuracy within
    0.02 of the prior) for a classifier's logits (n, K) on labels (n,)."""
    pred = logits.argmax(dim=1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
    majority = float(torch.bincount(pred).max()) / len(pred)
    prior = float(torch.bincount(y.long()).max()) / len(y)
    degenerate = majority >= DEGENERATE_SHARE or abs(clean_acc - prior) <= DEGENERATE_PRIOR_GAP
    return {"majority_share": majority, "class_prior": prior, "degenerate": bool(degenerate)}


def _balance_of(logits: Tensor, y: Tensor, out: dict[str, Any]) -> dict[str, Any]:
    """:func:`prediction_balance` for a classifier on class labels (n,), with a self-check warning when degenerate;
    nothing for multi-label targets (n, K), whose outputs are K separate decisions."""
    if y.dim() != 1:
        return {}
    balance = prediction_balance(logits, y, out["clean_acc"])
    if balance["degenerate"]:
        out["warnings"].append(
            f"degenerate classifier: {balance['majority_share']:.0%} of its predictions are one class and its clean "
            f"accuracy {out['clean_acc']:.3f} is near the class prior {balance['class_prior']:.3f}; its robust "
            "accuracy is that of a (near) constant predictor, not robustness"
        )
    return balance


def robust_eval(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    margin_fn: MarginFn,
    ecfg: EvalConfig,
    *,
    n_classes: int,
    image_shape: tuple[int, int, int] | None,
    g: torch.Generator,
    seed: int,
    tag: str,
    clip: tuple[float, float] | None = None,
    clean_logits: Tensor | None = None,
) -> dict[str, Any]:
    """The record of one model's evaluation on ``eval.eps_grid``: :func:`evaluate` (PGD, self-checks, certified
    accuracy where the model is certifiable) and the attacks of :func:`attack_names` (AutoAttack's components with
    ``eval.autoattack``, and those of ``eval.attacks``).

    With other attacks, ``robust_acc`` is the per-example worst case over every attack run, cumulative over budgets
    (an example broken at a smaller eps counts as broken at every larger one); ``pgd_robust_acc`` and
    ``autoattack_robust_acc`` (every attack beside PGD together) keep each family's own numbers. Those attacks are
    meant to be stronger than PGD, so a robust accuracy above PGD's means one is not working on that model: that
    becomes a warning. ``clean_logits``: the model's outputs on ``x`` where the caller has them (heads that share
    an encoder share its clean forward pass).
    """
    res = evaluate(
        model,
        x,
        y,
        margin_fn,
        eps_grid=ecfg.eps_grid,
        norm=ecfg.norm,
        steps=ecfg.steps,
        restarts=ecfg.restarts,
        g=g,
        clip=clip,
        batch_size=ecfg.batch_size,
        clean_logits=clean_logits,
    )
    out = res.to_dict()
    out.update(_balance_of(res.clean_logits, y, out))
    names = attack_names(ecfg, n_classes)
    if not names:
        return out
    correct = (
        res.robust_mask[eps_key(0.0)]
        if eps_key(0.0) in res.robust_mask
        else margin_fn(forward(model, x, ecfg.batch_size), y) > 0
    )
    kw = dict(norm=ecfg.norm, n_classes=n_classes, image_shape=image_shape, ecfg=ecfg, margin=margin_fn)
    attacks = [f"pgd-{ecfg.steps}x{ecfg.restarts}", *names]
    if not ecfg.per_attack:
        masks, broken = cascade(model, x, y, names, res.robust_mask, seed, tag, kw, ecfg.batch_size)
        return {**out, "robust_acc": accuracies(masks), "pgd_robust_acc": dict(res.robust_acc),
                "cascade_broken": broken, "attacks": attacks}  # fmt: skip
    return {**out, **_every_attack_on_every_example(model, x, y, names, ecfg, res, correct, seed, tag, kw, out)}


def _every_attack_on_every_example(model, x, y, names, ecfg, res, correct, seed, tag, kw, out) -> dict[str, Any]:
    """``eval.per_attack``: every attack on every example, with each attack's own robust accuracy, all of them
    together, and warnings where they are weaker than PGD or than a certificate."""
    per_attack, aa_masks = all_on_all(model, x, y, names, ecfg.eps_grid, correct, seed, tag, kw, ecfg.batch_size)
    pgd_acc = dict(res.robust_acc)
    aa_acc = accuracies(aa_masks)
    worst_masks = {k: res.robust_mask[k] & aa_masks[k] for k in aa_masks}  # both masks are cumulative already
    worst_acc = accuracies(worst_masks)
    out["warnings"].extend(_above_pgd(aa_acc, pgd_acc, names))
    # evaluate() already checked the certificates against PGD; here only against the other attacks
    _unsound_warning(res.certified_mask, aa_masks, out["warnings"])
    return {
        "robust_acc": worst_acc,
        "pgd_robust_acc": pgd_acc,
        "autoattack_robust_acc": aa_acc,
        "per_attack_robust_acc": per_attack,
        "autoattack_not_above_pgd": all(aa_acc[k] <= pgd_acc[k] for k in aa_acc),
        "attacks": [f"pgd-{ecfg.steps}x{ecfg.restarts}", *names],
    }


def _above_pgd(aa_acc: dict[str, float], pgd_acc: dict[str, float], names: list[str]) -> list[str]:
    """Attacks meant to be stronger than PGD that leave more examples robust are not working on the model."""
    return [
        f"AutoAttack robust accuracy {aa_acc[key]:.4f} is above PGD's {pgd_acc[key]:.4f} at eps={key}: "
        f"one of {', '.join(names)} is not working on this model (the reported number is the per-example "
        "worst case)"
        for key in aa_acc
        if aa_acc[key] > pgd_acc[key]
    ]


__all__ = [
    "EVAL_ATTACKS",
    "EvalResult",
    "accuracies",
    "attack_names",
    "cascade",
    "cumulative_masks",
    "eps_key",
    "evaluate",
    "flip_radii",
    "forward",
    "robust_eval",
]
