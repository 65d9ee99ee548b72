"""AutoAttack beside PGD on real data (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks": APGD-CE, APGD-T; Andriushchenko et al. 2020, "Square Attack"), in
torchattacks' implementation.

torchattacks clamps to [0, 1]: right for the real data sets here (all scaled to [0, 1]), wrong for the unbounded
synthetic inputs, so the config allows ``eval.autoattack`` on real sources only. It is installed with
``pip install --no-deps torchattacks``: its metadata pins torchvision, which would replace the CPU torch build,
while its code imports only torch, numpy and scipy. Threat model: l2 or l-inf balls; inputs (n, d) flat, shown
to torchattacks as (n, c, s, s) images; per-attack masks of examples still correct come back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from robinherit.config import AutoAttackSet, EvalConfig, Norm
from robinherit.errors import ConfigError
from robinherit.seeding import derive_seed


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise ConfigError(
            "eval.autoattack needs torchattacks; install it with `pip install --no-deps torchattacks==3.5.1` "
            "(its code needs only torch, numpy and scipy; with dependencies it would replace torch), or set "
            "eval.autoattack=none for PGD only"
        ) from None
    return torchattacks


def attack_view(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (c, s, s) image torchattacks attacks. Square's l2 proposal assumes square images, so a non-square
    input (MNIST-1D: 1 x 40) is zero-padded to the smallest square (1 x 7 x 7) and the model reads back only
    the first d values: the padding is ignored by the model, so every perturbation stays a valid one."""
    c, h, w = image_shape
    if h == w:
        return image_shape
    s = math.ceil(math.sqrt(h * w))
    return (c, s, s)


class _ImageInput(nn.Module):
    """torchattacks expects (n, c, s, s) images; the models here take flat (n, d) inputs (the first d values)."""

    def __init__(self, model: nn.Module, d: int):
        super().__init__()
        self.model = model
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.reshape(x.shape[0], -1)[:, : self.d])


def to_view(x: Tensor, view: tuple[int, int, int]) -> Tensor:
    """(n, d) -> (n, *view), zero-padded at the end."""
    pad = math.prod(view) - x.shape[1]
    return torch.nn.functional.pad(x, (0, pad)).reshape(x.shape[0], *view)


_TA_NORM = {Norm.linf: "Linf", Norm.l2: "L2"}


def autoattack_names(kind: AutoAttackSet, n_classes: int) -> list[str]:
    """Attacks of ``kind`` that apply with ``n_classes`` classes (targeted DLR needs >= 4 logits)."""
    if kind == AutoAttackSet.none:
        return []
    if kind == AutoAttackSet.standard:
        return ["autoattack-standard"] if n_classes >= 4 else ["apgd-ce", "square"]
    return ["apgd-ce", "apgd-t", "square"] if n_classes >= 4 else ["apgd-ce", "square"]


def _build_attack(name: str, model: nn.Module, norm: Norm, eps: float, n_classes: int, ecfg: EvalConfig, seed):
    ta = _torchattacks()
    tn = _TA_NORM[norm]
    builders = {
        "apgd-ce": lambda: ta.APGD(model, norm=tn, eps=eps, steps=ecfg.apgd_steps, n_restarts=1, loss="ce", seed=seed),
        "apgd-t": lambda: ta.APGDT(
            model, norm=tn, eps=eps, steps=ecfg.apgd_steps, n_restarts=1, n_classes=n_classes, seed=seed
        ),
        "square": lambda: ta.Square(
            model, norm=tn, eps=eps, n_queries=ecfg.square_queries, n_restarts=1, loss="margin", seed=seed
        ),
        "autoattack-standard": lambda: ta.AutoAttack(
            model, norm=tn, eps=eps, version="standard", n_classes=n_classes, seed=seed
        ),
    }
    return builders[name]()


def torchattacks_correct(
    name: str,
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
    margin: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """(n,) mask of examples still classified correctly after the torchattacks attack ``name``, checked to stay in
    the eps ball and in [0, 1]. torchattacks attacks class labels (``y`` (n,)); ``margin`` is not needed."""
    if image_shape is None:
        raise ConfigError(
            f"{name} attacks images in [0, 1]: use it on a real data set (eval.attacks / eval.autoattack)"
        )
    # in the model's own mode: torchattacks puts a model it was given in training mode back into training mode after
    # the attack, and a fresh wrapper starts in training mode, which would switch a batch-norm model to batch
    # statistics (and move its running statistics) for everything after the attack
    wrapped = _ImageInput(model, x.shape[1]).train(model.training)
    x_img = to_view(x, attack_view(image_shape))
    # torchattacks reseeds torch's global generator; keep the caller's stream as it was.
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        attack = _build_attack(name, wrapped, norm, eps, n_classes, ecfg, derive_seed(seed, name) % 2**31)
        x_adv = attack(x_img, y).detach().reshape(x.shape[0], -1)[:, : x.shape[1]]  # (n, d)
    delta = x_adv - x
    size = delta.norm(dim=1) if norm == Norm.l2 else delta.abs().amax(dim=1)
    if bool((size > eps * (1 + 1e-4) + 1e-6).any()) or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
        raise RuntimeError(f"{name} left the eps={eps} {norm.value} ball or [0, 1]: a torchattacks bug")
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) == y


# AutoAttack's components as evaluation attacks (robinherit.evaluation.robust.EVAL_ATTACKS takes them in).
TORCHATTACKS = {
    name: partial(torchattacks_correct, name) for name in ("apgd-ce", "apgd-t", "square", "autoattack-standard")
}
# the same, by the module-level names the evaluation-attack registry declares (robinherit.registry.EVAL_ATTACKS)
apgd_ce, apgd_t, square, autoattack_standard = TORCHATTACKS.values()


def autoattack_correct(model: nn.Module, x: Tensor, y: Tensor, *, ecfg: EvalConfig, n_classes: int, **kw) -> dict:
    """Per-attack (n,) masks of examples still classified correctly after each AutoAttack component of
    ``ecfg.autoattack``; ``kw`` as :func:`torchattacks_correct` takes them (eps, norm, image_shape, seed)."""
    names = autoattack_names(ecfg.autoattack, n_classes)
    return {name: TORCHATTACKS[name](model, x, y, ecfg=ecfg, n_classes=n_classes, **kw) for name in names}
