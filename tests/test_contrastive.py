"""Contrastive pre-training: the InfoNCE loss, the RoCL adversarial view, and runs end to end."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from robinherit.attacks import training_attack
from robinherit.config import AttackKind, Augmentation, ExperimentConfig, Method, Norm, with_updates
from robinherit.data import BatchStream, make_world
from robinherit.errors import ConfigError
from robinherit.experiment import run_experiment
from robinherit.losses import info_nce
from robinherit.models import build_model
from robinherit.pretraining import PRETRAINERS, adversarial_view


def reference_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent written as the SimCLR paper states it, one anchor at a time."""
    n = a.shape[0]
    views = [a[i] / a[i].norm() for i in range(n)] + [b[i] / b[i].norm() for i in range(n)]

    def sim(i: int, j: int) -> float:
        return float(views[i] @ views[j]) / temperature

    def anchor_loss(i: int, pos: int) -> float:
        denom = sum(math.exp(sim(i, k)) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim(i, pos)) / denom)

    return torch.tensor([0.5 * (anchor_loss(i, n + i) + anchor_loss(n + i, i)) for i in range(n)])


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_info_nce_matches_reference(temperature):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(info_nce(a, b, temperature), reference_info_nce(a, b, temperature).double())


def test_info_nce_is_symmetric_and_scale_free():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    torch.testing.assert_close(info_nce(a, b, 0.2), info_nce(b, a, 0.2))
    torch.testing.assert_close(info_nce(3 * a, 0.5 * b, 0.2), info_nce(a, b, 0.2))


def test_info_nce_permutation_invariant():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    perm = torch.randperm(16, generator=g)
    torch.testing.assert_close(info_nce(a[perm], b[perm], 0.3), info_nce(a, b, 0.3)[perm])
    # permuting one view alone breaks the pairs, so the loss must change
    assert not torch.allclose(info_nce(a, b[perm], 0.3), info_nce(a, b, 0.3)[perm])


def test_info_nce_decreases_under_gradient_steps():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(32, 8, generator=g).requires_grad_(True)
    b = torch.randn(32, 8, generator=g).requires_grad_(True)
    opt = torch.optim.SGD([a, b], lr=0.5)
    losses = []
    for _ in range(50):
        loss = info_nce(a, b, 0.2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]
    assert all(later <= earlier + 1e-6 for earlier, later in itertools.pairwise(losses[:11]))
    # aligned pairs with spread-out negatives score below chance (log(2n - 1))
    assert losses[-1] < math.log(63) - 1


def _tiny_cfg(**updates) -> ExperimentConfig:
    base = ExperimentConfig.model_validate(
        {
            "data": {"d": 16, "k": 3},
            "model": {"width": 32},
            "pretrain": {
                "method": "contrastive",
                "steps": 60,
                "batch_size": 64,
                "eps": 0.25,
                "augmentation": "noise",
                "aug_strength": 0.05,
            },
            "downstream": {"steps": 30, "n_train": 200, "heads": ["clean"]},
            "eval": {"eps_grid": [0, 0.25], "steps": 5, "restarts": 1, "n_test": 200},
        }
    )
    return with_updates(base, **updates) if updates else base


