"""Contrastive pre-training in closed form and stacked (robinherit.training.stacked): the InfoNCE training step's
gradients
against autograd, a stack of S runs against S separate runs of the autograd loop, the scheduler using the stack,
and the autograd fallback where the closed form does not apply."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from conftest import CONTRASTIVE
from robinherit.attacks.gradient import pgd
from robinherit.config import ExperimentConfig, Method, ModelConfig, Norm, deep_merge, with_updates
from robinherit.models.two_layer import TwoLayerNet, build_model
from robinherit.ops import stack_grads
from robinherit.ops.closed_form import InfoNCEViewLoss, info_nce_and_grad, info_nce_view_loss
from robinherit.ops.losses import info_nce
from robinherit.runs import experiment, schedule
from robinherit.runs.experiment import run_experiment
from robinherit.runs.schedule import run_many
from robinherit.seeding import generator
from robinherit.training import stacked as batched
from robinherit.training.pretraining import pretrain_contrastive
from robinherit.world.sparse_coding import BatchStream, make_world

D, WIDTH, N = CONTRASTIVE["data"]["d"], CONTRASTIVE["model"]["width"], CONTRASTIVE["pretrain"]["batch_size"]


def tiny(**updates) -> ExperimentConfig:
    lengths = {
        "pretrain": {"steps": 50, "attack_steps": 3},  # 50 steps: one loss-log window
        "downstream": {"steps": 20, "n_train": 128},
        "eval": {"steps": 3, "n_test": 128},
    }
    base = ExperimentConfig.model_validate(deep_merge(CONTRASTIVE, lengths))
    return with_updates(base, **updates) if updates else base


# ---- the closed-form gradients ----


@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0])
@pytest.mark.parametrize("stack", [None, 3])
def test_info_nce_and_grad_equals_autograd(temperature, stack):
    g = torch.Generator().manual_seed(0)
    shape = (2 * 11, 6) if stack is None else (stack, 2 * 11, 6)
    e = torch.randn(*shape, generator=g, dtype=torch.float64)
    e[..., 3, :] = 0.0  # a zero embedding: its norm is clamped, as in F.normalize
    er = e.clone().requires_grad_(True)
    views = [er] if stack is None else list(er)
    ref = torch.stack([info_nce(v[:11], v[11:], temperature) for v in views])
    (ref_grad,) = torch.autograd.grad(ref.sum(), er)
    loss, grad = info_nce_and_grad(e, temperature)
    torch.testing.assert_close(loss, ref.reshape(loss.shape).detach(), rtol=1e-12, atol=1e-12)
    # the clamped zero row carries gradients of order 1e12 in both; compare relative to the largest entry
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))
    rows = torch.ones(shape[-2], dtype=torch.bool)
    rows[3] = False
    torch.testing.assert_close(grad[..., rows, :], ref_grad[..., rows, :], rtol=1e-10, atol=1e-12)


def _reference_grads(models, projectors, x1, x2, temperature):
    """Autograd through the generic step's loss (losses.info_nce on the encoders' features), per model."""
    out = []
    for s, m in enumerate(models):
        params = [m.W] + ([m.b] if m.b.requires_grad else [])
        proj = None if projectors is None else projectors[s].clone().requires_grad_(True)

        def embed(x, m=m, proj=proj):
            h = m.features(x)
            return h if proj is None else h @ proj.T

        loss = info_nce(embed(x1[s]), embed(x2[s]), temperature).mean()
        grads = torch.autograd.grad(loss, params + ([proj] if proj is not None else []))
        g_w, rest = grads[0], list(grads[1:])
        g_b = rest.pop(0) if m.b.requires_grad else None
        out.append((loss.detach(), g_w, g_b, rest[0] if rest else None))
    return out


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"activation": "relu", "normalize_rows": False},
        {"learn_threshold": True, "threshold": 0.2},
        {"learn_threshold": True, "activation": "relu", "projector": 8},
        {"projector": 8, "center": True},
        {"temperature": 0.05, "center": True, "learn_threshold": True},
        {"temperature": 1.0, "normalize_rows": False, "projector": 4},
        {"adversarial": True, "learn_threshold": True},
        {"adversarial": True, "projector": 8, "center": True, "temperature": 0.5},
    ],
)
def test_contrastive_grads_equal_autograd(variant):
    variant = dict(variant)
    t, k = variant.pop("temperature", 0.2), variant.pop("projector", 0)
    centred, adversarial = variant.pop("center", False), variant.pop("adversarial", False)
    cfg = ModelConfig(width=WIDTH, **variant)
    g = torch.Generator().manual_seed(1)
    center = 0.3 * torch.randn(D, generator=g, dtype=torch.float64) if centred else None
    models = [TwoLayerNet(D, cfg, 1, generator(s, "init"), center).double() for s in range(3)]
    if cfg.learn_threshold:  # thresholds that differ per node, and one below 0, where clamp_min passes no gradient
        with torch.no_grad():
            for m in models:
                m.b.copy_(0.3 * torch.rand(WIDTH, generator=g, dtype=torch.float64))
                m.b[0] = -0.1
    projectors = None if not k else torch.randn(3, k, WIDTH, generator=g, dtype=torch.float64) / WIDTH**0.5
    x1 = 0.5 * torch.randn(3, N, D, generator=g, dtype=torch.float64)
    x2 = x1 + 0.1 * torch.randn(3, N, D, generator=g, dtype=torch.float64)
    x1[:, 0] = 0.0 if center is None else center  # an example with no active unit (a zero embedding)
    net = batched.StackedTwoLayer(models)
    if adversarial:  # the views the RoCL attack makes, at the kinks an attack finds
        loss = stack_grads.stacked_view_loss(net, projectors, net.centred(x2), t)
        x1 = pgd(loss, net.centred(x1), eps=[0.25, 0.5, 0.3], norm=Norm.l2, steps=3, generator=[g, g, g]) + (
            0.0 if center is None else center
        )
    ref = _reference_grads(models, projectors, x1, x2, t)
    loss, (g_w, g_b, g_p) = stack_grads.contrastive_grads(
        net.W, net.b, projectors, net.centred(x1), net.centred(x2), temperature=t, cfg=cfg, learn_b=cfg.learn_threshold
    )
    for s, (r_loss, r_w, r_b, r_p) in enumerate(ref):
        torch.testing.assert_close(loss[s], r_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_w[s], r_w, rtol=1e-8, atol=1e-12)
        assert float(r_w.abs().max()) > 1e-3, "a vanishing gradient would match trivially"
        assert (g_b is None) == (r_b is None) and (g_p is None) == (r_p is None)
        if r_b is not None:
            torch.testing.assert_close(g_b[s], r_b, rtol=1e-8, atol=1e-12)
            assert g_b[s, 0] == 0 and float(r_b.abs().max()) > 1e-4
        if r_p is not None:
            torch.testing.assert_close(g_p[s], r_p, rtol=1e-8, atol=1e-12)
    assert 0 < (models[0].features(x1[0]) == 0).float().mean() < 1  # thresholds bite, but not everywhere


@pytest.mark.parametrize("projector", [0, 8])
def test_stacked_view_loss_equals_each_models_own(projector):
    """The RoCL attack's closed-form loss on a stack is, model by model, the single model's."""
    models = [build_model(D, ModelConfig(width=WIDTH), 1, generator(s, "init")) for s in range(3)]
    g = torch.Generator().manual_seed(2)
    proj = torch.randn(3, projector, WIDTH, generator=g) / WIDTH**0.5 if projector else None
    x, partner = torch.randn(3, N, D, generator=g), torch.randn(3, N, D, generator=g)
    net = batched.StackedTwoLayer(models)
    stacked = stack_grads.stacked_view_loss(net, proj, partner, 0.2)
    assert isinstance(stacked, InfoNCEViewLoss)
    value, grad = stacked.value_and_grad(x)
    for s, m in enumerate(models):
        head = torch.nn.Identity()
        if projector:
            head = torch.nn.Linear(WIDTH, projector, bias=False)
            head.weight.data.copy_(proj[s])
        single = info_nce_view_loss(m, head, head(m.features(partner[s])).detach(), 0.2)
        ref_value, ref_grad = single.value_and_grad(x[s])
        torch.testing.assert_close(value[s], ref_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stacked(x)[s], ref_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[s], ref_grad, rtol=1e-4, atol=1e-6)


# ---- a stack = the runs one by one ----


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.fixture
def float64():
    """Models and projectors in float64; the synthetic world's batches are drawn in float32, as always, and cast."""
    with default_dtype(torch.float64):
        yield


