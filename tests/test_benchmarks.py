"""The benchmark scripts run, and their rows mean what their names say (numbers are not asserted: timings
belong to benchmarks/, never to tests)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds benchmarks/

from benchmarks import ab_commits, derived_parts, profile_step, realdata_step, step_stages, train_step

from robinherit.config import ExperimentConfig, with_updates
from robinherit.runs.experiment import build_encoder
from robinherit.training import stacked as batched

SMALL = {"data.d": 8, "model.width": 16, "pretrain.batch_size": 16, "pretrain.attack_steps": 2}


def test_train_step_rows_cover_every_path():
    cfg = with_updates(ExperimentConfig(), **SMALL)
    rows = train_step.bench_config("small", cfg, (1, 2), repeats=1, target_s=0.01)
    paths = [(r["path"], r["S"]) for r in rows]
    assert paths == [
        ("reference", 1),
        ("single", 1),
        ("generic", 1),
        ("batched", 1),
        ("batched", 2),
        ("data only", 2),
        ("matmuls only", 2),
        ("ceiling", 2),
    ]
    assert rows[0]["ratio"] == pytest.approx(1.0)
    for r in rows:
        assert r["samples_per_s"] > 0 and r["ratio"] == pytest.approx(r["samples_per_s"] / rows[0]["samples_per_s"])
    data, products, ceiling = rows[-3:]
    # only training paths compete for the large config's GFLOP/s; the bounds are not trained models
    assert [train_step.trains(r) for r in rows] == [True] * 5 + [False] * 3
    assert data["gflops"] == 0.0  # drawing data is not training: no FLOPs are credited to it
    # the two parts run one after the other: the bound is below either part alone, and their harmonic sum
    assert ceiling["samples_per_s"] < min(data["samples_per_s"], products["samples_per_s"])
    assert 1 / ceiling["samples_per_s"] == pytest.approx(1 / data["samples_per_s"] + 1 / products["samples_per_s"])
    # FLOPs per sample count the PGD steps: 2 passes each, plus the final loss and the training step's 2
    d, m, k = 8, 16, cfg.data.n_tasks
    assert train_step.flops_per_sample(cfg) == (2 * d * m + 2 * m * k) * (2 * 2 + 1 + 2)


def test_matmuls_only_performs_the_steps_products(monkeypatch):
    """The arithmetic row runs the stacked step's 13 products per step (PGD-5): 2 per attack step through W, the
    best point's and the training step's forwards, and the weight gradient."""
    cfg = with_updates(ExperimentConfig(), **{**SMALL, "pretrain.attack_steps": 5})
    calls = []
    real_matmul = torch.Tensor.__matmul__

    def counting(a, b):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return real_matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", counting)
    train_step.run_matmuls_only(cfg, steps=2, size=3)
    d, m, n = 8, 16, 16
    through_w = [c for c in calls if c in (((3, n, d), (3, d, m)), ((3, n, m), (3, m, d)), ((3, m, n), (3, n, d)))]
    assert len(through_w) == 2 * (2 * 5 + 1 + 2)


def test_step_stages_times_every_stage_once_per_step_and_restores_the_functions():
    cfg = with_updates(ExperimentConfig(), **SMALL)
    originals = {name: getattr(batched, name) for name in step_stages.STAGES.values()}
    with step_stages.timed_stages() as seconds:
        train_step.run_batched(cfg, 5, 2)
    assert {stage: len(s) for stage, s in seconds.items()} == {stage: 5 for stage in step_stages.STAGES}
    assert {name: getattr(batched, name) for name in originals} == originals
    total, per_stage = step_stages.stages(cfg, 2, steps=3)
    assert list(per_stage) == list(step_stages.STAGES)
    assert all(ms > 0 for ms in per_stage.values()) and sum(per_stage.values()) < total


def test_ab_commits_times_both_sides_and_tells_same_bits_from_different(tmp_path):
    """Two trees with the same code train the same bits; a tree whose seeds are shifted does not, and its report
    says so. Each side runs in its own process on its own code."""
    here = str(ab_commits.ROOT)
    report = ab_commits.compare(here, here, "small", size=2, steps=2, rounds=2)
    assert len(report["ms_per_step"]["A"]) == len(report["ms_per_step"]["B"]) == 2
    assert report["same_bits"] is True
    assert report["ratio_min"] <= report["ratio_median"] <= report["ratio_max"]
    other = tmp_path / "other"
    shutil.copytree(ab_commits.ROOT / "src", other / "src")
    shutil.copytree(ab_commits.ROOT / "benchmarks", other / "benchmarks")
    with (other / "src" / "robinherit" / "seeding.py").open("a") as f:  # every named stream one seed later
        f.write("\n_derive = derive_seed\n\n\ndef derive_seed(seed, name):\n    return _derive(seed + 1, name)\n")
    assert ab_commits.compare(here, str(other), "small", size=2, steps=2, rounds=1)["same_bits"] is False


def test_ab_commits_exports_a_commit_and_names_a_bad_one(tmp_path):
    if not (ab_commits.ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tree = ab_commits.export("HEAD", tmp_path)
    assert (tree / "src" / "robinherit" / "__init__.py").is_file() and (tree / "benchmarks" / "train_step.py").is_file()
    with pytest.raises(SystemExit, match="git archive no-such-commit failed"):
        ab_commits.export("no-such-commit", tmp_path)


def test_profile_step_accounts_per_step_and_per_call():
    cfg = with_updates(ExperimentConfig(), **SMALL)
    rows = profile_step.profile_path(lambda n: train_step.run_single(cfg, n), steps=4)
    names = [r[0] for r in rows]
    assert any(n in ("aten::bmm", "aten::mm") for n in names), "the step's matrix products must be seen"
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    for _, per_step, calls, per_call in rows:
        assert per_call == pytest.approx(per_step / calls)


def test_contrastive_step_times_every_path():
    from benchmarks import contrastive_step

    cfg = with_updates(
        ExperimentConfig(),
        **{
            **SMALL,
            "pretrain.method": "contrastive",
            "pretrain.eps": 0.25,
            "pretrain.steps": 2,
            "pretrain.augmentation": "noise",
            "pretrain.aug_strength": 0.05,
        },
    )
    best = contrastive_step.seconds_per_step(cfg, repeats=1, sizes=(2,))
    assert set(best) == {"autograd", "closed_form_attack", "closed_form_step", "stacked_2"}
    assert all(0 < v < float("inf") for v in best.values())


def test_realdata_step_reports_four_rows_and_two_ratios(capsys):
    sizes = ["--steps", "1", "--two-layer-steps", "2", "--repeats", "2", "--batch-size", "8", "--n-train", "64"]
    realdata_step.main(["--json", *sizes])
    out = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["path"], r["steps_per_round"]) for r in out["rows"]] == [
        ("two_layer", "reference", 2),
        ("two_layer", "toolkit", 2),
        ("cnn", "reference", 1),
        ("cnn", "toolkit", 1),
    ]
    for family in ("two_layer", "cnn"):
        for key in (f"reference_{family}_samples_per_s", f"toolkit_{family}_samples_per_s"):
            assert math.isfinite(out[key]) and out[key] > 0
        for key in (f"ratio_{family}", f"ratio_{family}_cpu", f"ratio_{family}_median_of_rounds"):
            assert math.isfinite(out[key]) and out[key] > 0
        ratio = out[f"toolkit_{family}_samples_per_s"] / out[f"reference_{family}_samples_per_s"]
        assert out[f"ratio_{family}"] == pytest.approx(ratio)
        assert len(out[f"ratio_{family}_rounds"]) == 2
    for r in out["rows"]:  # the best round is the one reported
        assert r["seconds_per_step"] == min(r["rounds_seconds_per_step"])
    assert out["batch_size"] == 8 and out["input_shape"] == [1, 28, 28] and out["steps"] == {"two_layer": 2, "cnn": 1}


def _weights(model, skip=("b", "center")) -> list:
    """A model's trained tensors in registration order (the toolkit's and the reference's orders match)."""
    return [v for k, v in model.state_dict().items() if k not in skip]