@pytest.mark.parametrize("kind", [AttackKind.pgd, AttackKind.fgm])
def test_adversarial_view_within_budget_and_raises_loss(kind):
    cfg = _tiny_cfg()
    world = make_world(cfg.data, 0)
    model = build_model(16, cfg.model, 1, g=torch.Generator().manual_seed(0))
    x, _ = world.sample(64, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    partner = x + 0.05 * torch.randn(x.shape, generator=g)
    eps = 0.25
    attack = training_attack(kind, eps=eps, norm=Norm.l2, steps=5, generator=g)
    x_adv = adversarial_view(attack, model.features, x, partner, 0.2)
    assert float((x_adv - x).norm(dim=1).max()) <= eps * (1 + 1e-5)
    with torch.no_grad():
        clean = info_nce(model.features(x), model.features(partner), 0.2)
        adv = info_nce(model.features(x_adv), model.features(partner), 0.2)
    assert float(adv.mean()) > float(clean.mean()) + 0.05
    # most examples are individually worse off (the others' views move too, so not necessarily all)
    assert float((adv > clean).float().mean()) > 0.8


def test_contrastive_trains_encoder_only():
    cfg = _tiny_cfg(**{"pretrain.projector_dim": 8, "pretrain.adversarial_view": "both"})
    world = make_world(cfg.data, 0)
    model = build_model(16, cfg.model, 1, g=torch.Generator().manual_seed(0))
    w0, head0 = model.W.detach().clone(), model.head.weight.detach().clone()
    log = PRETRAINERS[Method.contrastive](model, BatchStream(world, 64, 0), cfg)
    assert not torch.equal(model.W, w0)
    assert torch.equal(model.head.weight, head0), "the model's head is not part of contrastive training"
    assert len(log.losses) == 1 and math.isfinite(log.losses[0])


class _RealDataStream:
    """A stream like a real data set's: batches without latent codes, no world."""

    def __init__(self, world):
        self._world = world

    def next(self):
        from robinherit.data import Batch

        x, _ = self._world.sample(64, torch.Generator().manual_seed(0))
        return Batch(x, torch.zeros(64, dtype=torch.long), None)


def test_feature_dropout_on_real_data_is_a_config_error():
    cfg = _tiny_cfg(**{"pretrain.augmentation": "feature_dropout", "pretrain.aug_strength": 0.3})
    world = make_world(cfg.data, 0)
    model = build_model(16, cfg.model, 1)
    with pytest.raises(ConfigError, match="synthetic"):
        PRETRAINERS[Method.contrastive](model, _RealDataStream(world), cfg)


@pytest.mark.parametrize(
    "updates",
    [
        {},
        {"pretrain.eps": 0.0, "pretrain.augmentation": "mask", "pretrain.aug_strength": 0.5},
        {"pretrain.attack": "fgm", "pretrain.augmentation": "feature_dropout", "pretrain.aug_strength": 0.3},
    ],
)
def test_run_experiment_end_to_end(updates):
    cfg = _tiny_cfg(**updates)
    record, artifacts = run_experiment(cfg)
    assert record["config"]["pretrain"]["method"] == "contrastive"
    assert Augmentation(record["config"]["pretrain"]["augmentation"])
    head = record["downstream"]["clean_head"]
    assert 0.0 <= head["robust_acc"]["0.25"] <= head["clean_acc"] <= 1.0
    assert head["clean_acc"] > 0.6, "a head on any trained 32-node encoder should beat chance on this task"
    assert 0.0 < record["purification"]["top1_share_mean"] <= 1.0
    assert artifacts["encoder"]["W"].shape == (32, 16)


@pytest.mark.parametrize(("eps", "view", "calls_per_step"), [(0.25, "one", 1), (0.25, "both", 2), (0.0, "one", 0)])
def test_pretrainer_trains_on_adversarial_views(monkeypatch, eps, view, calls_per_step):
    import robinherit.pretraining as pretraining

    made: list[torch.Tensor] = []

    def marked_view(attack, embed, x, partner, temperature):
        out = x + 7.0  # a view no augmentation or attack would make, to spot it in the training step
        made.append(out)
        return out

    monkeypatch.setattr(pretraining, "adversarial_view", marked_view)
    cfg = _tiny_cfg(**{"pretrain.eps": eps, "pretrain.adversarial_view": view, "pretrain.steps": 3})
    world = make_world(cfg.data, 0)
    model = build_model(16, cfg.model, 1, g=torch.Generator().manual_seed(0))
    fed: list[torch.Tensor] = []
    features = model.features
    monkeypatch.setattr(model, "features", lambda x: (fed.append(x), features(x))[1])
    PRETRAINERS[Method.contrastive](model, BatchStream(world, 64, 0), cfg)
    assert len(made) == 3 * calls_per_step
    # every adversarial view made is what the encoder is then trained on
    assert all(any(f is v for f in fed) for v in made)


def test_contrastive_on_a_stream_without_world():
    cfg = _tiny_cfg(**{"pretrain.augmentation": "mask", "pretrain.aug_strength": 0.5, "pretrain.projector_dim": 4})
    model = build_model(16, cfg.model, 1)
    w0 = model.W.detach().clone()
    PRETRAINERS[Method.contrastive](model, _RealDataStream(make_world(cfg.data, 0)), cfg)
    assert not torch.equal(model.W, w0)
