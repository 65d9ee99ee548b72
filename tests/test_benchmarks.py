"""The benchmark scripts run, and their rows mean what their names say (numbers are not asserted: timings
belong to benchmarks/, never to tests)."""

from __future__ import annotations

import json
import math
import mmap
import resource
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds benchmarks/

from benchmarks import contrastive_step, realdata_eval, realdata_step, timing, train_step

from robinherit.config import ExperimentConfig, with_updates
from robinherit.runs.experiment import build_encoder
from robinherit.training import step as training_step

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


def test_contrastive_step_times_every_path():
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


REALDATA_SMOKE = ["--steps", "1", "--two-layer-steps", "2", "--repeats", "2", "--batch-size", "8", "--n-train", "64"]


def test_realdata_step_reports_four_rows_and_two_ratios(capsys, monkeypatch):
    monkeypatch.setattr(realdata_step, "matmul_peak", lambda seconds=1.0: (50.0, 60.0))
    sizes = REALDATA_SMOKE
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
    # GFLOP/s of each path from its family's counted step, and their share of the peak measured in the run
    assert out["matmul_peak_gflops"] == 50.0 and out["matmul_peak_gflops_by_cpu_time"] == 60.0
    for r in out["rows"]:
        assert r["gflops"] == pytest.approx(r["samples_per_s"] * out["flops_per_sample"][r["model"]] / 1e9)
        assert r["share_of_peak"] == pytest.approx(r["gflops"] / 50.0)
    for family, row in (("two_layer", out["rows"][1]), ("cnn", out["rows"][3])):
        assert out[f"toolkit_{family}_gflops"] == row["gflops"] > 0
    assert "compile_s" not in out  # the compiled path only with --compile


def test_realdata_step_counts_every_product_of_the_adversarial_step():
    """One step's FLOPs per example: PGD-3's forwards and input gradients, the forward that scores the last iterate,
    and the training step's forward and backward (every weight gradient; input gradients above the first layer)."""
    ds = realdata_step.random_images(32)
    counted = {}
    for family in ("two_layer", "cnn"):
        cfg = realdata_step.config(family, **{"pretrain.batch_size": 8})
        counted[family] = realdata_step.flops_per_sample(cfg, realdata_step.source_for(cfg, ds))
    a = realdata_step.config("cnn").pretrain.attack_steps
    head = 2 * 64 * 10  # the CNN's 64 features -> 10 classes
    layers = [2 * 16 * 9 * 28 * 28, 2 * 32 * 16 * 9 * 14 * 14, 2 * 32 * 14 * 14 * 64, head]  # conv, conv, fc, head
    assert counted["cnn"] == (2 * a + 4) * sum(layers) - layers[0]
    two_layer = [2 * 784 * 128, 2 * 128 * 10]
    assert counted["two_layer"] == (2 * a + 3) * sum(two_layer) + two_layer[1]


def test_realdata_step_times_a_compiled_path_and_survives_a_failed_compile(capsys, monkeypatch):
    """Compiling for real takes tens of seconds; an identity stands in for torch.compile (the path's plumbing is
    what is tested), then a compiler that fails at the first call, as inductor does without a C compiler."""
    monkeypatch.setattr(realdata_step, "matmul_peak", lambda seconds=1.0: (50.0, 50.0))
    wrapped = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: wrapped.append(fn) or fn)
    realdata_step.main(["--json", "--compile", *REALDATA_SMOKE])
    out = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["path"]) for r in out["rows"]][2:] == [
        ("cnn", p) for p in ("reference", "toolkit", "compiled")
    ]
    row = out["rows"][-1]
    assert wrapped and all(fn.__name__ == "forward" for fn in wrapped)  # the reference CNN's forward, wrapped
    assert out["compile_error"] is None and out["compile_s"] == row["compile_s"] >= 0
    assert out["compiled_cnn_samples_per_s"] == row["samples_per_s"] and out["compiled_cnn_gflops"] == row["gflops"]
    assert out["ratio_cnn_compiled"] == pytest.approx(row["samples_per_s"] / out["reference_cnn_samples_per_s"])
    assert len(row["rounds_seconds_per_step"]) == 2  # timed in the rounds like the other paths

    def failing(fn, **kw):
        def run(*args, **kwargs):
            raise RuntimeError("no C compiler found\ncompiler output follows")

        return run

    monkeypatch.setattr(torch, "compile", failing)
    realdata_step.main(["--json", "--compile", *REALDATA_SMOKE])
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][-1] == {"model": "cnn", "path": "compiled", "error": "RuntimeError: no C compiler found"}
    assert out["compile_error"] == "RuntimeError: no C compiler found" and out["compiled_cnn_samples_per_s"] is None
    assert all(r["samples_per_s"] > 0 for r in out["rows"][:4])  # the other paths ran on
    realdata_step.main(["--compile", *REALDATA_SMOKE])
    text = capsys.readouterr().out
    assert "cnn        compiled   could not compile, path skipped: RuntimeError: no C compiler found" in text
    assert "cnn: toolkit / reference" in text and "compiled / reference" not in text


