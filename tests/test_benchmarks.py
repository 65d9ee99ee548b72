"""The benchmark scripts run, and their rows mean what their names say (numbers are not asserted: timings
belong to benchmarks/, never to tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds benchmarks/

from benchmarks import profile_step, train_step

from robinherit.config import ExperimentConfig, with_updates

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


def test_profile_step_accounts_per_step_and_per_call():
    cfg = with_updates(ExperimentConfig(), **SMALL)
    rows = profile_step.profile_path(lambda n: train_step.run_single(cfg, n), steps=4)
    names = [r[0] for r in rows]
    assert any(n in ("aten::bmm", "aten::mm") for n in names), "the step's matrix products must be seen"
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    for _, per_step, calls, per_call in rows:
        assert per_call == pytest.approx(per_step / calls)


def test_contrastive_step_times_both_paths():
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
    best = contrastive_step.seconds_per_step(cfg, repeats=1)
    assert set(best) == {"closed_form", "autograd"} and all(0 < v < float("inf") for v in best.values())