def test_realdata_two_layer_toolkit_step_is_the_reference_step(monkeypatch):
    """The toolkit's two-layer real-data path (a stack of one: closed-form PGD and weight gradients, fused Adam) and
    the autograd reference, from the same init, on the same batches and from the same PGD random starts (both drawn
    from the seed's pretrain-attack stream), give the same weights after one and after three steps.

    Not bit for bit: the closed-form gradients round differently, and Adam's first steps are lr * g / (|g| + 1e-8),
    which turns rounding of gradients near 1e-8 into visible differences; those are a handful of entries (14 of
    100,352 in W measured, at most 5e-6 = 0.5% of a step). The attack matters at this tolerance: a clean step moves
    W by up to 2 lr away from the adversarial one."""
    from robinherit.training import stacked as batched

    calls = []
    fused = batched.adversarial_grads
    monkeypatch.setattr(batched, "adversarial_grads", lambda *a, **k: calls.append(1) or fused(*a, **k))
    ds = realdata_step.random_images(512)
    cfg = realdata_step.config("two_layer")
    source = realdata_step.source_for(cfg, ds)
    init = realdata_step.reference_model(cfg, source)
    for a, b in zip(_weights(build_encoder(cfg, source)), _weights(init), strict=True):
        assert torch.equal(a, b)  # both draw their init from the seed's "init" stream
    clean_cfg = with_updates(cfg, **{"pretrain.eps": 0.0})
    for steps in (1, 3):
        toolkit = realdata_step.run_toolkit(cfg, source, steps)
        assert len(calls) == steps  # the closed-form stacked step ran, once per step
        calls.clear()
        ref = realdata_step.run_reference(cfg, source, steps)
        clean = realdata_step.run_reference(clean_cfg, source, steps)
        lr = cfg.pretrain.lr
        for t, r in zip(_weights(toolkit), _weights(ref), strict=True):
            diff = (t - r).abs()
            assert float(diff.max()) < 0.02 * lr
            assert float((diff > 1e-7).float().mean()) < 1e-3
        assert float((_weights(toolkit)[0] - _weights(clean)[0]).abs().max()) > lr


