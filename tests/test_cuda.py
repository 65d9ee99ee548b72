"""The CUDA path: every stage with ``device=cuda``. Skipped where no GPU is visible (CI has none).

Random streams are drawn per device (``seeding.generator(seed, name, device)``), so a CUDA run is not the
CPU run's twin; these tests check that each stage runs on the GPU, gives sane numbers, and that the fast
paths (closed-form gradients, stacks of models) agree with their references on the GPU too.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from conftest import MICRO, TINY
from robinherit.config import Activation, ExperimentConfig, ModelConfig, build_config, with_updates
from robinherit.models.two_layer import LinearHead, build_model
from robinherit.ops.closed_form import fused_loss
from robinherit.ops.losses import class_margin, cross_entropy, multilabel_bce
from robinherit.runs.experiment import iter_stack, run_experiment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cuda(raw: dict, **updates) -> ExperimentConfig:
    return with_updates(build_config(raw), device="cuda", **updates)


def _finite_numbers(tree) -> bool:
    if isinstance(tree, dict):
        return all(_finite_numbers(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return all(_finite_numbers(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


def test_closed_form_gradients_match_autograd_on_cuda():
    g = torch.Generator().manual_seed(0)
    for activation in Activation:
        model = build_model(12, ModelConfig(width=24, activation=activation, threshold=0.2), 3, g).cuda().freeze()
        x = torch.randn(40, 12, generator=g).cuda()
        y = torch.randint(0, 2, (40, 3), generator=g).float().cuda()
        loss, grad = fused_loss(model, multilabel_bce, y).value_and_grad(x)
        xa = x.clone().requires_grad_(True)
        ref = multilabel_bce(model(xa), y)
        (ref_grad,) = torch.autograd.grad(ref.sum(), xa)
        assert grad.is_cuda
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    head = LinearHead(model, 24, 2).cuda()
    labels = torch.randint(0, 2, (40,), generator=g).cuda()
    for loss_fn in (cross_entropy, class_margin):
        assert fused_loss(head, loss_fn, labels).value_and_grad(x)[1].is_cuda


def test_supervised_run_on_cuda_purifies_and_inherits():
    at, _ = run_experiment(_cuda(TINY))
    clean, _ = run_experiment(_cuda(TINY, **{"pretrain.eps": 0.0}))
    for rec in (at, clean):
        assert rec["config"]["device"] == "cuda" and _finite_numbers(rec)
    # the same margins as the CPU tests of the phenomenon (tests/test_experiment.py)
    assert at["purification"]["top1_share_mean"] > clean["purification"]["top1_share_mean"] + 0.2
    rob = lambda r: r["downstream"]["clean_head"]["robust_acc"]["0.25"]  # noqa: E731
    assert rob(at) > rob(clean) + 0.2


def test_stacked_runs_on_cuda_equal_runs_one_by_one():
    cfgs = [_cuda(MICRO, seed=s) for s in range(3)]
    for (rec, art), c in zip(list(iter_stack(cfgs)), cfgs, strict=True):
        ref, ref_art = run_experiment(c)
        assert rec["run_id"] == ref["run_id"]
        torch.testing.assert_close(
            torch.as_tensor(art["encoder"]["W"]), torch.as_tensor(ref_art["encoder"]["W"]), rtol=1e-4, atol=1e-5
        )


def test_contrastive_run_on_cuda():
    raw = {**MICRO, "pretrain": {**MICRO["pretrain"], "method": "contrastive", "augmentation": "noise"}}
    rec, _ = run_experiment(_cuda(raw))
    assert _finite_numbers(rec) and 0 <= rec["purification"]["top1_share_mean"] <= 1


def test_reproduce_on_cuda(tmp_path: Path):
    from robinherit.reproduce import ReproduceSettings, reproduce
    from robinherit.runs.store import ResultStore
    from test_reproduce import TINY as SMALL_WORLD  # the small world where the claims show, on the CPU

    over = (*SMALL_WORLD, "device=cuda")
    settings = ReproduceSettings(seeds=(0, 1, 2), quick=False, overrides=over, rows=("1", "3", "4", "5", "6"))
    claims = {c["id"]: c for c in reproduce(settings, ResultStore(tmp_path / "r.db")).claims}
    assert claims["1"]["passed"] and claims["3"]["passed"] and claims["5"]["passed"], claims


@pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None, reason="torchattacks not installed")
def test_real_data_on_cuda(tmp_path: Path):
    from test_sources import _cfg, make_mnist_files

    make_mnist_files(tmp_path, n_train=80, n_test=40)
    for encoder in ("two_layer", "conv"):
        cfg = _cfg(tmp_path, **{"model.encoder": encoder, "model.conv.channels": [4, 8], "device": "cuda"})
        rec, _ = run_experiment(cfg)
        assert _finite_numbers(rec) and rec["downstream"]["clean_head"]["robust_acc"]
        assert rec["pretrain"]["robust_acc"]  # the pre-trained model's own robustness, on CUDA too
