"""Augmentations: shape, dtype and the statistics each one promises; feature dropout needs a world."""

from __future__ import annotations

import math

import pytest
import torch

from robinherit.config import Augmentation, DataConfig, PretrainConfig
from robinherit.data.augment import AUGMENTATIONS, make_views
from robinherit.errors import ConfigError
from robinherit.world.sparse_coding import Batch, make_world

N, D = 4000, 16


@pytest.fixture(scope="module")
def world():
    return make_world(DataConfig(d=D, k=3, noise=0.0), seed=0)


@pytest.fixture(scope="module")
def batch(world):
    x, z = world.sample(N, torch.Generator().manual_seed(1))
    return Batch(x, world.pretrain_labels(z), z)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", list(Augmentation))
def test_shape_dtype_and_randomness(kind, batch, world):
    strength = 0.0 if kind == Augmentation.none else 0.3
    v1 = AUGMENTATIONS[kind](batch, strength, _g(0), world)
    v2 = AUGMENTATIONS[kind](batch, strength, _g(1), world)
    assert v1.shape == batch.x.shape and v1.dtype == batch.x.dtype and v1.device == batch.x.device
    assert torch.isfinite(v1).all()
    if kind == Augmentation.none:
        assert torch.equal(v1, batch.x)
    else:
        assert not torch.equal(v1, v2), "two draws of a random augmentation must differ"
        assert not torch.equal(v1, batch.x)


@pytest.mark.parametrize("kind", [Augmentation.noise, Augmentation.mask, Augmentation.feature_dropout])
def test_zero_strength_is_identity_up_to_encoding(kind, batch, world):
    v = AUGMENTATIONS[kind](batch, 0.0, _g(), world)
    # feature dropout re-encodes with the world's input noise, which is 0 in this world
    torch.testing.assert_close(v, batch.x, atol=1e-5, rtol=0)


def test_noise_statistics(batch, world):
    strength = 0.2
    delta = AUGMENTATIONS[Augmentation.noise](batch, strength, _g(), world) - batch.x
    # 64000 draws: the standard error of the mean is 0.2 / 253 ~ 8e-4, of the std ~ 6e-4
    assert abs(float(delta.mean())) < 5e-3
    assert abs(float(delta.std()) - strength) < 5e-3
    # independent coordinates: no correlation between neighbours
    corr = torch.corrcoef(torch.stack([delta[:, 0], delta[:, 1]]))[0, 1]
    assert abs(float(corr)) < 0.05


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.75])
def test_mask_keeps_fraction_and_is_unbiased(strength, batch, world):
    x = batch.x
    v = AUGMENTATIONS[Augmentation.mask](batch, strength, _g(), world)
    keep = 1.0 - strength
    kept = v != 0
    assert abs(float(kept.float().mean()) - keep) < 0.01
    # surviving coordinates are rescaled by 1/p, so E[view] = x
    torch.testing.assert_close(v[kept], x[kept] / keep)
    bias = (v - x).mean(dim=0).abs().max()
    sd = x.abs().max() * math.sqrt(strength / keep / N)
    assert float(bias) < 6 * float(sd)


@pytest.mark.parametrize("strength", [0.2, 0.5])
def test_feature_dropout_drops_latent_features(strength, batch, world):
    v = AUGMENTATIONS[Augmentation.feature_dropout](batch, strength, _g(), world)
    # the dictionary is orthogonal and the input noise 0, so M^T x recovers the code of the view
    z_view = v @ world.M
    active = batch.z != 0
    survived = (z_view.abs() > 0.5) & active
    assert abs(float(survived.sum() / active.sum()) - (1 - strength)) < 0.02
    # nothing appears that was not there, and survivors keep their value (no rescaling)
    assert float(z_view[~active].abs().max()) < 1e-4
    torch.testing.assert_close(z_view[survived], batch.z[survived], atol=1e-4, rtol=0)


def test_feature_dropout_without_world_is_a_config_error(batch):
    with pytest.raises(ConfigError, match="feature_dropout"):
        make_views(PretrainConfig(augmentation=Augmentation.feature_dropout, aug_strength=0.2), None, seed=0)
    with pytest.raises(ConfigError, match="mask or noise"):
        AUGMENTATIONS[Augmentation.feature_dropout](Batch(batch.x, batch.y, None), 0.2, _g(), None)


def test_views_are_seeded(batch, world):
    cfg = PretrainConfig(augmentation=Augmentation.mask, aug_strength=0.5)
    a, b = make_views(cfg, world, seed=3), make_views(cfg, world, seed=3)
    first = a(batch)
    assert torch.equal(first, b(batch))
    assert not torch.equal(first, a(batch)), "successive views of one stream must differ"