class _Float64:
    """A stream whose batches are drawn as usual (float32) and whose inputs and labels come in the default dtype."""

    def __init__(self, stream):
        self.stream, self.world = stream, stream.world

    def next(self):
        with default_dtype(torch.float32):
            batch = self.stream.next()
        dt = torch.get_default_dtype()  # z stays float32, as the world's dictionary it is encoded with
        return type(batch)(batch.x.to(dt), batch.y.to(dt), batch.z)


class _Centred:
    """A world's stream whose inputs are shifted by a fixed vector, for encoders that centre them (as real data)."""

    def __init__(self, stream: BatchStream, shift: torch.Tensor):
        self.stream, self.shift, self.world = stream, shift, stream.world

    def next(self):
        batch = self.stream.next()
        return type(batch)(batch.x + self.shift, batch.y, batch.z)


def _parts(c: ExperimentConfig, shift: torch.Tensor | None):
    with default_dtype(torch.float32):
        stream = BatchStream(make_world(c.data, c.seed), c.pretrain.batch_size, c.seed, c.data.n_train)
    model = TwoLayerNet(c.data.d, c.model, c.data.n_tasks, generator(c.seed, "init"), shift)
    stream = stream if shift is None else _Centred(stream, shift)
    return (stream if torch.get_default_dtype() == torch.float32 else _Float64(stream)), model


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"pretrain.adversarial_view": "both", "pretrain.projector_dim": 8},
        {"pretrain.attack": "fgm", "pretrain.norm": "linf", "pretrain.eps": 0.05, "pretrain.augmentation": "none"},
        {"pretrain.eps": 0.0, "pretrain.augmentation": "mask", "pretrain.aug_strength": 0.5},
        {
            "model.learn_threshold": True,
            "model.normalize_rows": False,
            "model.activation": "relu",
            "model.threshold": 0.1,
        },
        {
            "pretrain.eps": 0.0,
            "pretrain.optimizer": "sgd",
            "pretrain.lr": 0.05,
            "pretrain.augmentation": "feature_dropout",
            "pretrain.aug_strength": 0.3,
            "data.n_train": 200,
        },
        {"centre": True, "pretrain.temperature": 0.5, "pretrain.weight_decay": 1e-3},
    ],
    ids=[
        "l2-pgd",
        "both-views-projector",
        "linf-fgm-no-augmentation",
        "clean-mask",
        "learned-b-relu",
        "sgd-dropout-fixed",
        "centred",
    ],
)
def test_stacked_contrastive_equals_separate_runs(variant, float64):
    # The adversarial variants avoid views whose embedding has a single active unit: its direction, all InfoNCE
    # sees, cannot change, so its input gradient is exactly 0. The closed form returns 0, autograd rounding noise
    # (~1e-6), which PGD's normalised step turns into a full step, and from there the two runs part (measured: relu
    # at threshold 0.3 on this width; feature dropout, which thins the views, parted them too).
    # In float64 (the ``float64`` fixture): in float32 the two paths' rounding (batched matmuls sum in another order,
    # fused Adam rounds differently) sent a unit across a kink at step 49 of 50 on one machine and not on another,
    # after which the runs part by 1e-3; in float64 they agree to about 1e-15 on both.
    variant = dict(variant)
    shift = 0.2 * torch.randn(D, generator=torch.Generator().manual_seed(3)) if variant.pop("centre", False) else None
    cfgs = [tiny(seed=s, **variant) for s in range(3)]
    if cfgs[0].pretrain.eps > 0:  # per-model budgets inside one stack
        cfgs[2] = with_updates(cfgs[2], **{"pretrain.eps": 2 * cfgs[2].pretrain.eps})
    assert len(schedule.group_configs(cfgs)) == 1
    streams, models = zip(*(_parts(c, shift) for c in cfgs), strict=True)
    net = batched.StackedTwoLayer(models)
    logs = batched.pretrain_contrastive_stacked(net, streams, cfgs)
    net.unstack(models)
    for c, m, log in zip(cfgs, models, logs, strict=True):
        stream, ref = _parts(c, shift)
        ref_log = pretrain_contrastive(ref, stream, c, fast=False)  # the autograd loop, not a stack of one
        for p, q in zip(m.parameters(), ref.parameters(), strict=True):
            assert p.dtype == torch.float64
            # float rounding only: batched matmuls sum in another order, fused Adam rounds differently
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
        assert len(log.losses) == 1
        np.testing.assert_allclose(log.losses, ref_log.losses, rtol=1e-9)
    # the models really differ (each its own seed) and really trained
    assert not torch.allclose(models[0].W, models[1].W)
    assert not torch.allclose(models[0].W, _parts(cfgs[0], shift)[1].W, atol=1e-3)