def test_realdata_eval_times_three_pairs_and_checks_the_chunked_evaluation(capsys):
    sizes = ["--n-test", "40", "--eval-batch-size", "15", "--pretrain-steps", "3", "--n-train", "200"]
    realdata_eval.main(["--json", "--repeats", "1", *sizes])
    out = json.loads(capsys.readouterr().out)
    for name in ("cascade", "clean head", "chunked eval"):
        r = out[name]
        assert r["toolkit_s"] > 0 and r["reference_s"] > 0 and len(r["ratio_rounds"]) == 1
        assert r["ratio"] == pytest.approx(r["reference_s"] / r["toolkit_s"])
    c = out["chunked eval"]
    assert c["n_test"] == 40 and c["batch_size"] == 15 and out["n_test"] == 40
    assert set(c["robust_acc"]) == set(c["pgd_robust_acc"]) == {"toolkit", "reference"}
    assert set(c["robust_acc"]["toolkit"]) == set(c["binomial_se"]) == {"0", "0.1"}
    assert c["pgd_equal"] and c["worst_case_within_one_se"]


def test_chunked_evaluation_agrees_with_the_whole_one():
    """At a budget where PGD leaves some examples correct (so AutoAttack's components run on them, a seed per
    chunk), the evaluation in chunks of 25 gives PGD's robust accuracy of the evaluation on all 60 at once."""
    args = realdata_eval.parse(
        ["--n-test", "60", "--eval-batch-size", "25", "--pretrain-steps", "30", "--n-train", "300"]
    )
    s = realdata_eval.setup(args)
    s.cfg = with_updates(s.cfg, **{"eval.eps_grid": [0, 0.005]})
    records: dict = {}
    for run in realdata_eval.chunked_pair(s, records):
        run(1)
    agree = realdata_eval.agreement(records["toolkit"], records["reference"], 60)
    pgd = agree["pgd_robust_acc"]["reference"]
    assert 0 < pgd["0.005"] < pgd["0"]  # not vacuous: some examples broken, some left
    assert agree["pgd_equal"] and agree["worst_case_within_one_se"]


def test_chunked_agreement_flags_what_differs():
    def record(clean, pgd, worst):
        return {
            "clean_acc": clean,
            "pgd_robust_acc": {"0": clean, "0.1": pgd},
            "robust_acc": {"0": clean, "0.1": worst},
        }

    agreement = realdata_eval.agreement
    same = agreement(record(0.8, 0.5, 0.4), record(0.8, 0.5, 0.4), 100)
    assert same["pgd_equal"] and same["worst_case_within_one_se"]
    assert same["binomial_se"]["0.1"] == pytest.approx(math.sqrt(0.4 * 0.6 / 100))
    assert not agreement(record(0.8, 0.51, 0.4), record(0.8, 0.5, 0.4), 100)["pgd_equal"]
    assert not agreement(record(0.81, 0.5, 0.4), record(0.8, 0.5, 0.4), 100)["pgd_equal"]
    # worst cases 0.04 apart on 100 examples: within one standard error (0.049); 0.1 apart: not
    assert agreement(record(0.8, 0.5, 0.42), record(0.8, 0.5, 0.38), 100)["worst_case_within_one_se"]
    assert not agreement(record(0.8, 0.5, 0.45), record(0.8, 0.5, 0.35), 100)["worst_case_within_one_se"]


def trained_weights(model, skip=("b", "center")) -> list:
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
    calls = []
    fused = training_step.adversarial_grads
    monkeypatch.setattr(training_step, "adversarial_grads", lambda *a, **k: calls.append(1) or fused(*a, **k))
    ds = realdata_step.random_images(512)
    cfg = realdata_step.config("two_layer")
    source = realdata_step.source_for(cfg, ds)
    init = realdata_step.reference_model(cfg, source)
    for a, b in zip(trained_weights(build_encoder(cfg, source)), trained_weights(init), strict=True):
        assert torch.equal(a, b)  # both draw their init from the seed's "init" stream
    clean_cfg = with_updates(cfg, **{"pretrain.eps": 0.0})
    for steps in (1, 3):
        toolkit = realdata_step.run_toolkit(cfg, source, steps)
        assert len(calls) == steps  # the closed-form stacked step ran, once per step
        calls.clear()
        ref = realdata_step.run_reference(cfg, source, steps)
        clean = realdata_step.run_reference(clean_cfg, source, steps)
        lr = cfg.pretrain.lr
        for t, r in zip(trained_weights(toolkit), trained_weights(ref), strict=True):
            diff = (t - r).abs()
            assert float(diff.max()) < 0.02 * lr
            assert float((diff > 1e-7).float().mean()) < 1e-3
        assert float((trained_weights(toolkit)[0] - trained_weights(clean)[0]).abs().max()) > lr


