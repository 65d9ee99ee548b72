"""Contrastive pre-training: the InfoNCE loss, the RoCL adversarial view, and runs end to end."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from conftest import CONTRASTIVE
from robinherit.attacks.gradient import training_attack
from robinherit.config import AttackKind, Augmentation, ExperimentConfig, Method, Norm, deep_merge, with_updates
from robinherit.data.augment import make_views
from robinherit.errors import ConfigError
from robinherit.models.two_layer import build_model
from robinherit.ops.losses import info_nce
from robinherit.runs.experiment import frozen_encoder, run_experiment
from robinherit.training.pretraining import PRETRAINERS, adversarial_view
from robinherit.world.sparse_coding import BatchStream, make_world


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
    lengths = {
        "pretrain": {"steps": 60},
        "downstream": {"steps": 30, "n_train": 200},
        "eval": {"steps": 5, "n_test": 200},
    }
    base = ExperimentConfig.model_validate(deep_merge(CONTRASTIVE, lengths))
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
        from robinherit.world.sparse_coding import Batch

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
    # pre-training really trained: the encoder left its initialisation and lowers InfoNCE on held-out pairs of
    # views (made as in training) below the untrained encoder's; a skipped optimiser step fails both
    init, trained = frozen_encoder(cfg, None), frozen_encoder(cfg, artifacts["encoder"])
    assert float((trained.weight() - init.weight()).norm() / init.weight().norm()) > 0.1
    world = make_world(cfg.data, cfg.seed)
    stream, views = BatchStream(world, 64, seed=1), make_views(cfg.pretrain, world, seed=1)
    held_out = [(views(batch), views(batch)) for batch in (stream.next() for _ in range(4))]

    def held_out_loss(encoder) -> float:  # mean InfoNCE over the four batches
        with torch.no_grad():
            return (
                sum(float(info_nce(encoder.features(v1), encoder.features(v2), 0.2).mean()) for v1, v2 in held_out) / 4
            )

    # measured: 0.11, 0.23 and 0.27 lower than the untrained encoder's on these three configs
    assert held_out_loss(trained) < held_out_loss(init) - 0.05
    assert record["config"]["pretrain"]["method"] == "contrastive"
    assert Augmentation(record["config"]["pretrain"]["augmentation"])
    head = record["downstream"]["clean_head"]
    assert 0.0 <= head["robust_acc"]["0.25"] <= head["clean_acc"] <= 1.0
    assert head["clean_acc"] > 0.6, "a head on any trained 32-node encoder should beat chance on this task"
    assert 0.0 < record["purification"]["top1_share_mean"] <= 1.0
    assert artifacts["encoder"]["W"].shape == (32, 16)


@pytest.mark.parametrize(("eps", "view", "calls_per_step"), [(0.25, "one", 1), (0.25, "both", 2), (0.0, "one", 0)])
def test_pretrainer_trains_on_adversarial_views(monkeypatch, eps, view, calls_per_step):
    import robinherit.training.pretraining as pretraining

    made: list[torch.Tensor] = []

    def marked_view(attack, embed, x, partner, temperature, closed_form=None):
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
    # the generic loop (the stacked path, which the fast default takes, is tested equal to it below)
    PRETRAINERS[Method.contrastive](model, BatchStream(world, 64, 0), cfg, fast=False)
    assert len(made) == 3 * calls_per_step
    # every adversarial view made is what the encoder is then trained on
    assert all(any(f is v for f in fed) for v in made)


def test_contrastive_on_a_stream_without_world():
    cfg = _tiny_cfg(**{"pretrain.augmentation": "mask", "pretrain.aug_strength": 0.5, "pretrain.projector_dim": 4})
    model = build_model(16, cfg.model, 1)
    w0 = model.W.detach().clone()
    PRETRAINERS[Method.contrastive](model, _RealDataStream(make_world(cfg.data, 0)), cfg)
    assert not torch.equal(model.W, w0)


# ---- the closed-form InfoNCE attack gradient (robinherit.ops.closed_form.InfoNCEViewLoss) ----


@pytest.mark.parametrize("activation", ["sym_relu", "relu"])
@pytest.mark.parametrize("projector_dim", [0, 8])
@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0])
def test_closed_form_info_nce_gradient_equals_autograd(activation, projector_dim, temperature):
    from robinherit.config import ModelConfig
    from robinherit.ops.closed_form import info_nce_view_loss

    g = torch.Generator().manual_seed(4)
    model = build_model(16, ModelConfig(width=32, activation=activation, threshold=0.3), 1, g=g)
    projector = torch.nn.Identity()
    if projector_dim:
        projector = torch.nn.Linear(32, projector_dim, bias=False)
        with torch.no_grad():
            projector.weight.copy_(torch.randn(projector_dim, 32, generator=g))
    x, partner = 0.5 * torch.randn(48, 16, generator=g), 0.5 * torch.randn(48, 16, generator=g)
    x[0] = 0.0  # an example with no active unit: a zero embedding, whose norm is clamped

    def embed(v):
        return projector(model.features(v))

    target = embed(partner).detach()
    fused = info_nce_view_loss(model, projector, target, temperature)
    assert fused is not None
    xr = x.clone().requires_grad_(True)
    ref = info_nce(embed(xr), target, temperature)
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
    loss, grad = fused.value_and_grad(x)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused(x), ref.detach(), rtol=1e-5, atol=1e-5)
    # float32 rounding scales with the largest gradient (up to 1/t per similarity)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5 * float(ref_grad.abs().max()))
    assert float(grad.abs().max()) > 0.01, "a vanishing gradient would match trivially"
    assert 0 < (model.features(x) == 0).float().mean() < 1


def test_closed_form_info_nce_falls_back_where_it_has_no_form():
    from robinherit.config import ModelConfig
    from robinherit.ops.closed_form import info_nce_view_loss

    model = build_model(16, ModelConfig(width=32), 1)
    target = torch.randn(8, 32)
    assert info_nce_view_loss(model, torch.nn.Identity(), target, 0.01) is None  # exp could underflow
    assert info_nce_view_loss(model, torch.nn.Linear(32, 32), target, 0.2) is None  # a projector with a bias
    assert info_nce_view_loss(torch.nn.Sequential(model), torch.nn.Identity(), target, 0.2) is None


@pytest.mark.parametrize("updates", [{}, {"pretrain.projector_dim": 8, "pretrain.adversarial_view": "both"}])
def test_contrastive_pretraining_closed_form_equals_autograd(updates):
    cfg = _tiny_cfg(**{"pretrain.steps": 50, **updates})
    runs = []
    for fast in (True, False):
        world = make_world(cfg.data, 0)
        model = build_model(16, cfg.model, 1, g=torch.Generator().manual_seed(0))
        w0 = model.W.detach().clone()
        log = PRETRAINERS[Method.contrastive](model, BatchStream(world, 64, 0), cfg, fast=fast)
        runs.append((model.W.detach(), log))
    (w_fast, log_fast), (w_ref, log_ref) = runs
    assert not torch.allclose(w_fast, w0, atol=1e-3)
    torch.testing.assert_close(w_fast, w_ref, rtol=1e-4, atol=1e-5)
    assert len(log_fast.losses) == 1
    assert log_fast.losses == pytest.approx(log_ref.losses, rel=1e-5)


def test_contrastive_generic_loop_attacks_with_the_closed_form(monkeypatch):
    import robinherit.training.pretraining as pretraining
    from robinherit.ops.closed_form import InfoNCEViewLoss

    seen: list[object] = []
    attack = pretraining.training_attack

    def spy(*args, **kwargs):
        run = attack(*args, **kwargs)
        return lambda loss_fn, x: (seen.append(loss_fn), run(loss_fn, x))[1]

    monkeypatch.setattr(pretraining, "training_attack", spy)
    pretraining.pretrain_contrastive_generic(
        build_model(16, _tiny_cfg().model, 1), BatchStream(make_world(_tiny_cfg().data, 0), 64, 0), _tiny_cfg()
    )
    assert seen and all(isinstance(f, InfoNCEViewLoss) for f in seen)


def test_contrastive_fast_path_attacks_the_stack_with_the_closed_form(monkeypatch):
    from robinherit.attacks.gradient import ATTACKS
    from robinherit.config import AttackKind
    from robinherit.ops.closed_form import InfoNCEViewLoss

    seen: list[object] = []
    attack = ATTACKS[AttackKind.pgd]
    monkeypatch.setitem(ATTACKS, AttackKind.pgd, lambda loss, x, **kw: (seen.append(loss), attack(loss, x, **kw))[1])
    cfg = _tiny_cfg(**{"pretrain.steps": 3})
    PRETRAINERS[Method.contrastive](build_model(16, cfg.model, 1), BatchStream(make_world(cfg.data, 0), 64, 0), cfg)
    assert len(seen) == 3 and all(isinstance(f, InfoNCEViewLoss) for f in seen)
