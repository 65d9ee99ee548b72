"""Certified bounds: relaxations valid, bounds sound against sampled and attacked points, exact on linear models."""

from __future__ import annotations

import itertools

import pytest
import torch
from benchmarks.reference_certify import broadcast_relaxation

from robinherit.attacks.gradient import pgd, project
from robinherit.config import Activation, DataConfig, DownstreamConfig, HeadKind, ModelConfig, Norm
from robinherit.evaluation.certify import (
    BoundMethod,
    TwoLayerLinear,
    as_two_layer,
    certified_accuracy,
    certifier_for,
    class_spec,
    logit_bounds,
    margin_lower_bound,
    multilabel_spec,
    relaxation,
)
from robinherit.evaluation.robust import evaluate
from robinherit.models.two_layer import LinearHead, TwoLayerNet, build_model
from robinherit.ops.losses import class_margin, multilabel_margin
from robinherit.seeding import generator
from robinherit.training.heads import train_head
from robinherit.world.sparse_coding import make_world

D_IN, WIDTH, N_CLASSES = 8, 16, 3


def random_head(activation: str, threshold: float, seed: int = 0) -> LinearHead:
    g = torch.Generator().manual_seed(seed)
    enc = TwoLayerNet(D_IN, ModelConfig(width=WIDTH, activation=activation, threshold=threshold), 1, g)
    head = LinearHead(enc, WIDTH, N_CLASSES)
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(N_CLASSES, WIDTH, generator=g))
        head.linear.bias.copy_(torch.randn(N_CLASSES, generator=g))
    return head.eval()


def ball_samples(x: torch.Tensor, eps: float, norm: Norm, g: torch.Generator) -> torch.Tensor:
    """(S, n, d) points of the ball: uniform inside, on the sphere, and at corners (l-inf)."""
    n, d = x.shape
    out = []
    for _ in range(25):
        v = torch.randn(n, d, generator=g)
        if norm == Norm.l2:
            v = v / v.norm(dim=1, keepdim=True)
            r = torch.rand(n, 1, generator=g) ** (1 / d)
            out += [x + eps * r * v, x + eps * (1 - 1e-9) * v]
        else:
            out += [x + eps * (torch.rand(n, d, generator=g) * 2 - 1), x + eps * torch.sign(v)]
    return torch.stack(out)


@pytest.mark.parametrize("activation", [Activation.sym_relu, Activation.relu])
def test_relaxation_lines_enclose_the_unit_and_are_exact_on_a_linear_piece(activation: Activation) -> None:
    g = torch.Generator().manual_seed(1)
    m = 64
    b = torch.rand(m, generator=g, dtype=torch.float64) * 0.5
    net = TwoLayerLinear(torch.eye(m, dtype=torch.float64), b, activation, torch.zeros(1, m, dtype=torch.float64),
                         torch.zeros(1, dtype=torch.float64))  # fmt: skip
    centre = torch.randn(5, m, generator=g, dtype=torch.float64)
    half = torch.rand(5, m, generator=g, dtype=torch.float64)
    lo, hi = centre - half, centre + half
    a_l, c_l, a_u, c_u = relaxation(net, lo, hi)
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    u = lo[..., None] + (hi - lo)[..., None] * t  # (5, m, 201)
    f = net.act(u.transpose(-1, -2)).transpose(-1, -2)  # thresholds broadcast over the last axis
    assert bool((a_l[..., None] * u + c_l[..., None] <= f + 1e-12).all())
    assert bool((a_u[..., None] * u + c_u[..., None] >= f - 1e-12).all())
    # An interval inside one linear piece (no kink strictly inside) gets the unit itself as both lines.
    kinks = [-b, b] if activation == Activation.sym_relu else [b]
    stable = torch.stack([(k <= lo) | (k >= hi) for k in kinks]).all(0)
    assert bool(stable.any())
    assert torch.allclose(a_l[stable], a_u[stable]) and torch.allclose(c_l[stable], c_u[stable])


