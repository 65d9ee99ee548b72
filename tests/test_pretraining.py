"""Pre-training: supervised training lowers the loss, adversarial training trains on attacked points, the fast
(closed-form, stacked) and generic (autograd) paths agree, non-finite losses stop the run, and the optimisers."""

from __future__ import annotations

import math

import pytest
import torch

from robinherit.config import ExperimentConfig, Method, Optimizer, load_config, with_updates
from robinherit.errors import NonFiniteLossError
from robinherit.models.two_layer import build_model
from robinherit.ops.losses import multilabel_bce
from robinherit.seeding import generator
from robinherit.training.pretraining import (
    PRETRAINERS,
    check_finite,
    make_optimizer,
    pretrain_contrastive,
    pretrain_supervised,
)
from robinherit.world.sparse_coding import Batch, BatchStream, make_world

# 50 steps: one window of the loss log (log_every = 50); d = 8 and k = 1 keep a step well under a millisecond.
BASE = [
    "data.d=8",
    "data.k=1",
    "model.width=16",
    "pretrain.steps=50",
    "pretrain.batch_size=16",
    "pretrain.attack_steps=2",
]


def cfg_of(*overrides: str) -> ExperimentConfig:
    return load_config(overrides=[*BASE, *overrides])


def parts(cfg: ExperimentConfig):
    """The run's world, pre-training stream and freshly initialised model, as ``run_experiment`` makes them."""
    world = make_world(cfg.data, cfg.seed)
    stream = BatchStream(world, cfg.pretrain.batch_size, cfg.seed)
    model = build_model(cfg.data.d, cfg.model, cfg.data.n_tasks, g=generator(cfg.seed, "init"))
    return world, stream, model


# ---- supervised pre-training ----


@pytest.mark.parametrize("fast", [True, False])
def test_supervised_pretraining_lowers_the_loss(fast):
    cfg = cfg_of("pretrain.eps=0")
    world, stream, model = parts(cfg)
    x, z = world.sample(400, generator(1, "held-out"))
    y = world.pretrain_labels(z)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(multilabel_bce(model(x), y).mean())

    before = held_out_loss()
    steps_seen: list[tuple[int, int]] = []
    log = pretrain_supervised(model, stream, cfg, on_step=lambda i, n: steps_seen.append((i, n)), fast=fast)
    # measured: 0.69 -> 0.39
    assert held_out_loss() < before - 0.2
    assert steps_seen == [(i, 50) for i in range(1, 51)]
    assert len(log.losses) == 1 and log.losses[0] < before  # the mean training loss of the window


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("attack", ["pgd-l2", "fgm-linf"])
def test_adversarial_pretraining_trains_on_attacked_points(fast, attack):
    """At a learning rate too small to move the weights, the logged training loss is the loss of the batches the
    step was taken on at the initial weights: with eps > 0 it must be the higher loss of attacked points."""
    kind, norm = attack.split("-")
    logged = {}
    for eps in (0.0, 0.5):
        cfg = cfg_of(f"pretrain.eps={eps}", f"pretrain.attack={kind}", f"pretrain.norm={norm}", "pretrain.lr=1e-9")
        _, stream, model = parts(cfg)
        (logged[eps],) = pretrain_supervised(model, stream, cfg, fast=fast).losses
    # the same 50 batches (the stream is seeded), clean or attacked; measured: 0.69 clean, 0.77 pgd-l2, 0.80 fgm-linf
    assert logged[0.5] > logged[0.0] + 0.05


def test_generic_adversarial_pretraining_calls_its_attack_every_step(monkeypatch):
    import robinherit.training.pretraining as pretraining

    bound: list[dict] = []
    attacked: list[torch.Tensor] = []
    real = pretraining.training_attack

    def spy(kind, **kwargs):
        bound.append({"kind": kind, **kwargs})
        run = real(kind, **kwargs)

        def counted(loss_fn, x):
            out = run(loss_fn, x)
            attacked.append(out - x)
            return out

        return counted

    monkeypatch.setattr(pretraining, "training_attack", spy)
    cfg = cfg_of("pretrain.eps=0.3", "pretrain.norm=linf", "pretrain.attack_steps=3", "pretrain.steps=4")
    _, stream, model = parts(cfg)
    pretrain_supervised(model, stream, cfg, fast=False)
    assert len(bound) == 1
    assert (bound[0]["kind"], bound[0]["eps"], bound[0]["norm"], bound[0]["steps"]) == ("pgd", 0.3, "linf", 3)
    assert len(attacked) == 4  # once per step
    assert all(0.0 < float(d.abs().max()) <= 0.3 + 1e-6 for d in attacked)


