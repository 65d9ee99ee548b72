"""Downstream heads (train_head): the encoder stays frozen, a clean head learns a separable task, an adversarial head
is robust where a clean one cannot be, and the adversarial head's training attack respects the input box."""

from __future__ import annotations

import itertools

import pytest
import torch

from robinherit.config import DownstreamConfig, HeadKind, Norm, load_config
from robinherit.models.conv import ConvConfig, ConvNet
from robinherit.models.two_layer import build_model
from robinherit.ops.losses import class_margin
from robinherit.training.heads import batches, head_rows, train_head, train_heads


def downstream_cfg(*overrides: str):
    return load_config(overrides=["downstream.steps=50", "downstream.attack_steps=3", *overrides]).downstream


def model_cfg(width: int, threshold: float = 0.0):
    return load_config(overrides=[f"model.width={width}", f"model.threshold={threshold}"]).model


def accuracy(head, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((class_margin(head(x), y) > 0).float().mean())


def two_layer(d: int, width: int, threshold: float = 0.0):
    return build_model(d, model_cfg(width, threshold), 1, g=torch.Generator().manual_seed(0))


def conv(width: int):
    return ConvNet((1, 4, 4), ConvConfig(channels=(2,)), model_cfg(width), 1, g=torch.Generator().manual_seed(0))


# ---- the encoder is frozen ----


@pytest.mark.parametrize("kind", list(HeadKind))
@pytest.mark.parametrize("encoder", ["two_layer", "conv"])
def test_the_encoder_stays_frozen(kind, encoder):
    enc = two_layer(16, 12, threshold=0.3) if encoder == "two_layer" else conv(12)
    before = {name: p.detach().clone() for name, p in enc.named_parameters()}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 16, generator=g), torch.randint(0, 2, (40,), generator=g)
    head = train_head(enc, 12, 2, x, y, kind, downstream_cfg("downstream.steps=5"), norm=Norm.l2, g=g)
    for name, p in enc.named_parameters():
        assert torch.equal(p, before[name]), name
        assert not p.requires_grad and p.grad is None, name  # no gradient work reaches the encoder
    assert head.encoder is enc
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in head.linear.parameters()), "the head trained"


@pytest.mark.parametrize("over", [(), ("downstream.batch_size=16", "downstream.epochs=2")])
@pytest.mark.parametrize("stack", [1, 3])
def test_clean_features_are_computed_once_a_minibatch_at_a_time(over, stack):
    """A deep encoder's activations of a whole training split would not fit in memory: the clean head reads the
    frozen features once, in chunks of its minibatch (full batch: one pass)."""
    enc = two_layer(16, 12, threshold=0.3)
    seen: list[int] = []
    real = enc.features
    enc.features = lambda xb: seen.append(len(xb)) or real(xb)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 16, generator=g)
    ys = [torch.randint(0, 2, (40,), generator=g) for _ in range(stack)]
    cfg = downstream_cfg("downstream.steps=5", *over)
    gens = [torch.Generator().manual_seed(s) for s in range(stack)]
    train_heads(enc, 12, 2, x, ys, HeadKind.clean, cfg, norm=Norm.l2, gens=gens)
    assert seen == ([16, 16, 8] if over else [40])  # every example once, no chunk above the minibatch


# ---- a clean head learns ----


def test_a_clean_head_learns_a_separable_task():
    """A linear encoder (threshold 0) of full rank: a linear task of the inputs is linear in the features."""
    g = torch.Generator().manual_seed(2)
    u = torch.randn(6, generator=g)
    x, x_test = torch.randn(300, 6, generator=g), torch.randn(500, 6, generator=g)
    y, y_test = (x @ u > 0).long(), (x_test @ u > 0).long()
    enc = two_layer(6, 16)
    head = train_head(enc, 16, 2, x, y, HeadKind.clean, downstream_cfg("downstream.steps=100"), norm=Norm.l2, g=g)
    assert accuracy(head, x, y) > 0.95
    assert accuracy(head, x_test, y_test) > 0.95  # measured: 0.99


def test_a_clean_head_on_more_classes():
    g = torch.Generator().manual_seed(3)
    centres = 3 * torch.eye(4)
    y = torch.randint(0, 4, (200,), generator=g)
    x = centres[y] + 0.3 * torch.randn(200, 4, generator=g)
    head = train_head(
        two_layer(4, 8), 8, 4, x, y, HeadKind.clean, downstream_cfg("downstream.steps=100"), norm="l2", g=g
    )
    assert head(x).shape == (200, 4)
    assert accuracy(head, x, y) > 0.95


