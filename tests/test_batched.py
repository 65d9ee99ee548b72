"""The batched path (robinherit.training.stacked) against S separate runs with the same seeds."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from robinherit.attacks import gradient as attacks
from robinherit.attacks.gradient import fgm, pgd, random_start
from robinherit.config import ExperimentConfig, Norm, with_updates
from robinherit.models.two_layer import build_model
from robinherit.ops.closed_form import fused_loss
from robinherit.ops.losses import multilabel_bce
from robinherit.ops.stack_grads import stack_attack_loss
from robinherit.runs import experiment, schedule
from robinherit.runs.experiment import run_experiment
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore
from robinherit.seeding import generator
from robinherit.training import stacked as batched
from robinherit.training.pretraining import pretrain_supervised
from robinherit.world.sparse_coding import BatchStream, make_world

TINY = {
    "data.d": 8,
    "model.width": 16,
    "pretrain.steps": 25,
    "pretrain.batch_size": 32,
    "downstream.steps": 10,
    "downstream.n_train": 64,
    "downstream.attack_steps": 2,
    "eval.n_test": 64,
    "eval.steps": 3,
    "eval.restarts": 1,
    "eval.eps_grid": [0, 0.25],
}


def tiny(**updates) -> ExperimentConfig:
    return with_updates(ExperimentConfig(), **{**TINY, **updates})


def assert_close_tree(a, b, tol=1e-4, path="record"):
    """Numbers equal to ``tol`` (absolute), everything else exactly equal, recursively."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close_tree(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_tree(x, y, tol, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=tol, nan_ok=True), path
    else:
        assert a == b, path


def _models_and_losses(size: int, n: int = 24):
    cfg = tiny()
    models = [build_model(8, cfg.model, 1, generator(s, "init")) for s in range(size)]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(size, n, 8, generator=g)
    y = torch.randint(0, 2, (size, n, 1), generator=g).float()
    net = batched.StackedTwoLayer(models)
    return models, net, x, y


@pytest.mark.parametrize("norm", list(Norm))
def test_stacked_attacks_equal_one_attack_per_model(norm):
    models, net, x, y = _models_and_losses(3)
    eps = [0.2, 0.3, 0.5]
    for stacked, single in ((pgd, pgd), (fgm, fgm)):  # one attack, a stack's budgets or one model's
        gens = [torch.Generator().manual_seed(s) for s in range(3)]
        out = stacked(stack_attack_loss(net, multilabel_bce, y), x, eps=eps, norm=norm, steps=4, generator=gens)
        for s, m in enumerate(models):
            ref = single(
                fused_loss(m, multilabel_bce, y[s]),
                x[s],
                eps=eps[s],
                norm=norm,
                steps=4,
                generator=torch.Generator().manual_seed(s),
            )
            torch.testing.assert_close(out[s], ref, rtol=1e-5, atol=1e-5)
            assert not torch.equal(out[s], x[s])


@pytest.mark.parametrize("norm", list(Norm))
def test_stacked_random_start_is_each_models_own_to_the_bit(norm):
    x = torch.zeros(4, 50, 7)
    eps = [0.1, 0.25, 0.3, 1.7]
    out = random_start(x, eps, norm, [torch.Generator().manual_seed(s) for s in range(4)])
    for s, e in enumerate(eps):
        ref = random_start(x[s], e, norm, torch.Generator().manual_seed(s))
        assert torch.equal(out[s], ref)
        assert float(ref.abs().amax()) > 0  # a real draw, inside the ball
        assert float(ref.norm(dim=-1).amax() if norm == Norm.l2 else ref.abs().amax()) <= e