def test_single_contrastive_run_is_a_stack_of_one(monkeypatch):
    calls: list[int] = []
    real = batched.pretrain_contrastive_stacked

    def spy(net, streams, cfgs, on_step=None):
        calls.append(len(cfgs))
        return real(net, streams, cfgs, on_step)

    monkeypatch.setattr(batched, "pretrain_contrastive_stacked", spy)
    cfg = tiny(**{"pretrain.steps": 3})
    stream, model = _parts(cfg, None)
    pretrain_contrastive(model, stream, cfg)
    assert calls == [1]


# ---- the scheduler takes the stack ----


def test_run_many_pretrains_contrastive_configs_as_one_stack(monkeypatch):
    stacks: list[list[int]] = []
    real = batched.pretrain_contrastive_stacked

    def spy(net, streams, cfgs, on_step=None):
        stacks.append([c.seed for c in cfgs])
        return real(net, streams, cfgs, on_step)

    monkeypatch.setattr(batched, "pretrain_contrastive_stacked", spy)
    cfgs = [tiny(seed=0), tiny(seed=1, **{"pretrain.eps": 0.5}), tiny(seed=0, **{"pretrain.eps": 0.0})]
    results: dict[int, tuple] = {}
    run_many(cfgs, lambda i, res, err: results.__setitem__(i, (res, err)))
    assert stacks == [[0, 1], [0]]  # the adversarial runs as one stack; the clean run alone (a stack of one)
    assert all(err is None for _, err in results.values())
    # the records are run_experiment's (the stack of one of the clean run is compared here too)
    for i, c in enumerate(cfgs):
        (rec, art), ref = results[i][0], run_experiment(c)
        assert rec["run_id"] == ref[0]["run_id"]
        np.testing.assert_allclose(art["encoder"]["W"], ref[1]["encoder"]["W"], rtol=1e-4, atol=1e-5)
        assert rec["pretrain"]["loss_curve"] == pytest.approx(ref[0]["pretrain"]["loss_curve"], rel=1e-5)
        assert rec["purification"]["top1_share_mean"] == pytest.approx(
            ref[0]["purification"]["top1_share_mean"], abs=1e-4
        )
        assert rec["downstream"]["clean_head"]["clean_acc"] == pytest.approx(
            ref[0]["downstream"]["clean_head"]["clean_acc"], abs=0.02
        )


