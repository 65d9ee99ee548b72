"""Augmentations that make the two views of contrastive pre-training.

Weak augmentation: small additive Gaussian noise. Strong augmentation: random coordinate masking
x -> x * D / p with D = diag(Bernoulli(p)) (Wen & Li 2021, "Toward Understanding the Feature Learning
Process of Self-supervised Contrastive Learning"; their p is 1/2). Feature dropout removes latent
features before they are mixed by the dictionary, which only the synthetic world can do.

Strength is one dial ``aug_strength`` for every kind: the noise standard deviation per coordinate, or
the drop probability 1 - p. Strength 0 is the identity for every kind. Registry: ``AUGMENTATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robinherit.config import Augmentation, PretrainConfig
from robinherit.errors import ConfigError
from robinherit.seeding import generator
from robinherit.world.sparse_coding import Batch, World

# (batch, strength, generator, world or None) -> (n, d) view of batch.x, same shape, dtype and device
AugmentFn = Callable[[Batch, float, torch.Generator, "World | None"], Tensor]


def identity(batch: Batch, strength: float, g: torch.Generator, world: World | None) -> Tensor:
    return batch.x.clone()


def gaussian_noise(batch: Batch, strength: float, g: torch.Generator, world: World | None) -> Tensor:
    """x + N(0, strength^2 I)."""
    x = batch.x
    return x + strength * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def coordinate_mask(batch: Batch, strength: float, g: torch.Generator, world: World | None) -> Tensor:
    """x * D / p, D_jj ~ Bernoulli(p), p = 1 - strength: unbiased, E[view] = x (Wen & Li 2021)."""
    x = batch.x
    keep = 1.0 - strength
    d = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) < keep
    return x * d.to(x.dtype) / keep


def feature_dropout(batch: Batch, strength: float, g: torch.Generator, world: World | None) -> Tensor:
    """Re-encode z * D, D_jj ~ Bernoulli(1 - strength), with fresh input noise: M (z * D) + xi.

    Not rescaled: a view keeps the surviving features at their own values, so it is a sample of the
    same world with fewer active features. ``g`` must be a CPU generator (``World.encode`` draws there).
    """
    if world is None or batch.z is None:
        raise ConfigError(
            "pretrain.augmentation=feature_dropout drops latent features, which only the synthetic world has "
            "(this data stream has no latent codes z / no dictionary); use pretrain.augmentation=mask or noise "
            "for real data"
        )
    z = batch.z.detach().cpu()
    keep = (torch.rand(z.shape, generator=g) >= strength).to(z.dtype)
    return world.encode(z * keep, g).to(device=batch.x.device, dtype=batch.x.dtype)


AUGMENTATIONS: dict[Augmentation, AugmentFn] = {
    Augmentation.none: identity,
    Augmentation.noise: gaussian_noise,
    Augmentation.mask: coordinate_mask,
    Augmentation.feature_dropout: feature_dropout,
}

# Augmentations that draw on the CPU whatever the device, because the world samples there.
_CPU_DRAWS = frozenset({Augmentation.feature_dropout})


def make_views(
    cfg: PretrainConfig, world: World | None, seed: int, device: str | torch.device = "cpu"
) -> Callable[[Batch], Tensor]:
    """``views(batch) -> (n, d)``: one random view per call, from a stream of its own seeded by ``seed``.

    Fails at once (not at the first batch) when the augmentation needs a world the data does not have.
    """
    kind = Augmentation(cfg.augmentation)
    if kind == Augmentation.feature_dropout and world is None:
        raise ConfigError(
            "pretrain.augmentation=feature_dropout drops latent features, which only the synthetic world has "
            "(this data stream has no dictionary); use pretrain.augmentation=mask or noise for real data"
        )
    fn = AUGMENTATIONS[kind]
    g = generator(seed, "augment", "cpu" if kind in _CPU_DRAWS else device)
    strength = float(cfg.aug_strength)

    def views(batch: Batch) -> Tensor:
        return fn(batch, strength, g, world)

    return views
