"""PGD of a peer library as an evaluation attack: the Adversarial Robustness Toolbox (Nicolae et al. 2018,
"Adversarial Robustness Toolbox v1.0.0"), its ``ProjectedGradientDescent`` (Madry et al. 2018) on a
``PyTorchClassifier``.

ART attacks the cross-entropy, the toolkit's PGD the margin: two implementations and losses, one threat model
(l2 or l-inf ball), eps, steps, step size (2.5 eps / steps) and restarts. With ``clip_values=None`` inputs stay in
all of R^d, as the synthetic world's do (torchattacks and AutoAttack clamp to [0, 1], which is invalid there).
Inputs are flat (n, d), labels class indices (n,). ART draws its random starts from numpy's global stream; each
attack pins it to its own seed and gives the caller's state back.

Registered as ``art-pgd`` in ``robinherit.evaluation.robust.EVAL_ATTACKS``; ``robinherit.analysis.crosscheck``
uses the same pieces to check the toolkit's PGD against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robinherit.config import EvalConfig, Norm
from robinherit.errors import ConfigError, RobinheritError


def art_available() -> bool:
    try:
        import art  # noqa: F401
    except ImportError:
        return False
    return True


def _art() -> tuple[Any, Any]:
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise RobinheritError(
            "ART's PGD (the cross-check, eval.attacks art-pgd) needs the adversarial-robustness-toolbox package, which "
            "is not installed; install the extra with: pip install 'robinherit[art]'"
        ) from None
    return ProjectedGradientDescent, PyTorchClassifier


@contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """ART draws its random starts from numpy's global stream: pin it, then give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


def art_classifier(model: nn.Module, x: Tensor, n_classes: int, clip: tuple[float, float] | None) -> Any:
    """``model`` (logits over ``n_classes``) as ART's classifier of inputs shaped like ``x``, inside the box ``clip``
    (None: unbounded, no clamping anywhere). ART's predictions switch the model to eval mode."""
    _, PyTorchClassifier = _art()
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=n_classes,
        clip_values=clip,
        device_type="gpu" if x.device.type == "cuda" else "cpu",
    )


def art_pgd_points(
    classifier: Any, x: np.ndarray, y: np.ndarray, *, eps: float, norm: Norm, steps: int, restarts: int, seed: int
) -> np.ndarray:
    """ART's PGD adversarial points (float32, as ``x``) at budget ``eps``, its random starts drawn from ``seed``."""
    ProjectedGradientDescent, _ = _art()
    attack = ProjectedGradientDescent(
        classifier,
        norm=2 if Norm(norm) == Norm.l2 else np.inf,
        eps=float(eps),
        eps_step=2.5 * float(eps) / steps,
        max_iter=steps,
        num_random_init=restarts,
        targeted=False,
        batch_size=len(x),
        verbose=False,
    )
    with _seeded_numpy(seed):
        return attack.generate(x, y=y)


def art_pgd_correct(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: Norm,
    n_classes: int,
    image_shape: tuple[int, int, int] | None,
    ecfg: EvalConfig,
    seed: int,
    margin: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """(n,) still correct (``margin > 0``) after ART's PGD at ``eps`` with the evaluation's steps and restarts.
    Image sources are the real data sets, all in [0, 1]: the attack keeps to that box; flat synthetic inputs are
    unbounded."""
    if y.dim() != 1:
        raise ConfigError("art-pgd attacks class labels; the synthetic world's binary tasks have no ART classifier")
    was_training = model.training
    clip = (0.0, 1.0) if image_shape is not None else None
    classifier = art_classifier(model, x, n_classes, clip)
    x_np = x.detach().cpu().numpy().astype(np.float32)
    points = art_pgd_points(
        classifier, x_np, y.detach().cpu().numpy(), eps=eps, norm=norm, steps=ecfg.steps, restarts=ecfg.restarts,
        seed=seed,
    )  # fmt: skip
    model.train(was_training)
    x_adv = torch.from_numpy(points).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        return margin(model(x_adv), y) > 0


__all__ = ["art_available", "art_classifier", "art_pgd_correct", "art_pgd_points"]