def test_realdata_cnn_toolkit_step_is_the_reference_step():
    """The toolkit's CNN path (the generic loop: autograd PGD and training step) and the reference CNN, from the same
    init, batches and random starts: the same weights after two steps up to float rounding (the toolkit's CNN keeps
    its maps channels-last, whose kernels sum in another order: 5e-6 measured)."""
    ds = realdata_step.random_images(128)
    cfg = realdata_step.config("cnn", **{"pretrain.batch_size": 16})
    source = realdata_step.source_for(cfg, ds)
    toolkit = realdata_step.run_toolkit(cfg, source, 2)
    ref = realdata_step.run_reference(cfg, source, 2)
    clean = realdata_step.run_reference(with_updates(cfg, **{"pretrain.eps": 0.0}), source, 2)
    names = [k for k in toolkit.state_dict() if k not in ("b", "center")]
    assert names == [k for k in ref.state_dict() if k not in ("b", "center")]
    for t, r in zip(trained_weights(toolkit), trained_weights(ref), strict=True):
        torch.testing.assert_close(t, r, rtol=0, atol=2e-5)
    assert float((trained_weights(toolkit)[-2] - trained_weights(clean)[-2]).abs().max()) > cfg.pretrain.lr


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


def _touch_fresh(size: int) -> None:
    with mmap.mmap(-1, size) as region:
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            region.madvise(mmap.MADV_NOHUGEPAGE)  # small pages even where huge pages are the kernel's default
        for offset in range(0, size, mmap.PAGESIZE):
            region[offset] = 1


def test_interleaved_rounds_alternate_the_order_and_time_each_paths_own_steps():
    best, interleaved = timing.best, timing.interleaved

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
    # a path that maps 64 MB of fresh pages each step and touches every page from this thread (a tensor would be
    # filled by worker threads, and the malloc settings of other tests could hand it reused memory), and one that
    # allocates nothing
    fresh = {"alloc": lambda n: [_touch_fresh(64 * 2**20) for _ in range(n)], "none": lambda n: None}
    interleaved(fresh, {"alloc": 2, "none": 2}, repeats=2, warmup=0, faults=faults)
    assert {k: len(v) for k, v in faults.items()} == {"alloc": 2, "none": 2}
    if timing.page_faults_counted():
        # 64 MB is about 16,000 pages of 4 kB. The count is the process's and the allocator may hand a round pages
        # it already mapped, so only the rounds together are compared: the allocating path faults, the quiet one
        # hardly
        assert max(faults["alloc"]) > 4000 and sum(faults["none"]) < sum(faults["alloc"]) / 4
    else:  # a kernel that counts no faults (some sandboxes): no count is made up
        assert faults == {"alloc": [None, None], "none": [None, None]}
    interleaved(paths, {"a": 1, "b": 1, "c": 1}, repeats=1, warmup=0)
    assert calls == [("a", 1), ("b", 1), ("c", 1)]  # no warm-up asked for: none run (and no 0-step run)


def test_a_kernel_that_counts_no_page_faults_gets_none_not_zero(monkeypatch):
    """Some sandboxes report zero minor faults for every process: the probe says so and every round's count is
    None, so a benchmark never prints a measured-looking zero."""
    real = resource.getrusage

    class Frozen:
        def __init__(self, usage):
            self._usage = usage

        def __getattr__(self, name):
            return 0 if name == "ru_minflt" else getattr(self._usage, name)

    timing.page_faults_counted.cache_clear()
    monkeypatch.setattr(resource, "getrusage", lambda who: Frozen(real(who)))
    try:
        assert not timing.page_faults_counted()
        faults: dict[str, list[float]] = {}
        timing.interleaved({"a": lambda n: torch.ones(1000)}, {"a": 1}, repeats=2, warmup=0, faults=faults)
        assert faults == {"a": [None, None]}
        assert train_step._fewest([None, None]) is None and train_step._fewest([3.0, 2.0]) == 2.0
    finally:
        timing.page_faults_counted.cache_clear()