def test_contrastive_stacks_are_capped_on_the_cpu():
    cfgs = [tiny(seed=s) for s in range(batched.CPU_MAX_STACK[Method.contrastive] + 3)]
    groups = schedule.group_configs(cfgs, max_size=32)
    assert [len(g) for g in groups] == [batched.CPU_MAX_STACK[Method.contrastive], 3]
    assert [len(g) for g in schedule.group_configs(cfgs, max_size=2)][:2] == [2, 2]


def test_sweep_groups_put_contrastive_seeds_together():
    from robinherit.runs.sweep import groups

    cfgs = [tiny(seed=s) for s in range(3)] + [tiny(seed=s, **{"pretrain.eps": 0.0}) for s in range(2)]
    assert [[c.seed for c in g] for g in groups(iter(cfgs), size=8)] == [[0, 1, 2], [0, 1]]


# ---- fallback: what the closed form does not cover trains on the autograd loop ----


def test_low_temperature_falls_back_to_autograd(monkeypatch):
    cfg = tiny(**{"pretrain.temperature": 0.02, "pretrain.steps": 4})
    stream, model = _parts(cfg, None)
    assert not batched.supports_config(cfg) and not batched.supports(model, cfg)
    assert batched.batch_key(cfg) is None and schedule.group_configs(
        [cfg, tiny(seed=1, **{"pretrain.temperature": 0.02})]
    ) == [[0], [1]]

    def forbidden(*a, **k):
        raise AssertionError("the stacked path must not run below the closed form's temperature")

    real = batched.pretrain_contrastive_stacked
    monkeypatch.setattr(batched, "pretrain_contrastive_stacked", forbidden)
    log = pretrain_contrastive(model, stream, cfg)
    ref_stream, ref = _parts(cfg, None)
    ref_log = pretrain_contrastive(ref, ref_stream, cfg, fast=False)
    torch.testing.assert_close(model.W, ref.W)  # the same autograd loop, the same bits
    assert log.losses == ref_log.losses
    with pytest.raises(ValueError, match="batch_key"):
        real(batched.StackedTwoLayer([model]), [stream], [cfg])  # called directly, the stack refuses