# ---- an adversarial head is robust where a clean one is not ----

WEAK = 20  # weak features next to the strong one


def robust_world(n: int, seed: int):
    """x = s (1, 0.3, ..., 0.3) + noise, label 1[s > 0]: one strong feature and 20 weak ones, all predictive.

    Under an l-inf budget eps = 0.5 the weak features can all be flipped, the strong one cannot: the head
    w = e_1 is robust (margin 1 against a worst-case drop of 0.5). A clean head spreads weight over every feature
    (measured: equal weights), whose worst-case drop eps ||w||_1 exceeds its margin everywhere.
    """
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    v = torch.tensor([1.0] + [0.3] * WEAK)
    return s[:, None] * v + 0.05 * torch.randn(n, WEAK + 1, generator=g), (s > 0).long()


def identity_encoder(d: int):
    enc = two_layer(d, d)
    with torch.no_grad():
        enc.W.copy_(torch.eye(d))
    return enc


def linf_robust_accuracy(head, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """Exact for a linear head on an identity encoder: correct under every perturbation iff the logit margin
    exceeds eps times the l1 norm of the weight difference (the dual of l-inf)."""
    with torch.no_grad():
        w = head.linear.weight
        drop = eps * (w[1] - w[0]).abs().sum()
        return float((class_margin(head(x), y) > drop).float().mean())


def test_an_adversarial_head_is_robust_where_a_clean_one_is_not():
    x, y = robust_world(200, 0)
    x_test, y_test = robust_world(500, 1)
    cfg = downstream_cfg("downstream.eps=0.5")
    heads = {
        kind: train_head(
            identity_encoder(WEAK + 1), WEAK + 1, 2, x, y, kind, cfg, norm=Norm.linf, g=torch.Generator().manual_seed(2)
        )
        for kind in HeadKind
    }
    for head in heads.values():
        assert accuracy(head, x_test, y_test) > 0.99
    clean = linf_robust_accuracy(heads[HeadKind.clean], x_test, y_test, 0.5)
    adversarial = linf_robust_accuracy(heads[HeadKind.adversarial], x_test, y_test, 0.5)
    assert clean < 0.1  # measured: 0.0
    assert adversarial > 0.9  # measured: 1.0
    # the adversarial head's robustness comes from leaning on the strong feature
    w = heads[HeadKind.adversarial].linear.weight.detach()
    diff = (w[1] - w[0]).abs()
    assert float(diff[0]) > 10 * float(diff[1:].max())


# ---- the input box ----


def spy_on_attack(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Records (x, x_adv) of every attack the adversarial head trains on."""
    import robinherit.training.heads as downstream

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = downstream.pgd

    def spy(loss_fn, x, **kwargs):
        out = real(loss_fn, x, **kwargs)
        seen.append((x, out))
        return out

    monkeypatch.setattr(downstream, "pgd", spy)
    return seen


@pytest.mark.parametrize("clip", [(0.0, 1.0), None])
def test_the_adversarial_head_attack_respects_clip(monkeypatch, clip):
    seen = spy_on_attack(monkeypatch)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(60, 8, generator=g)  # images in [0, 1]: many coordinates near the box's faces
    y = (x[:, 0] > 0.5).long()
    eps = 0.3
    cfg = downstream_cfg("downstream.steps=4", f"downstream.eps={eps}")
    train_head(two_layer(8, 8), 8, 2, x, y, HeadKind.adversarial, cfg, norm=Norm.linf, g=g, clip=clip)
    assert len(seen) == 4  # one attack per step
    for x_in, x_adv in seen:
        assert float((x_adv - x_in).abs().max()) <= eps + 1e-6
        assert float((x_adv - x_in).abs().max()) > 0.5 * eps  # it attacked
    lo = min(float(x_adv.min()) for _, x_adv in seen)
    hi = max(float(x_adv.max()) for _, x_adv in seen)
    if clip is None:  # the control: without the box the attack leaves [0, 1], so the clipped case tests something
        assert lo < 0.0 and hi > 1.0
    else:
        assert lo >= 0.0 and hi <= 1.0


def test_minibatch_epochs_visit_every_example_once_per_epoch():
    from robinherit.config import DownstreamConfig
    from robinherit.training.heads import batches

    cfg = DownstreamConfig(steps=7, batch_size=4)
    rows = list(batches(10, cfg, torch.Generator().manual_seed(0)))
    assert len(rows) == 7  # steps counts optimiser steps, across epochs
    first_epoch = torch.cat(rows[:3])
    assert sorted(first_epoch.tolist()) == list(range(10))  # 4 + 4 + 2: each example once
    assert sorted(torch.cat(rows[3:6]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(rows[:3]), torch.cat(rows[3:6]))  # a fresh shuffle per epoch
    full = list(batches(10, DownstreamConfig(steps=3), torch.Generator()))
    assert full == [slice(None)] * 3  # the default: every example every step


def test_weight_decay_bounds_the_head_norm():
    from robinherit.config import DownstreamConfig, HeadKind, ModelConfig
    from robinherit.models.two_layer import TwoLayerNet
    from robinherit.training.heads import train_head

    g = torch.Generator().manual_seed(0)
    enc = TwoLayerNet(6, ModelConfig(width=12, threshold=0.0), 1, g)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] > 0).long()  # separable: without decay the logistic head's norm keeps growing
    norms = {}
    for wd in (0.0, 0.1):
        cfg = DownstreamConfig(steps=300, lr=0.1, weight_decay=wd, batch_size=50)
        head = train_head(enc, 12, 2, x, y, HeadKind.clean, cfg, norm="l2", g=torch.Generator().manual_seed(1))
        norms[wd] = float(head.linear.weight.detach().norm())
        with torch.no_grad():
            assert float((head(x).argmax(1) == y).float().mean()) > 0.9  # both still solve the task
    assert norms[0.1] < 0.5 * norms[0.0]


def test_epochs_set_the_step_count_and_sgd_trains_a_head():
    from robinherit.config import DownstreamConfig, ExperimentConfig, HeadKind, ModelConfig
    from robinherit.models.two_layer import TwoLayerNet
    from robinherit.training.heads import batches, head_steps, train_head

    cfg = DownstreamConfig(steps=999, epochs=3, batch_size=4)
    assert head_steps(10, cfg) == 9  # 3 epochs of ceil(10 / 4) minibatches; steps is ignored
    rows = list(batches(10, cfg, torch.Generator().manual_seed(0)))
    assert len(rows) == 9 and all(sorted(torch.cat(rows[i : i + 3]).tolist()) == list(range(10)) for i in (0, 3, 6))
    assert head_steps(10, DownstreamConfig(epochs=5)) == 5  # full batch: one step per epoch
    # steps is inert once epochs is set: the two configs are one run
    a = ExperimentConfig(downstream={"epochs": 2, "batch_size": 8, "steps": 10})
    b = ExperimentConfig(downstream={"epochs": 2, "batch_size": 8, "steps": 20})
    c = ExperimentConfig(downstream={"epochs": 3, "batch_size": 8})
    assert a.config_hash() == b.config_hash() != c.config_hash()

    g = torch.Generator().manual_seed(0)
    enc = TwoLayerNet(6, ModelConfig(width=12, threshold=0.0), 1, g)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] > 0).long()
    sgd = DownstreamConfig(epochs=20, batch_size=50, lr=0.1, optimizer="sgd")
    head = train_head(enc, 12, 2, x, y, HeadKind.clean, sgd, norm="l2", g=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((head(x).argmax(1) == y).float().mean()) > 0.9


@pytest.mark.parametrize(
    "over",
    [
        {"steps": 7},  # full batch
        {"epochs": 3},  # full batch by epochs
        {"epochs": 3, "batch_size": 4},  # the field's protocol: epochs over minibatches, a short last batch
        {"steps": 5, "batch_size": 4},  # minibatch steps that end inside an epoch
        {"steps": 6, "batch_size": 5},  # whole epochs by steps
        {"epochs": 2, "batch_size": 64},  # one batch larger than the set: full batch
    ],
)
def test_head_rows_counts_the_rows_batches_yields(over: dict) -> None:
    cfg = DownstreamConfig(**over)
    n = 10
    yielded = sum(n if isinstance(r, slice) else len(r) for r in batches(n, cfg, torch.Generator().manual_seed(0)))
    assert head_rows(n, cfg) == yielded


@pytest.mark.parametrize("kind", [HeadKind.clean, HeadKind.adversarial])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_schedule_spans_exactly_the_heads_steps(monkeypatch, kind, schedule) -> None:
    """Cosine decays from lr towards 0 over head_steps steps (the last minibatches barely move the head); constant
    keeps lr throughout. The optimiser's lr is read at every step."""
    from robinherit.training.heads import head_steps

    seen: list[float] = []
    real_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    cfg = DownstreamConfig(epochs=3, batch_size=16, lr=0.05, lr_schedule=schedule, attack_steps=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = (x[:, 0] > 0).long()
    train_head(two_layer(6, 8), 8, 2, x, y, kind, cfg, norm=Norm.l2, g=g)
    assert len(seen) == head_steps(40, cfg) == 9
    if schedule == "constant":
        assert seen == [0.05] * 9
    else:
        assert seen[0] == pytest.approx(0.05) and all(a > b for a, b in itertools.pairwise(seen))
        assert seen[-1] < 0.05 * 0.05  # the last step's rate is under 5% of the first's


def test_a_constant_schedule_keeps_the_run_ids_of_heads_stored_before_schedules_existed() -> None:
    from robinherit.config import ExperimentConfig

    plain = ExperimentConfig()
    assert "lr_schedule" not in plain.identity()["downstream"]  # constant: as before the field existed
    cosine = ExperimentConfig(downstream={"lr_schedule": "cosine"})
    assert cosine.identity()["downstream"]["lr_schedule"] == "cosine"
    assert cosine.config_hash() != plain.config_hash()
    assert cosine.pretrain_hash() == plain.pretrain_hash()  # one encoder for both


# ---- heads of one encoder as a stack ----


@pytest.mark.parametrize("kind", list(HeadKind))
@pytest.mark.parametrize(
    "over",
    [
        ("downstream.epochs=3", "downstream.batch_size=16", "downstream.lr_schedule=cosine"),  # last batch of 8
        ("downstream.steps=20",),  # full batch, constant rate
        ("downstream.epochs=2", "downstream.batch_size=16", "downstream.optimizer=sgd", "downstream.weight_decay=0.01"),
    ],
)
def test_heads_trained_as_a_stack_equal_the_heads_trained_one_by_one(kind, over):
    enc = two_layer(16, 12, threshold=0.3)
    enc.center = torch.full((16,), 0.1)  # a centred encoder: the stack must centre its attack points too
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, generator=g)
    ys = [torch.randint(0, 3, (40,), generator=g) for _ in range(3)]
    cfg = downstream_cfg(*over)
    alone = [
        train_head(enc, 12, 3, x, y, kind, cfg, norm=Norm.l2, g=torch.Generator().manual_seed(10 + s))
        for s, y in enumerate(ys)
    ]
    gens = [torch.Generator().manual_seed(10 + s) for s in range(3)]
    stack = train_heads(enc, 12, 3, x, ys, kind, cfg, norm=Norm.l2, gens=gens)
    for a, b in zip(alone, stack, strict=True):
        assert b.encoder is enc
        for p, q in zip(a.linear.parameters(), b.linear.parameters(), strict=True):
            # the same minibatches, starts and updates; batched products (and the stack's PGD) round differently
            assert torch.allclose(p, q, atol=1e-5, rtol=1e-4)
        assert not torch.equal(a.linear.weight, torch.zeros_like(a.linear.weight))
    # each head drew as many numbers from its own stream as its own training did
    for s, gen in enumerate(gens):
        ref = torch.Generator().manual_seed(10 + s)
        train_head(enc, 12, 3, x, ys[s], kind, cfg, norm=Norm.l2, g=ref)
        assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=ref))


def test_heads_on_a_conv_encoder_or_clipped_inputs_train_one_by_one(monkeypatch):
    import robinherit.training.heads as downstream

    calls = []
    real = downstream.train_head
    monkeypatch.setattr(downstream, "train_head", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(4)
    x = torch.rand(20, 1, 4, 4, generator=g)
    ys = [torch.randint(0, 2, (20,), generator=g) for _ in range(2)]
    cfg = downstream_cfg("downstream.steps=3")
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    heads = downstream.train_heads(conv(12), 12, 2, x, ys, HeadKind.adversarial, cfg, norm=Norm.linf, gens=gens)
    assert len(heads) == 2 and len(calls) == 2
    flat = x.reshape(20, 16)
    downstream.train_heads(
        two_layer(16, 12), 12, 2, flat, ys, HeadKind.clean, cfg, norm=Norm.l2, gens=gens, clip=(0, 1)
    )
    assert len(calls) == 4
