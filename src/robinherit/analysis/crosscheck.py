"""Cross-check of the toolkit's PGD against a peer implementation on unbounded inputs.

The peer is the Adversarial Robustness Toolbox (Nicolae et al. 2018, "Adversarial Robustness Toolbox
v1.0.0"): its ``ProjectedGradientDescent`` (Madry et al. 2018) on a ``PyTorchClassifier``
(``robinherit.evaluation.art_pgd``, also the evaluation attack ``art-pgd``) with ``clip_values=None``, so
inputs stay in all of R^d like the synthetic world (torchattacks and AutoAttack clamp to [0, 1], which is
invalid here). ART attacks the cross-entropy, the toolkit the margin: two different implementations and
losses, the same threat model, eps, steps, step size and restarts.

Both robust accuracies use the same bookkeeping (robust at eps = correct on clean input and under every
attack at a budget <= eps), so only the attacks differ. The toolkit's PGD passes when its robust accuracy
is not above ART's by more than ``tol`` at any eps: an attack weaker than a peer would make a non-robust
model look robust.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robinherit.config import Norm
from robinherit.evaluation.art_pgd import art_available, art_classifier, art_pgd_points
from robinherit.evaluation.robust import accuracies, cumulative_masks
from robinherit.records import eps_key
from robinherit.seeding import derive_seed

TOL = 0.01  # one point of accuracy


def art_pgd_robust_acc(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    eps_grid: tuple[float, ...],
    norm: Norm,
    steps: int,
    restarts: int,
    seed: int,
    clip: tuple[float, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Robust accuracy of ``model`` (logits, class labels ``y``) under ART's PGD at each eps, inside the input box
    ``clip`` (None: unbounded, as the synthetic world's inputs are), cumulative over budgets as the toolkit's own
    curve (``robinherit.evaluation.robust.cumulative_masks``).

    Returns ``(robust_acc, max_perturbation)`` keyed by eps; step size 2.5 eps / steps, as the toolkit's PGD.
    Robust means classified correctly by ART's own predictions, clean and at every budget <= eps.
    """
    norm = Norm(norm)
    was_training = model.training
    classifier = art_classifier(model, x, n_classes, clip)
    x_np = x.detach().cpu().numpy().astype(np.float32)
    y_np = y.detach().cpu().numpy()
    max_pert: dict[str, float] = {}

    def correct_on(xs: np.ndarray) -> Tensor:
        return torch.from_numpy(classifier.predict(xs, batch_size=len(xs)).argmax(1) == y_np)

    def art_pgd(eps: float) -> Tensor:
        x_adv = art_pgd_points(
            classifier, x_np, y_np, eps=eps, norm=norm, steps=steps, restarts=restarts,
            seed=derive_seed(seed, f"art-pgd-{eps_key(eps)}"),
        )  # fmt: skip
        diff = (x_adv - x_np).reshape(len(x_np), -1)
        max_pert[eps_key(eps)] = float(np.abs(diff).max() if norm == Norm.linf else np.linalg.norm(diff, axis=1).max())
        return correct_on(x_adv)

    masks, _ = cumulative_masks(correct_on(x_np), eps_grid, art_pgd)
    model.train(was_training)  # ART switches the model to eval mode; give it back as it was
    return accuracies(masks), max_pert


def sandwich_violations(
    certified: Mapping[str, float] | None,
    pgd: Mapping[str, float],
    art: Mapping[str, float] | None,
    tol: float = TOL,
) -> list[str]:
    """Where ``certified <= PGD <= ART-PGD + tol`` fails, one line per failure (empty: the numbers agree)."""
    out = []
    for k, p in pgd.items():
        if certified is not None and k in certified and certified[k] > p + 1e-12:
            out.append(f"eps {k}: certified {certified[k]:.3f} > PGD {p:.3f} (a bound or the attack is wrong)")
        if art is not None and k in art and p > art[k] + tol + 1e-12:
            out.append(f"eps {k}: PGD {p:.3f} > ART-PGD {art[k]:.3f} + {tol:g} (the toolkit's attack is weaker)")
    return out


def check_run(record: dict[str, Any], encoder: dict[str, Any], head: str = "clean", art: bool = True) -> dict[str, Any]:
    """A stored run's head evaluated three ways at every eps: certified (IBP, CROWN, best), PGD, ART-PGD.

    ``encoder`` is ``ResultStore.artifact(run_id, "encoder")``; the head is retrained exactly as in the run
    (``experiment.rebuild_run``), and PGD uses the run's own random stream, so ``pgd`` reproduces the record.
    """
    from robinherit.evaluation.certify import BoundMethod, certified_accuracy, certifier_for
    from robinherit.evaluation.robust import evaluate
    from robinherit.ops.losses import class_margin
    from robinherit.runs.experiment import rebuild_run

    run = rebuild_run(record, encoder, head=head)
    e = run.cfg.eval
    res = evaluate(
        run.model, run.x, run.y, class_margin, eps_grid=e.eps_grid, norm=e.norm, steps=e.steps,
        restarts=e.restarts, g=run.eval_generator, clip=run.clip,
    )  # fmt: skip
    per_method = {
        f"certified_{m.value}": certified_accuracy(
            certifier_for(run.model, class_margin, e.norm, m), run.x, run.y, eps_grid=e.eps_grid
        )[0]
        for m in (BoundMethod.ibp, BoundMethod.crown)
    }
    art_acc, art_pert = None, None
    if art:
        art_acc, art_pert = art_pgd_robust_acc(
            run.model, run.x, run.y, run.model.linear.out_features, eps_grid=e.eps_grid, norm=e.norm,
            steps=e.steps, restarts=e.restarts, seed=run.cfg.seed, clip=run.clip,
        )  # fmt: skip
    stored = record.get("downstream", {}).get(f"{head}_head", {}).get("robust_acc")
    return {
        "run_id": record["run_id"],
        "seed": run.cfg.seed,
        "pretrain_eps": run.cfg.pretrain.eps,
        "head": head,
        "norm": Norm(e.norm).value,
        "clean_acc": res.clean_acc,
        "certified_acc": res.certified_acc,
        **per_method,
        "robust_acc": res.robust_acc,
        "art_robust_acc": art_acc,
        "art_max_perturbation": art_pert,
        # None when the record has no such head; False flags a different torch build or a changed pipeline
        "matches_record": None if stored is None else all(abs(stored[k] - res.robust_acc[k]) < 1e-9 for k in stored),
        "violations": sandwich_violations(res.certified_acc, res.robust_acc, art_acc),
        "warnings": res.warnings,
        "checks": res.checks,
    }


__all__ = ["TOL", "art_available", "art_pgd_robust_acc", "check_run", "sandwich_violations"]