@pytest.mark.parametrize("norm", list(Norm))
def test_pgd_keeps_the_same_point_with_or_without_its_iterates(norm, monkeypatch):
    # pgd_from keeps every iterate for one gather at the end, or, where they would take too much memory, compares
    # and copies per iterate: the same points to the bit, the earliest of tied maxima, never a NaN-valued one
    _, net, x, y = _models_and_losses(3, n=40)
    loss = stack_attack_loss(net, multilabel_bce, y)
    eps, alpha = attacks.budgets([0.2, 0.3, 0.5], 4, x)
    start = random_start(x, [0.2, 0.3, 0.5], norm, [torch.Generator().manual_seed(s) for s in range(3)])
    kept = attacks.pgd_from(loss, x, start, eps, alpha, norm, 4)
    monkeypatch.setattr(attacks, "KEEP_ITERATES_BYTES", 0)
    running = attacks.pgd_from(loss, x, start, eps, alpha, norm, 4)
    assert torch.equal(kept, running)
    assert not torch.equal(kept, x + start)  # the attack moved the points

    points = torch.arange(4.0)[:, None, None, None].expand(4, 1, 3, 2)
    values = torch.tensor(
        [[[1.0, float("nan"), 0.0]], [[2.0, 5.0, 0.0]], [[2.0, 1.0, 0.0]], [[0.0, float("nan"), 0.0]]]
    )
    best = attacks.best_point(points, list(values))
    assert best[0, :, 0].tolist() == [1.0, 1.0, 0.0]  # the first of the tied 2.0s; NaN passed over; all tied: first


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"pretrain.norm": "linf", "pretrain.eps": 0.05},
        {"pretrain.attack": "fgm"},
        {"pretrain.eps": 0.0},
        {"model.learn_threshold": True, "model.normalize_rows": False},
        {"pretrain.optimizer": "sgd", "model.activation": "relu", "model.learn_threshold": True, "data.n_train": 100},
    ],
    ids=["l2-pgd", "linf-pgd", "fgm", "clean", "learned-b-unnormalised", "sgd-relu-learned-b-fixed-set"],
)
def test_stacked_pretraining_equals_separate_runs(variant):
    cfgs = [tiny(seed=s, **variant) for s in range(3)]
    if cfgs[0].pretrain.eps > 0:  # per-model budgets inside one stack
        cfgs[2] = with_updates(cfgs[2], **{"pretrain.eps": 2 * cfgs[2].pretrain.eps})
    assert len(schedule.group_configs(cfgs)) == 1

    def parts(c):
        world = make_world(c.data, c.seed)
        stream = BatchStream(world, c.pretrain.batch_size, c.seed, c.data.n_train)
        return stream, build_model(c.data.d, c.model, c.data.n_tasks, generator(c.seed, "init"))

    streams, models = zip(*(parts(c) for c in cfgs), strict=True)
    net = batched.StackedTwoLayer(models)
    logs = batched.pretrain_stacked(net, streams, cfgs)
    net.unstack(models)
    for c, m, log in zip(cfgs, models, logs, strict=True):
        stream, ref = parts(c)
        ref_log = pretrain_supervised(ref, stream, c, fast=False)  # the generic loop, not a stack of one
        for p, q in zip(m.parameters(), ref.parameters(), strict=True):
            # float rounding only (a batched matmul sums in another order; BLAS kernels differ between machines)
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(log.losses, ref_log.losses, rtol=1e-5)
    # the models really differ (each its own seed) and really trained
    assert not torch.allclose(models[0].W, models[1].W)
    assert not torch.allclose(models[0].W, build_model(8, cfgs[0].model, 1, generator(0, "init")).W)


@pytest.mark.parametrize("activation", ["sym_relu", "relu"])
def test_a_shared_float_threshold_trains_the_same_bits(activation, monkeypatch):
    # a fixed threshold shared by every unit goes into the step as one float (one-pass unit kernels); the
    # per-unit tensor form must train the same weights to the bit
    cfgs = [tiny(seed=s, **{"model.activation": activation}) for s in range(2)]

    def train():
        streams = [BatchStream(make_world(c.data, c.seed), c.pretrain.batch_size, c.seed) for c in cfgs]
        net = batched.StackedTwoLayer([build_model(8, c.model, 1, generator(c.seed, "init")) for c in cfgs])
        batched.pretrain_stacked(net, streams, cfgs)
        return net

    net = train()
    assert net.fixed_threshold() == pytest.approx(cfgs[0].model.threshold)
    learned = batched.StackedTwoLayer([build_model(8, tiny(**{"model.learn_threshold": True}).model, 1)])
    assert learned.fixed_threshold() is None  # a learned threshold changes every step
    monkeypatch.setattr(batched.StackedTwoLayer, "fixed_threshold", lambda self: None)
    ref = train()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


