"""The per-example worst case over attacks, cumulative over budgets: PGD's curve, and the attacks run beside it,
scheduled as AutoAttack does (a cascade: each attack only on the examples every attack before it left correct) or
each on every example (``eval.per_attack``, the per-attack diagnostics)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce

import torch
from torch import Tensor

from robinherit.records import eps_key
from robinherit.registry import EVAL_ATTACKS
from robinherit.seeding import derive_seed


def chunks(n: int, size: int | None) -> list[slice]:
    """Slices of ``range(n)`` of at most ``size`` (one slice of everything when ``size`` is None or >= n)."""
    if not size or size >= n:
        return [slice(0, n)]
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def chunk_seed(seed: int, i: int) -> int:
    """The seed of an attack's ``i``-th chunk: the attack's own seed for the first, so a test set that fits in one
    chunk draws what it drew unchunked, and distinct seeds for the others (a reseeding attack would otherwise
    repeat the first chunk's draws on every chunk)."""
    return seed if i == 0 else derive_seed(seed, f"chunk-{i}")


def in_chunks(attack, model, x: Tensor, y: Tensor, seed: int, batch_size: int | None, **kw) -> Tensor:
    """``attack(model, x, y, seed=..., **kw) -> (n,) still correct``, run on chunks of ``batch_size`` examples."""
    parts = [
        attack(model, x[s], y[s], seed=chunk_seed(seed, i), **kw) for i, s in enumerate(chunks(len(x), batch_size))
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def cumulative_masks(correct: Tensor, eps_grid, attack: Callable[[float], Tensor]) -> tuple[dict[str, Tensor], int]:
    """Per eps of ``eps_grid`` (increasing): the (n,) examples correct on clean input (``correct``) and left correct
    by ``attack(e)`` at every budget 0 < e <= eps. A point inside a smaller ball lies inside every larger one, so an
    example broken at a smaller budget counts as broken at every larger one: the curve is non-increasing by
    construction. Also returns at how many budgets the attack left correct an example a smaller budget broke (a
    sign of a weak attack)."""
    masks: dict[str, Tensor] = {}
    still = correct.clone()
    missed = 0
    for eps in sorted(eps_grid):
        if eps > 0:
            ok = attack(eps)
            missed += int((~still & ok & correct).sum() > 0)
            still &= ok
        masks[eps_key(eps)] = still.clone()
    return masks, missed


def accuracies(masks: dict[str, Tensor]) -> dict[str, float]:
    """The share of examples each mask keeps: robust accuracy per eps key."""
    return {k: float(m.float().mean()) for k, m in masks.items()}


def cascade(model, x, y, names, pgd_masks: dict[str, Tensor], seed: int, tag: str, kw: dict, batch_size=None):
    """AutoAttack's protocol (Croce & Hein 2020): after PGD, each further attack runs only on the examples still
    correct at this budget and every smaller one, so the per-example worst case over all attacks comes at a fraction
    of running each on every example. Returns the cumulative masks per eps key (PGD's, narrowed by every attack) and
    per eps how many examples each attack broke that every attack before it had left correct.

    The worst case equals running every attack on every example wherever each attack's result for an example does
    not depend on the other examples attacked with it; attacks with random starts draw them for the examples they
    are given, so there the two agree within sampling noise."""
    masks: dict[str, Tensor] = {}
    broken: dict[str, dict[str, int]] = {}
    still: Tensor | None = None
    for key in sorted(pgd_masks, key=float):
        alive = pgd_masks[key].clone() if still is None else pgd_masks[key] & still
        if float(key) > 0:
            broken[key] = {}
            for name in names:
                idx = alive.nonzero().squeeze(1)
                if len(idx) == 0:
                    broken[key][name] = 0
                    continue
                attack = EVAL_ATTACKS[name]
                ok = in_chunks(
                    attack, model, x[idx], y[idx], _aa_seed(seed, tag, key), batch_size, eps=float(key), **kw
                )
                alive[idx] = ok
                broken[key][name] = int((~ok).sum())
        masks[key] = alive
        still = alive
    return masks, broken


def _aa_seed(seed: int, tag: str, key: str) -> int:
    """The seed of every attack beside PGD at one budget, as both schedules draw it."""
    return derive_seed(seed, f"aa-{tag}-{key}")


def all_on_all(model, x, y, names, eps_grid, correct, seed: int, tag: str, kw: dict, batch_size=None):
    """Per eps: each extra attack's robust accuracy, and the examples that every one of them (at this eps and every
    smaller one) left correct -- cumulative over budgets (:func:`cumulative_masks`), as PGD's curve."""
    per_attack: dict[str, dict[str, float]] = {}

    def every_attack(eps: float) -> Tensor:
        key = eps_key(eps)
        aa_seed = _aa_seed(seed, tag, key)
        ok = {n: in_chunks(EVAL_ATTACKS[n], model, x, y, aa_seed, batch_size, eps=eps, **kw) for n in names}
        per_attack[key] = {n: float((m & correct).float().mean()) for n, m in ok.items()}
        return reduce(operator.and_, ok.values())

    masks, _ = cumulative_masks(correct, eps_grid, every_attack)
    return per_attack, masks