def test_realdata_cnn_toolkit_step_is_the_reference_step():
    """The toolkit's CNN path (the generic loop: autograd PGD and training step) and the reference CNN, from the same
    init, batches and random starts: the same weights after two steps (measured bit for bit; asserted to 1e-7)."""
    ds = realdata_step.random_images(128)
    cfg = realdata_step.config("cnn", **{"pretrain.batch_size": 16})
    source = realdata_step.source_for(cfg, ds)
    toolkit = realdata_step.run_toolkit(cfg, source, 2)
    ref = realdata_step.run_reference(cfg, source, 2)
    clean = realdata_step.run_reference(with_updates(cfg, **{"pretrain.eps": 0.0}), source, 2)
    names = [k for k in toolkit.state_dict() if k not in ("b", "center")]
    assert names == [k for k in ref.state_dict() if k not in ("b", "center")]
    for t, r in zip(_weights(toolkit), _weights(ref), strict=True):
        torch.testing.assert_close(t, r, rtol=0, atol=1e-7)
    assert float((_weights(toolkit)[-2] - _weights(clean)[-2]).abs().max()) > cfg.pretrain.lr


def test_train_step_takes_the_stack_sizes_and_refuses_a_missing_gpu(capsys, monkeypatch):
    import json

    monkeypatch.setattr(train_step, "DEFAULT", {**train_step.DEFAULT, **SMALL})
    monkeypatch.setattr(train_step, "matmul_peak", lambda seconds=1.0, device="cpu": (1.0, 1.0))
    train_step.main(["--json", "--skip-large", "--sizes", "2,1", "--repeats", "1", "--seconds", "0.01"])
    out = json.loads(capsys.readouterr().out)
    assert out["ceiling_S"] == 2 and list(out["batched_samples_per_s"]) == ["2"] and out["device"] == "cpu"
    assert sorted({r["S"] for r in out["rows"] if r["path"] == "batched"}) == [1, 2]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        train_step.main(["--device", "cuda"])