def test_batched_experiments_equal_run_experiment():
    cfgs = [tiny(seed=0), tiny(seed=1, **{"pretrain.eps": 0.5})]
    out = list(experiment.iter_stack(cfgs))
    for c, (rec, art) in zip(cfgs, out, strict=True):
        ref, ref_art = run_experiment(c)
        for key in ("run_id", "seed", "config", "git_commit"):
            assert rec[key] == ref[key]
        assert_close_tree(rec["purification"], ref["purification"])
        assert_close_tree(rec["downstream"], ref["downstream"])
        assert_close_tree(rec["pretrain"], ref["pretrain"])
        np.testing.assert_allclose(art["encoder"]["W"], ref_art["encoder"]["W"], rtol=1e-4, atol=1e-5)
        assert rec.keys() == ref.keys() and rec["timing_s"].keys() == ref["timing_s"].keys()


def test_group_configs_batches_only_what_shares_shapes():
    a = [tiny(seed=s) for s in range(5)]
    cfgs = [
        *a[:3],
        tiny(seed=0, **{"model.width": 12}),  # another shape
        tiny(seed=0, **{"pretrain.eps": 0.0}),  # clean: a stack of its own
        tiny(seed=1, **{"pretrain.eps": 0.0}),
        tiny(seed=0, **{"pretrain.method": "contrastive", "pretrain.temperature": 0.01}),  # no batched path: alone
        a[3],
        tiny(seed=9, **{"pretrain.eps": 0.4}),  # another budget: same stack, eps is per model
        a[4],
    ]
    groups = schedule.group_configs(cfgs, max_size=4)
    assert sorted(i for g in groups for i in g) == list(range(len(cfgs)))
    assert [0, 1, 2, 7] in groups and [8, 9] in groups  # max_size splits a stack, order kept
    assert [3] in groups and [4, 5] in groups and [6] in groups
    assert batched.batch_key(cfgs[6]) is None


def test_run_many_or_load_batches_stores_each_run_and_keeps_order(tmp_path, monkeypatch):
    calls = []
    real = experiment.pretrain_stack

    def spy(stack, progress=None):
        calls.append([c.seed for c in stack])
        return real(stack, progress)

    monkeypatch.setattr(experiment, "pretrain_stack", spy)
    store = ResultStore(tmp_path / "runs.db")
    cfgs = [tiny(seed=0), tiny(seed=1, **{"model.width": 12}), tiny(seed=2), tiny(seed=0)]  # last: a repeat
    seen = []
    recs = run_many_or_load(cfgs, store, on_record=lambda r, cached: seen.append((r["run_id"], cached)))
    assert calls == [[0, 2]]  # the two runs that share shapes went as one stack; the odd one alone
    assert [r["run_id"] for r in recs] == [c.config_hash() for c in cfgs]
    ids = [c.config_hash() for c in cfgs]
    assert seen == [(ids[0], False), (ids[1], False), (ids[2], False), (ids[3], True)]
    for c in cfgs:
        assert store.get(c.config_hash()) is not None
    # a second call answers everything from the store and computes nothing
    again = run_many_or_load(cfgs, store)
    assert calls == [[0, 2]]
    assert [r["run_id"] for r in again] == [r["run_id"] for r in recs]