@pytest.mark.parametrize(
    "updates",
    [
        {"pretrain.eps": 0.0},
        {"pretrain.eps": 0.25},
        {"pretrain.eps": 0.25, "pretrain.attack": "fgm", "pretrain.norm": "linf"},
        {"pretrain.eps": 0.25, "pretrain.optimizer": "sgd", "pretrain.lr": 0.1, "model.learn_threshold": True},
    ],
    ids=["clean", "pgd-l2", "fgm-linf", "sgd-learned-b"],
)
def test_fast_and_generic_paths_agree(updates):
    cfg = with_updates(cfg_of(), **updates)
    runs = []
    for fast in (True, False):
        _, stream, model = parts(cfg)
        log = pretrain_supervised(model, stream, cfg, fast=fast)
        runs.append((model, log))
    (fast_model, fast_log), (ref_model, ref_log) = runs
    _, _, init = parts(cfg)
    assert not torch.allclose(fast_model.W, init.W, atol=1e-3)  # it trained, so the agreement is not trivial
    for p, q in zip(fast_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)  # measured: 2e-7 apart
    assert fast_log.losses == pytest.approx(ref_log.losses, rel=1e-5)


# ---- non-finite losses ----


class PoisonedStream:
    """A pre-training stream whose batch number ``at`` (0-based) holds a NaN input."""

    def __init__(self, stream: BatchStream, at: int):
        self.stream, self.at, self.calls = stream, at, 0
        self.world = stream.world

    def next(self) -> Batch:
        batch = self.stream.next()
        if self.calls == self.at:
            x = batch.x.clone()
            x[0, 0] = math.nan
            batch = batch._replace(x=x)
        self.calls += 1
        return batch


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_a_nan_loss_raises_naming_the_learning_rate(fast, eps):
    cfg = cfg_of(f"pretrain.eps={eps}", "pretrain.steps=6")
    _, stream, model = parts(cfg)
    with pytest.raises(NonFiniteLossError, match=r"pretrain\.lr") as err:
        pretrain_supervised(model, PoisonedStream(stream, at=3), cfg, fast=fast)
    assert "step 3 of 6" in str(err.value)
    assert "nan" in str(err.value)
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the bad step must not be applied"


def test_a_nan_loss_stops_contrastive_pretraining_too():
    cfg = cfg_of("pretrain.method=contrastive", "pretrain.eps=0", "pretrain.steps=6")
    _, stream, model = parts(cfg)
    with pytest.raises(NonFiniteLossError, match=r"pretrain\.lr"):
        pretrain_contrastive(model, PoisonedStream(stream, at=2), cfg)


def test_check_finite():
    pcfg = cfg_of("pretrain.lr=0.5", "pretrain.optimizer=sgd").pretrain
    check_finite(torch.tensor(1.5), 0, pcfg)  # finite: no error
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(NonFiniteLossError) as err:
            check_finite(torch.tensor(bad), 7, pcfg)
        message = str(err.value)
        assert "step 7 of 50" in message and "lr=0.5" in message and "optimizer=sgd" in message
        assert "pretrain.lr" in message


# ---- optimisers ----


def params(*values: float) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor([v])) for v in values]


def test_make_optimizer_adam():
    pcfg = cfg_of("pretrain.lr=0.02", "pretrain.weight_decay=0.001").pretrain
    assert pcfg.optimizer == Optimizer.adam  # the default
    for fused in (False, True):
        opt = make_optimizer(params(1.0, 2.0), pcfg, fused=fused)
        assert isinstance(opt, torch.optim.Adam)
        group = opt.param_groups[0]
        assert (group["lr"], group["weight_decay"]) == (0.02, 0.001)


def test_fused_and_plain_adam_take_the_same_steps():
    pcfg = cfg_of("pretrain.lr=0.1").pretrain
    runs = []
    for fused in (False, True):
        (p,) = params(1.0)
        opt = make_optimizer([p], pcfg, fused=fused)
        for grad in (0.5, -2.0, 1.0):
            p.grad = torch.tensor([grad])
            opt.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.equal(runs[0], torch.tensor([1.0]))


def test_make_optimizer_sgd_has_momentum_0_9():
    pcfg = cfg_of("pretrain.optimizer=sgd", "pretrain.lr=0.1").pretrain
    (p,) = params(1.0)
    opt = make_optimizer([p], pcfg)
    assert isinstance(opt, torch.optim.SGD)
    # a constant gradient 1: velocities 1, then 0.9 * 1 + 1 = 1.9; steps of lr times the velocity
    for expected in (0.9, 0.9 - 0.19):
        p.grad = torch.tensor([1.0])
        opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor([expected]))


def test_make_optimizer_sgd_weight_decay():
    pcfg = cfg_of("pretrain.optimizer=sgd", "pretrain.lr=0.1", "pretrain.weight_decay=0.5").pretrain
    (p,) = params(2.0)
    opt = make_optimizer([p], pcfg)
    p.grad = torch.tensor([0.0])
    opt.step()  # the gradient of the decay term is 0.5 * 2
    torch.testing.assert_close(p.detach(), torch.tensor([2.0 - 0.1 * 1.0]))


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_make_optimizer_leaves_frozen_parameters_out(optimizer):
    pcfg = cfg_of(f"pretrain.optimizer={optimizer.value}").pretrain
    trained, frozen = params(1.0, 1.0)
    frozen.requires_grad_(False)
    opt = make_optimizer([trained, frozen], pcfg)
    assert [p for group in opt.param_groups for p in group["params"]] == [trained]


def test_pretrainers_registry():
    assert PRETRAINERS[Method.supervised] is pretrain_supervised
    assert PRETRAINERS[Method.contrastive] is pretrain_contrastive
    assert set(PRETRAINERS) == set(Method)