def test_compile_cost_separates_the_fixed_cost_from_the_per_step_cost(monkeypatch, capsys):
    from benchmarks import compile_cost

    assert compile_cost.fit([1000, 3000], [12.0, 28.0]) == pytest.approx((4.0, 0.008))
    # fake processes: eager 2 s + 8 ms/step, compiled 10 s + 4 ms/step warm and 30 s more cold
    calls = []

    def fake(steps, compile_, cache, threads):
        calls.append((steps, compile_))
        if not compile_:
            return 2 + 0.008 * steps
        cold = sum(c for _, c in calls) == 1
        return 10 + 0.004 * steps + (30 if cold else 0)

    monkeypatch.setattr(compile_cost, "in_fresh_process", fake)
    compile_cost.main(["--steps", "6000,2000", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == [2000, 6000] and out["breakeven_steps_warm"] == pytest.approx(2000)
    assert out["compiled_cold_s"]["2000"] == pytest.approx(48.0) and out["compiled_fixed_s_warm"] == pytest.approx(8)
    with pytest.raises(SystemExit, match="two lengths"):
        compile_cost.main(["--steps", "2000"])
    assert compile_cost.one_run(3) > 0  # the child's job runs here too


def test_interleaved_rounds_alternate_the_order_and_time_each_paths_own_steps():
    from benchmarks.timing import best, interleaved

    calls: list[tuple[str, int]] = []
    paths = {name: (lambda n, name=name: calls.append((name, n))) for name in ("a", "b", "c")}
    times = interleaved(paths, {"a": 3, "b": 5, "c": 7}, repeats=3, warmup=2)
    assert calls[:3] == [("a", 2), ("b", 2), ("c", 2)]  # the untimed warm-up, every path once
    rounds = [name for name, _ in calls[3:]]
    assert rounds == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]  # every other round reversed
    assert all(n == {"a": 3, "b": 5, "c": 7}[name] for name, n in calls[3:])
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert best([(3.0, 1.0), (2.0, 4.0)]) == (2.0, 1.0)  # wall and CPU minimised apart
    calls.clear()
    faults: dict[str, list[float]] = {}
    # a path that takes 64 MB fresh each step (above glibc's largest mmap threshold, so new pages every time), and
    # one that allocates nothing
    fresh = {"alloc": lambda n: [torch.ones(16_000_000) for _ in range(n)], "none": lambda n: None}
    interleaved(fresh, {"alloc": 2, "none": 2}, repeats=2, warmup=0, faults=faults)
    assert {k: len(v) for k, v in faults.items()} == {"alloc": 2, "none": 2}
    assert min(faults["alloc"]) > 1000 > max(faults["none"])  # 64 MB is about 16,000 pages of 4 kB
    interleaved(paths, {"a": 1, "b": 1, "c": 1}, repeats=1, warmup=0)
    assert calls == [("a", 1), ("b", 1), ("c", 1)]  # no warm-up asked for: none run (and no 0-step run)


def test_profile_step_head_path_runs_the_steps_it_is_asked_for(monkeypatch):
    """``run_head(cfg, n)`` is n optimiser steps of an adversarial head (what 'per step' divides by)."""
    steps = []
    real = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), real(self, *a, **k))[1])
    cfg = with_updates(ExperimentConfig(), **SMALL, **{"downstream.n_train": 300})
    profile_step.run_head(cfg, 5)
    assert len(steps) == 5
    assert "head" in profile_step.paths(cfg)


def test_derived_parts_times_each_part_against_the_form_it_replaced(capsys):
    sizes = ["--n-test", "60", "--n-train", "200", "--pretrain-steps", "5", "--repeats", "1", "--workers", "1"]
    derived_parts.main(["--json", *sizes])
    out = json.loads(capsys.readouterr().out)
    assert set(out["relaxation"]["seconds"]) == {"broadcast (before)", "loop (now)"}
    assert len(out["evaluation"]["seconds"]) == 3 and set(out["heads"]) == {"adversarial", "clean"}
    # every faster form gives its reference's results (the certifier to the bit, the stacked heads to rounding)
    assert out["relaxation"]["equal"] and out["evaluation"]["equal"]
    assert all(h["equal"] and h["max_weight_difference"] < 1e-4 for h in out["heads"].values())
    assert all(s > 0 for sec in (out["relaxation"], out["evaluation"], out["pools"]) for s in sec["seconds"].values())
    # one worker: a pool per stage starts two processes over the two stages, shared pools one
    assert out["pools"]["processes"] == {"a pool per stage (before)": 2, "shared pools (now)": 1}