def test_other_encoders_and_mixed_stacks_are_not_stacked():
    from robinherit.config import load_config

    conv = load_config(None, ["data.source=digits", "model.encoder=conv", "pretrain.method=contrastive"])
    assert not batched.supports_config(conv) and batched.batch_key(conv) is None
    cfg = tiny()
    assert not batched.supports(torch.nn.Sequential(build_model(D, cfg.model, 1)), cfg)
    # clean and adversarial runs never share a stack: the clean ones would pay for an attack
    mixed = [tiny(seed=0), tiny(seed=1, **{"pretrain.eps": 0.0})]
    streams, models = zip(*(_parts(c, None) for c in mixed), strict=True)
    with pytest.raises(ValueError, match="batch_key"):
        batched.pretrain_contrastive_stacked(batched.StackedTwoLayer(models), streams, mixed)


def test_iter_stack_runs_contrastive_stacks():
    cfgs = [tiny(seed=s, **{"pretrain.steps": 5}) for s in range(2)]
    out = list(experiment.iter_stack(cfgs))
    assert [rec["seed"] for rec, _ in out] == [0, 1]
    assert all(rec["config"]["pretrain"]["method"] == "contrastive" for rec, _ in out)


def test_stacked_contrastive_on_real_data_equals_the_generic_loop():
    """Real data: no world, a fixed training set, and the encoder's input centre (the training mean)."""
    from robinherit.config import load_config
    from robinherit.data.sources import build_sources

    sets = [
        "data.source=digits",
        "model.width=32",
        "pretrain.method=contrastive",
        "pretrain.eps=0.5",
        "pretrain.steps=50",
        "pretrain.batch_size=64",
        "pretrain.attack_steps=2",
        "pretrain.augmentation=mask",
        "pretrain.aug_strength=0.3",
    ]
    cfgs = [load_config(None, [*sets, f"seed={s}"]) for s in range(2)]
    assert cfgs[0].data.center and len(schedule.group_configs(cfgs)) == 1
    sources = build_sources(cfgs)
    cpu = torch.device("cpu")
    models = [experiment.build_encoder(c, s) for c, s in zip(cfgs, sources, strict=True)]
    assert models[0].center is not None
    net = batched.StackedTwoLayer(models)
    streams = [s.pretrain_stream(c, cpu) for c, s in zip(cfgs, sources, strict=True)]
    logs = batched.pretrain_contrastive_stacked(net, streams, cfgs)
    net.unstack(models)
    for c, s, m, log in zip(cfgs, sources, models, logs, strict=True):
        ref = experiment.build_encoder(c, s)
        ref_log = pretrain_contrastive(ref, s.pretrain_stream(c, cpu), c, fast=False)
        torch.testing.assert_close(m.W, ref.W, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(log.losses, ref_log.losses, rtol=1e-5)
        assert not torch.allclose(m.W, experiment.build_encoder(c, s).W, atol=1e-3)  # it really trained