@pytest.mark.parametrize("activation", [Activation.sym_relu, Activation.relu])
@pytest.mark.parametrize("eps", [0.0, 1e-13, 0.1, 0.5, 2.0])
def test_relaxation_equals_the_broadcast_form_to_the_bit(activation: Activation, eps: float) -> None:
    g = torch.Generator().manual_seed(3)
    n, m = 200, 32
    b = torch.rand(m, generator=g, dtype=torch.float64) * 0.5
    b[:4] = 0.0  # b = 0: the kinks meet
    net = TwoLayerLinear(torch.eye(m, dtype=torch.float64), b, activation, torch.zeros(1, m, dtype=torch.float64),
                         torch.zeros(1, dtype=torch.float64))  # fmt: skip
    u = torch.randn(n, m, generator=g, dtype=torch.float64)
    u[:40] = b * torch.sign(torch.randn(40, m, generator=g, dtype=torch.float64))  # centred on a kink
    lo, hi = u - eps, u + eps
    lo[40:60] = b  # an end on a kink
    hi[60:80] = -b
    lo[80:100] = hi[80:100] - 1e-12  # widths at the "wide" cut-off
    lo[100:120] = hi[100:120] - 2e-12
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    for got, want in zip(relaxation(net, lo, hi), broadcast_relaxation(net, lo, hi), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("activation", [Activation.sym_relu, Activation.relu])
@pytest.mark.parametrize("norm", [Norm.l2, Norm.linf])
def test_bounds_contain_every_sampled_and_attacked_point(activation: Activation, norm: Norm) -> None:
    head = random_head(activation, 0.3)
    net = as_two_layer(head)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(48, D_IN, generator=g)
    y = head(x).argmax(1)
    eps = 0.4 if norm == Norm.l2 else 0.15
    pts = ball_samples(x, eps, norm, g)  # (S, n, d)
    spec = class_spec(y, N_CLASSES)
    # attacked points: PGD pushing each margin down and each logit up and down
    attacks = [
        pgd(lambda xa: -class_margin(head(xa), y), x, eps=eps, norm=norm, steps=20, restarts=2, generator=g),
        *[pgd(lambda xa, c=c, s=s: s * head(xa)[:, c], x, eps=eps, norm=norm, steps=20, generator=g)
          for c in range(N_CLASSES) for s in (1.0, -1.0)],
    ]  # fmt: skip
    # float64 points, projected again, so float32 rounding cannot put a test point outside the ball
    x64 = x.double()
    pts = x64 + torch.stack([project(p.double() - x64, eps, norm) for p in (*pts, *attacks)])
    logits = torch.stack([net.logits(p) for p in pts])  # (S, n, C)
    margins = torch.einsum("nrc,snc->snr", spec, logits)
    for method in BoundMethod:
        low, up = logit_bounds(net, x, eps=eps, norm=norm, method=method)
        assert bool((logits >= low - 1e-9).all()) and bool((logits <= up + 1e-9).all()), method
        m_low = margin_lower_bound(net, x, spec, eps=eps, norm=norm, method=method)
        assert bool((margins >= m_low - 1e-9).all()), method
    # best is the max of the two sound bounds and CROWN is much tighter than IBP on average
    ibp = margin_lower_bound(net, x, spec, eps=eps, norm=norm, method=BoundMethod.ibp)
    crown = margin_lower_bound(net, x, spec, eps=eps, norm=norm, method=BoundMethod.crown)
    best = margin_lower_bound(net, x, spec, eps=eps, norm=norm, method=BoundMethod.best)
    assert torch.equal(best, torch.maximum(ibp, crown))
    assert float((crown - ibp).mean()) > 0


@pytest.mark.parametrize("norm", [Norm.l2, Norm.linf])
def test_linear_model_is_certified_exactly_and_zero_where_it_flips(norm: Norm) -> None:
    # b = 0 makes the symmetric unit the identity: logits = V W x + c, whose flip distances are analytic.
    head = random_head(Activation.sym_relu, 0.0, seed=3)
    net = as_two_layer(head)
    x = torch.randn(300, D_IN, generator=torch.Generator().manual_seed(4))
    y = head(x).argmax(1)
    spec = class_spec(y, N_CLASSES)  # (n, C-1, C)
    A = spec @ net.V @ net.W  # (n, C-1, d): each margin's gradient
    margin = spec @ net.logits(x)[:, :, None]
    dual = A.norm(dim=-1) if norm == Norm.l2 else A.abs().sum(-1)
    flip = (margin.squeeze(-1) / dual).amin(dim=1)  # (n,) distance to the nearest decision boundary
    certifier = certifier_for(head, class_margin, norm, BoundMethod.crown)
    grid = tuple(float(q) for q in torch.quantile(flip.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)))
    acc, _ = certified_accuracy(certifier, x, y, eps_grid=(*grid, float(flip.max()) * 1.01))
    for (key, value), eps in zip(acc.items(), sorted((*grid, float(flip.max()) * 1.01)), strict=True):
        assert value == pytest.approx(float((flip > eps * (1 + 1e-9)).float().mean()), abs=1.5 / len(x)), key
    assert list(acc.values())[-1] == 0.0
    # IBP ignores that the units are linear (it treats them one by one), so it certifies no more than that.
    ibp_acc, _ = certified_accuracy(certifier_for(head, class_margin, norm, BoundMethod.ibp), x, y, eps_grid=grid)
    assert all(ibp_acc[k] <= acc[k] + 1e-12 for k in ibp_acc)


def test_eps_zero_certifies_exactly_the_correct_examples_and_curves_do_not_increase() -> None:
    head = random_head(Activation.sym_relu, 0.3, seed=5)
    x = torch.randn(200, D_IN, generator=torch.Generator().manual_seed(6))
    y = torch.randint(0, N_CLASSES, (200,), generator=torch.Generator().manual_seed(7))
    acc, masks = certified_accuracy(certifier_for(head, class_margin, Norm.l2), x, y, eps_grid=(0.0, 0.1, 0.3, 1.0))
    assert torch.equal(masks["0"], class_margin(head(x), y) > 0)
    values = list(acc.values())
    assert all(a >= b for a, b in itertools.pairwise(values)) and values[0] > values[-1]