def test_step_bounds_paths_compute_the_steps_product_and_each_generators_own_draws():
    from benchmarks import step_bounds

    S, n, d, m = 3, 8, 4, 5
    products = {name: fn() for name, fn in step_bounds.product_paths(S, n, d, m).items()}
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(S, n, d, generator=g), torch.randn(S, m, d, generator=g)
    for name in ("bmm, W^T a view", "bmm, W^T contiguous", "bmm, out="):
        assert torch.allclose(products[name], x @ w.transpose(1, 2), atol=1e-5), name
    assert products["one flat mm"].shape == (S * n, m)  # the same FLOPs as one product
    exact = x.double() @ w.double().transpose(1, 2)
    for name in ("bmm in bfloat16", "bmm in bfloat16, casts in and out"):  # the same product, to bf16's 8 bits
        err = (products[name].double() - exact).norm() / exact.norm()
        assert 1e-5 < err < 2e-2, (name, err)  # rounded (not float32 in disguise), and not a different product
    assert products["bmm in bfloat16"].dtype == torch.bfloat16
    assert products["bmm in bfloat16, casts in and out"].dtype == torch.float32
    draws = step_bounds.draw_paths(S, n, d)
    normal = draws["torch normal_"]().clone()
    for s in range(S):  # each slice holds its own generator's stream, as a fresh draw from that seed would
        assert torch.equal(normal[s], torch.randn(n, d, generator=torch.Generator().manual_seed(s)))
    sfc = draws["numpy SFC64 standard_normal"]()  # numpy writes into the torch buffer itself, not into a copy
    expect = np.random.Generator(np.random.SFC64(1)).standard_normal((n, d), dtype=np.float32)
    assert np.array_equal(sfc[1].numpy(), expect)


def test_step_bounds_pointwise_work_is_one_pgd_step_of_the_library_between_its_products():
    from benchmarks import step_bounds

    from robinherit.ops.closed_form import TwoLayerLoss
    from robinherit.ops.losses import multilabel_bce

    S, n, d, m = 3, 16, 4, 6
    g = torch.Generator().manual_seed(2)
    w, x = torch.randn(S, m, d, generator=g), torch.randn(S, n, d, generator=g)
    delta, v = 0.1 * torch.randn(S, n, d, generator=g), torch.randn(S, 1, m, generator=g)
    c, targets = torch.randn(S, 1, 1, generator=g), (torch.rand(S, n, 1, generator=g) > 0.5).float()
    alpha, radius = torch.tensor([0.05, 0.1, 0.2])[:, None, None], torch.tensor([0.1, 0.2, 0.4])[:, None, None]
    x_adv = x + delta
    value, g_x = TwoLayerLoss(w, 0.3, v, c, "sym_relu", multilabel_bce, targets).value_and_grad(x_adv)
    u = x_adv @ w.transpose(1, 2)
    for fn in (step_bounds.eager_pgd_pointwise, step_bounds.pgd_pointwise):  # the timed path and what compiles
        out_value, g_u, step, point = fn(u.clone(), g_x, x, delta, v, c, targets, alpha, radius, 0.3)
        assert torch.allclose(out_value, value, atol=1e-6), fn.__name__
        assert torch.allclose(g_u @ w, g_x, atol=1e-6), fn.__name__  # the input gradient, once multiplied by W
        ascent = delta + alpha * g_x / g_x.norm(dim=-1, keepdim=True)
        expect = ascent * torch.clamp(radius / ascent.norm(dim=-1, keepdim=True), max=1.0)
        assert torch.allclose(step, expect, atol=1e-6) and torch.allclose(point, x + expect, atol=1e-6), fn.__name__
    assert (step.norm(dim=-1) <= radius[..., 0] * (1 + 1e-5)).all() and (
        step.norm(dim=-1) > 0.99 * radius[..., 0]
    ).any()
    assert set(step_bounds.pointwise_paths(S, n, d, m, compiled=False)) == {"eager"}


