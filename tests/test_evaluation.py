"""Evaluation self-checks: each warning fires on a model or attack built to trigger it, and stays quiet otherwise."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import robinherit.evaluation.robust as evaluation
from robinherit.config import ModelConfig, Norm, load_config
from robinherit.evaluation.robust import evaluate, flip_radii
from robinherit.models.two_layer import LinearHead, TwoLayerNet
from robinherit.ops.losses import class_margin
from robinherit.runs.experiment import rebuild_run, run_experiment
from robinherit.runs.store import ResultStore

D = 8
TINY = [
    "data.d=16",
    "model.width=32",
    "pretrain.steps=100",
    "pretrain.batch_size=128",
    "pretrain.attack_steps=2",
    "downstream.attack_steps=2",
    "downstream.epochs=10",
    "downstream.n_train=500",
    "eval.n_test=200",
    "eval.steps=10",
    "eval.restarts=1",
    "eval.eps_grid=[0,0.25,0.5]",
]


class Linear2(nn.Module):
    """Two-class linear classifier logits = (-<w, x>, <w, x>) / 2, optionally on a rounded input."""

    def __init__(self, w: torch.Tensor, rounded: bool = False):
        super().__init__()
        self.w, self.rounded = w, rounded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rounded:
            x = torch.round(x * 4) / 4  # piecewise constant: the input gradient is zero everywhere
        s = x @ self.w / 2
        return torch.stack([-s, s], dim=1)


@pytest.fixture(scope="module")
def linear_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g)
    x = torch.randn(300, D, generator=g)
    return w, x, (x @ w > 0).long()


def run_eval(model, x, y, **kw):
    args = dict(eps_grid=(0.0, 0.25, 0.5, 1.0), norm=Norm.l2, steps=10, restarts=1, g=torch.Generator().manual_seed(1))
    return evaluate(model, x, y, class_margin, **{**args, **kw})


def masking_warnings(res) -> list[str]:
    return [w for w in res.warnings if "gradient masking" in w or "gradients are masked" in w]


def test_a_plain_linear_model_passes_every_check(linear_data) -> None:
    w, x, y = linear_data
    res = run_eval(Linear2(w), x, y)
    assert res.warnings == []
    values = [res.clean_acc, *res.robust_acc.values()]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert res.checks["vanishing_grad_share"] == 0.0
    assert res.checks["robust_at_flip_eps"] == 0.0  # PGD breaks everything where a known input does
    assert all(v <= 0.01 for v in res.checks["missed_known_flips"].values())


def test_masking_warnings_fire_on_a_rounded_input(linear_data) -> None:
    w, x, y = linear_data
    res = run_eval(Linear2(w, rounded=True), x, y)
    assert res.clean_acc > 0.8
    assert res.checks["vanishing_grad_share"] == 1.0
    assert res.checks["robust_at_flip_eps"] > 0.02  # PGD is blind; random starts alone do not break everything
    assert len(masking_warnings(res)) >= 2  # zero gradients, and robust at the flip radius


def test_masking_warning_fires_on_a_huge_threshold() -> None:
    enc = TwoLayerNet(D, ModelConfig(width=16, threshold=100.0), 1, torch.Generator().manual_seed(2))
    head = LinearHead(enc, 16, 2)
    with torch.no_grad():
        head.linear.weight.normal_()
        head.linear.bias.copy_(torch.tensor([0.0, 1.0]))  # every unit is dead: the output is the bias
    x = torch.randn(200, D, generator=torch.Generator().manual_seed(3))
    y = torch.ones(200, dtype=torch.long)
    res = run_eval(head.eval(), x, y)
    assert res.clean_acc == 1.0 and res.checks["vanishing_grad_share"] == 1.0
    assert masking_warnings(res)
    # a constant model is truly robust, and the certificate proves it: the warning says "compare", not "wrong"
    assert res.certified_acc == res.robust_acc


def test_flip_radii_match_brute_force(linear_data) -> None:
    w, x, y = linear_data
    model = Linear2(w)
    x, y = x[:60], y[:60]
    pred = model(x).argmax(1)
    for norm, p in ((Norm.l2, 2), (Norm.linf, float("inf"))):
        radii = flip_radii(model, x, y, class_margin, norm, chunk=7)
        for i in range(len(x)):
            others = x[pred != y[i]]
            want = (others - x[i]).norm(p=p, dim=1).min()
            assert float(radii[i]) == pytest.approx(float(want), rel=1e-5)


def test_out_of_budget_perturbation_is_reported(linear_data, monkeypatch) -> None:
    w, x, y = linear_data

    def too_far(loss_fn, x, *, eps, **_):
        return x + 2 * eps * w / w.norm()

    monkeypatch.setattr(evaluation, "pgd", too_far)
    res = run_eval(Linear2(w), x, y, flip_check=False)
    assert any("outside the eps=0.25 ball" in m for m in res.warnings)


def test_missed_examples_at_a_larger_eps_are_kept_broken_and_reported(linear_data, monkeypatch) -> None:
    w, x, y = linear_data
    unit = w / w.norm()

    def only_small(loss_fn, x, *, eps, **_):  # breaks what it can at the smallest eps, nothing above it
        if eps > 0.3:
            return x.clone()
        sign = torch.where(x @ w > 0, 1.0, -1.0)[:, None]
        return x - sign * eps * unit

    monkeypatch.setattr(evaluation, "pgd", only_small)
    res = run_eval(Linear2(w), x, y, flip_check=False)
    assert res.robust_acc["0.25"] < res.clean_acc
    assert res.robust_acc["0.5"] == res.robust_acc["1"] == res.robust_acc["0.25"]
    assert any("missed examples broken at a smaller one" in m for m in res.warnings)


def test_a_certificate_the_attack_breaks_is_reported(monkeypatch) -> None:
    enc = TwoLayerNet(D, ModelConfig(width=16), 1, torch.Generator().manual_seed(4))
    head = LinearHead(enc, 16, 2)
    with torch.no_grad():
        head.linear.weight.normal_(generator=torch.Generator().manual_seed(5))
    x = torch.randn(100, D, generator=torch.Generator().manual_seed(6))
    y = head(x).argmax(1)
    assert not any("certified" in m for m in run_eval(head, x, y, flip_check=False).warnings)
    monkeypatch.setattr(evaluation, "certifier_for", lambda *a, **k: lambda x, y, eps: torch.ones_like(y) > 0)
    res = run_eval(head, x, y, flip_check=False)
    assert any("the attack broke examples the bound certified" in m for m in res.warnings)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = load_config("configs/supervised.yaml", TINY)
    record, artifacts = run_experiment(cfg)
    store = ResultStore(tmp_path_factory.mktemp("eval") / "runs.db")
    store.put(record, artifacts)
    return record, store


def test_records_carry_certified_accuracy_below_robust_for_every_head(tiny_run) -> None:
    record, _ = tiny_run
    for part in [record["pretrain"], *record["downstream"].values()]:
        rob, cert = part["robust_acc"], part["certified_acc"]
        assert list(cert) == list(rob) == ["0", "0.25", "0.5"]
        assert all(cert[k] <= rob[k] <= part["clean_acc"] + 1e-12 for k in rob)
        assert cert["0"] == part["clean_acc"]  # at eps 0 the bound is exact
    assert set(record["downstream"]) == {"clean_head", "adversarial_head"}


@pytest.mark.parametrize("head", ["clean", "adversarial"])
def test_rebuilt_run_reproduces_the_record(tiny_run, head: str) -> None:
    # the adversarial head is retrained with its own PGD stream, so this also pins that stream's seeding
    record, store = tiny_run
    run = rebuild_run(record, store.artifact(record["run_id"], "encoder"), head=head)
    e = run.cfg.eval
    res = evaluate(run.model, run.x, run.y, class_margin, eps_grid=e.eps_grid, norm=e.norm, steps=e.steps,
                   restarts=e.restarts, g=run.eval_generator)  # fmt: skip
    stored = record["downstream"][f"{head}_head"]
    assert res.clean_acc == stored["clean_acc"]
    assert res.robust_acc == stored["robust_acc"]
    assert res.certified_acc == stored["certified_acc"]


def test_a_constant_head_is_degenerate_and_a_good_one_is_not():
    from robinherit.evaluation.robust import prediction_balance

    y = torch.tensor([0] * 52 + [1] * 48)
    constant = torch.tensor([[1.0, -1.0]]).repeat(100, 1)  # always class 0: clean accuracy 0.52, the prior
    got = prediction_balance(constant, y, clean_acc=0.52)
    assert got == {"majority_share": 1.0, "class_prior": 0.52, "degenerate": True}
    good = torch.nn.functional.one_hot(y, 2).float()
    assert prediction_balance(good, y, clean_acc=1.0)["degenerate"] is False
    # balanced predictions at chance are degenerate too: the clean accuracy is the prior
    coin = torch.nn.functional.one_hot(torch.arange(100) % 2, 2).float()
    assert prediction_balance(coin, y, clean_acc=0.52)["degenerate"] is True


def _deterministic_attack(model, x, y, *, eps, norm, margin, seed, **_):
    """An evaluation attack whose result for an example does not depend on the other examples attacked with it:
    PGD from the clean point (no random start) on the margin, five steps."""
    from robinherit.attacks.gradient import pgd

    loss = lambda xa: -margin(model(xa), y)  # noqa: E731
    x_adv = pgd(loss, x, eps=eps, norm=norm, steps=5, random_init=False)
    with torch.no_grad():
        return margin(model(x_adv), y) > 0


def test_the_cascade_equals_every_attack_on_every_example_where_attacks_are_deterministic(monkeypatch):
    from robinherit.config import EvalConfig
    from robinherit.evaluation.robust import EVAL_ATTACKS, robust_eval
    from robinherit.ops.losses import class_margin

    monkeypatch.setitem(EVAL_ATTACKS, "det-a", _deterministic_attack)
    monkeypatch.setitem(EVAL_ATTACKS, "det-b", lambda *a, **k: _deterministic_attack(*a, **{**k, "eps": k["eps"]}))
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    for p in model.parameters():
        torch.nn.init.normal_(p, generator=g)
    x = torch.randn(200, 6, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::7] = (y[::7] + 1) % 3  # some examples wrong on clean input
    out = {}
    for per_attack in (True, False):
        ecfg = EvalConfig(eps_grid=(0, 0.1, 0.3, 0.6), steps=3, attacks=(), per_attack=per_attack)
        ecfg = ecfg.model_copy(update={"attacks": ("det-a", "det-b")})
        out[per_attack] = robust_eval(
            model,
            x,
            y,
            class_margin,
            ecfg,
            n_classes=3,
            image_shape=None,
            g=torch.Generator().manual_seed(1),
            seed=0,
            tag="t",
        )
    assert out[True]["robust_acc"] == out[False]["robust_acc"]
    assert out[True]["pgd_robust_acc"] == out[False]["pgd_robust_acc"]
    assert set(out[True]["per_attack_robust_acc"]["0.3"]) == {"det-a", "det-b"}  # the diagnostics report each
    assert any(v > 0 for b in out[False]["cascade_broken"].values() for v in b.values())


def _mlp_and_data(n: int = 50, d: int = 12, classes: int = 4) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.rand(n, d, generator=g)
    return model.requires_grad_(False), x, model(x).argmax(1)  # labels the model gets right, for attacks to break


def test_chunked_evaluation_equals_one_batch_for_linf_pgd() -> None:
    # l-inf PGD with one random start draws its starts row by row from one generator, so attacking 50 examples in
    # chunks of 16 (the last one short) must give what one batch gives, example by example
    model, x, y = _mlp_and_data()
    kw = dict(eps_grid=(0.0, 0.01, 0.05), norm=Norm.linf, steps=5, restarts=1, clip=(0.0, 1.0), certify=False)
    whole = evaluate(model, x, y, class_margin, g=torch.Generator().manual_seed(0), **kw)
    chunked = evaluate(model, x, y, class_margin, g=torch.Generator().manual_seed(0), batch_size=16, **kw)
    assert 0 < whole.robust_acc["0.05"] < whole.robust_acc["0.01"] < 1  # the attack has work to do
    for k in whole.robust_mask:
        assert torch.equal(whole.robust_mask[k], chunked.robust_mask[k])
    assert whole.checks["vanishing_grad_share"] == chunked.checks["vanishing_grad_share"]
    assert whole.checks["flip_eps"] == chunked.checks["flip_eps"]


def test_chunks_cover_every_example_once_and_seed_chunks_apart() -> None:
    from robinherit.evaluation.worst_case import chunk_seed, chunks, in_chunks

    assert chunks(10, None) == [slice(0, 10)] and chunks(10, 10) == [slice(0, 10)]
    assert [(s.start, s.stop) for s in chunks(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert chunk_seed(7, 0) == 7 and len({chunk_seed(7, i) for i in range(5)}) == 5
    seen: list[tuple[int, int]] = []

    def attack(model, x, y, *, seed, eps):
        seen.append((int(x[0, 0]), seed))
        return x[:, 0] % 2 == 0  # a fake attack: "still correct" for even rows

    x = torch.arange(10.0).unsqueeze(1)
    ok = in_chunks(attack, None, x, torch.zeros(10), 7, 4, eps=0.1)
    assert ok.tolist() == [i % 2 == 0 for i in range(10)]
    assert seen == [(0, 7), (4, chunk_seed(7, 1)), (8, chunk_seed(7, 2))]