def test_multilabel_spec_certifies_the_pretraining_network() -> None:
    net = TwoLayerNet(D_IN, ModelConfig(width=WIDTH), 2, torch.Generator().manual_seed(8)).eval()
    x = torch.randn(100, D_IN, generator=torch.Generator().manual_seed(9))
    t = (net(x) > 0).float()  # targets the network gets right at x
    cert = certifier_for(net, multilabel_margin, Norm.l2)
    assert bool(cert(x, t, 0.0).all())
    spec = multilabel_spec(t)
    low = margin_lower_bound(as_two_layer(net), x, spec, eps=0.2, norm=Norm.l2)
    x_adv = pgd(lambda xa: -multilabel_margin(net(xa), t), x, eps=0.2, steps=30, generator=torch.Generator())
    assert bool((multilabel_margin(net(x_adv), t) >= low.amin(1) - 1e-6).all())


def test_unsupported_models_and_margins_get_no_certifier() -> None:
    head = random_head(Activation.sym_relu, 0.3)
    assert certifier_for(lambda xa: head(xa), class_margin, Norm.l2) is None
    assert certifier_for(torch.nn.Linear(D_IN, 2), class_margin, Norm.l2) is None
    assert certifier_for(head, lambda logits, y: logits[:, 0], Norm.l2) is None
    x = torch.randn(20, D_IN)
    res = evaluate(lambda xa: head(xa), x, head(x).argmax(1), class_margin, eps_grid=(0.0, 0.1), norm=Norm.l2,
                   steps=5, restarts=1, g=torch.Generator(), flip_check=False)  # fmt: skip
    assert res.certified_acc is None and "certified_acc" not in res.to_dict()


def test_pure_node_oracle_certified_close_to_attacked() -> None:
    # docs/theory.md claim 5 at gamma = 0: one node per feature, w_i = M_i, threshold 0.3, a clean head.
    # At eps 0.25 every unit stays on one linear piece (|<M_i, x>| is ~1 or ~0), so CROWN is exact.
    dcfg = DataConfig(d=16, k=3)
    world = make_world(dcfg, 0)
    net = build_model(16, ModelConfig(width=16), n_out=1, g=generator(0, "init"))
    with torch.no_grad():
        net.W.copy_(world.M.T)
    net.freeze().eval()
    x_tr, z_tr = world.sample(1000, generator(0, "tr"))
    head = train_head(net, 16, 2, x_tr, world.downstream_labels(z_tr), HeadKind.clean, DownstreamConfig(steps=200),
                      norm=Norm.l2, g=generator(0, "head"))  # fmt: skip
    x_te, z_te = world.sample(500, generator(0, "te"))
    res = evaluate(head, x_te, world.downstream_labels(z_te), class_margin, eps_grid=(0.0, 0.25), norm=Norm.l2,
                   steps=20, restarts=2, g=generator(0, "ev"), flip_check=False)  # fmt: skip
    gap = res.robust_acc["0.25"] - res.certified_acc["0.25"]
    assert res.robust_acc["0.25"] > 0.8  # pure nodes are robust at this radius
    assert 0 <= gap <= 0.02, gap


def test_the_relaxation_memo_answers_equal_inputs_only_and_keeps_to_its_budget() -> None:
    from robinherit.evaluation.certify import RelaxationMemo, preactivation_bounds

    net = as_two_layer(random_head("sym_relu", 0.3))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, D_IN, generator=g, dtype=torch.float64)
    memo = RelaxationMemo()
    first = memo.lines(net, x, 0.3, Norm.l2)
    direct = relaxation(net, *preactivation_bounds(net, x, 0.3, Norm.l2))
    assert all(torch.equal(a, b) for a, b in zip(first, direct, strict=True))
    # a copy of the same inputs (another tensor, the same bytes) is a hit; any change is a miss
    again = memo.lines(as_two_layer(random_head("sym_relu", 0.3)), x.clone(), 0.3, Norm.l2)
    assert all(a is b for a, b in zip(again, first, strict=True))
    x2 = x.clone()
    x2[0, 0] += 1e-12
    for args in ((net, x2, 0.3, Norm.l2), (net, x, 0.31, Norm.l2), (net, x, 0.3, Norm.linf)):
        assert memo.lines(*args)[0] is not first[0]
    other = as_two_layer(random_head("sym_relu", 0.3, seed=1))
    assert not torch.equal(memo.lines(other, x, 0.3, Norm.l2)[1], first[1])
    assert len(memo.entries) == 5
    # the budget: entries beyond it are dropped, oldest first, and an entry larger than the budget is not kept
    size = sum(t.numel() * t.element_size() for t in first)
    small = RelaxationMemo(budget=2 * size)
    for eps in (0.1, 0.2, 0.3):
        small.lines(net, x, eps, Norm.l2)
    assert len(small.entries) == 2 and small.key(net, x, 0.1, Norm.l2) not in small.entries
    tiny = RelaxationMemo(budget=size - 1)
    tiny.lines(net, x, 0.1, Norm.l2)
    assert not tiny.entries