def test_step_bounds_gives_each_products_error_against_float64():
    from benchmarks import step_bounds

    S, n, d, m = 2, 16, 8, 12
    errors = step_bounds.product_errors(step_bounds.product_paths(S, n, d, m), S, n, d, m)
    assert "one flat mm" not in errors  # other operands: no error to give
    assert all(errors[k] < 1e-6 for k in ("bmm, W^T a view", "bmm, W^T contiguous", "bmm, out="))
    assert all(1e-4 < errors[k] < 2e-2 for k in ("bmm in bfloat16", "bmm in bfloat16, casts in and out"))


def test_step_bounds_fit_splits_a_run_into_set_up_and_cost_per_step(monkeypatch, capsys):
    from benchmarks import step_bounds

    clock = [0.0]
    lengths = []

    def fake_run(k):  # 5 ms of set-up, then 2 ms per step, on a fake clock
        lengths.append(k)
        clock[0] += 0.005 + 0.002 * k

    monkeypatch.setattr(step_bounds.time, "perf_counter", lambda: clock[0])
    setup, per_step = step_bounds.setup_and_step(fake_run, (1, 31), repeats=2)
    assert (setup, per_step) == (pytest.approx(5.0), pytest.approx(2.0))
    assert lengths == [2, 1, 1, 31, 31]  # a warm-up run, then each length repeated
    with pytest.raises(SystemExit, match="two different run lengths"):
        step_bounds.main(["--lengths", "5"])


def test_step_bounds_reports_every_part(capsys):
    from benchmarks import step_bounds

    step_bounds.main(["--size", "2", "--calls", "1", "--repeats", "1", "--lengths", "1,2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert (
        set(out["product_ms"])
        == set(out["product_gflops"])
        == {
            "bmm, W^T a view",
            "bmm, W^T contiguous",
            "bmm, out=",
            "one flat mm",
            "bmm in bfloat16",
            "bmm in bfloat16, casts in and out",
        }
    )
    assert out["pointwise_ms"] == {}  # only with --pointwise, which compiles
    assert set(out["draw_ms"]) == {
        "torch normal_",
        "torch uniform_",
        "numpy SFC64 standard_normal",
        "numpy PCG64 standard_normal",
    }
    assert out["S"] == 2 and out["ratio_per_step"] == pytest.approx(
        2 * out["reference_ms_per_step"] / out["stack_ms_per_step"]
    )


def test_step_variants_patch_the_step_for_a_run_and_put_it_back(monkeypatch, capsys):
    from benchmarks import step_variants

    # the compiled variant's math, uncompiled: what torch.compile is handed must train the default's weights
    monkeypatch.setattr(step_variants, "_compiled", lambda fn: fn)
    originals = (batched.pgd_from, batched.two_layer_loss_and_grad, batched.first_layer)
    cfg = with_updates(ExperimentConfig(), **train_step.DEFAULT)
    default = step_variants.trained_weights(cfg, 4, 2)
    with step_variants.pointwise_compiled():
        assert batched.pgd_from is not originals[0]
        pointwise = step_variants.trained_weights(cfg, 4, 2)
    with step_variants.bf16_products():
        bf16 = step_variants.trained_weights(cfg, 4, 2)
    assert (batched.pgd_from, batched.two_layer_loss_and_grad, batched.first_layer) == originals
    torch.testing.assert_close(pointwise, default, rtol=1e-4, atol=1e-5)
    # bf16 operands move the weights (Adam's first steps follow the gradients' signs), but it trains the same models
    assert not torch.allclose(bf16, default, atol=1e-4)
    assert (bf16 - default).norm() / default.norm() < 0.2
    with pytest.raises(ValueError, match="default model only"), step_variants.pointwise_compiled():
        step_variants.trained_weights(with_updates(cfg, **{"model.learn_threshold": True}), 1, 1)
    assert batched.pgd_from is originals[0]  # restored after an error too

    step_variants.main(["--size", "2", "--steps", "1", "--rounds", "2", "--check-steps", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert list(out["variants"]) == ["default", "bf16 products", "pointwise compiled"]
    assert out["variants"]["default"]["speedup_median"] == 1.0
    assert out["variants"]["default"]["weights_max_abs_difference"] == 0.0
    assert all(len(v["ms_per_step"]) == 2 for v in out["variants"].values())
    with pytest.raises(SystemExit, match="unknown variant"):
        step_variants.main(["--variants", "default,fp8"])