def test_sweep_group_keeps_finished_runs_when_one_fails(monkeypatch):
    import torch as _torch

    from robinherit.runs import experiment, sweep

    threads = _torch.get_num_threads()
    cfgs = [tiny(seed=s) for s in range(3)]
    calls: list[int] = []
    real_finish = experiment.finish_experiment

    def finish(cfg, *args, **kwargs):
        calls.append(cfg.seed)
        if cfg.seed == 1:
            raise RuntimeError("boom")
        return real_finish(cfg, *args, **kwargs)

    monkeypatch.setattr(experiment, "finish_experiment", finish)
    try:
        out = sweep.execute([c.model_dump(mode="json") for c in cfgs])
    finally:
        _torch.set_num_threads(threads)  # execute pins one thread, as in a worker
    assert [rec is not None for rec, _ in out] == [True, False, True]
    assert "boom" in out[1][1]
    assert [res[0]["run_id"] for res, _ in (out[0], out[2])] == [cfgs[0].config_hash(), cfgs[2].config_hash()]
    # an error after the stack's pre-training belongs to that run alone: seed 1 is not retried (a retry would
    # compute it on another path), seeds 0 and 2 finish from the same stack
    assert calls == [0, 1, 2]


def _train_stack(cfgs):
    streams = [BatchStream(make_world(c.data, c.seed), c.pretrain.batch_size, c.seed) for c in cfgs]
    models = [build_model(c.data.d, c.model, c.data.n_tasks, generator(c.seed, "init")) for c in cfgs]
    net = batched.StackedTwoLayer(models)
    logs = batched.pretrain_stacked(net, streams, cfgs)
    return net.W.detach().clone(), [log.losses for log in logs]


def compiled_against_eager() -> str:
    """Trains a stack eagerly, then with ROBINHERIT_COMPILE=1, in this process; the two must agree. Returns
    "compiled" when torch.compile built the adversarial step, "fell back" when it failed (the warning said so and
    the same step ran eagerly, to the same weights)."""
    cfgs = [tiny(seed=s, **{"model.learn_threshold": True}) for s in range(2)]
    eager_w, eager_losses = _train_stack(cfgs)
    built, real_compile = [], torch.compile
    with (
        mock.patch.dict(os.environ, {"ROBINHERIT_COMPILE": "1"}),
        mock.patch.object(torch, "compile", lambda fn, **kw: built.append(fn.__name__) or real_compile(fn, **kw)),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        fast_w, fast_losses = _train_stack(cfgs)
    torch.testing.assert_close(fast_w, eager_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast_losses, eager_losses, rtol=1e-5)
    assert built == ["adversarial_grads"]
    return "fell back" if any("torch.compile failed" in str(w.message) for w in caught) else "compiled"


def broken_compiler_against_eager() -> str:
    """A compiler whose compiled step raises: the run warns, finishes eagerly with the eager weights, and later
    runs of the process stay eager without asking the compiler again."""
    cfgs = [tiny(seed=s) for s in range(2)]
    eager_w, _ = _train_stack(cfgs)

    def broken(*_a, **_k):
        raise RuntimeError("no C++ compiler")

    with (
        mock.patch.dict(os.environ, {"ROBINHERIT_COMPILE": "1"}),
        mock.patch.object(torch, "compile", lambda fn, **kw: broken),
    ):
        with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler.*running eagerly"):
            w, _ = _train_stack(cfgs)
        torch.testing.assert_close(w, eager_w, rtol=1e-6, atol=1e-7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a second failure would warn again
            again, _ = _train_stack(cfgs)
    torch.testing.assert_close(again, eager_w, rtol=1e-6, atol=1e-7)
    return "eager"


def in_fresh_process(name: str) -> str:
    """This module's function ``name`` run in a new interpreter; what it returns. The compiled step is built once
    per process, and a failed compile turns compiling off for the rest of it, so a test of compiling needs a
    process where nothing has compiled yet."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_batched; "
    code += f"print(test_batched.{name}())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def test_compiled_step_equals_the_eager_step():
    outcome = in_fresh_process("compiled_against_eager")
    if outcome == "fell back":
        pytest.skip("torch.compile is not usable on this machine; the eager fallback was checked instead")
    assert outcome == "compiled"


def test_a_failing_compiler_falls_back_to_the_eager_step():
    assert in_fresh_process("broken_compiler_against_eager") == "eager"
