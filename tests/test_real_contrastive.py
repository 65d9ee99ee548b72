"""Row 7c: claim 7's real-data comparison after label-free contrastive pre-training, on tiny Fashion-MNIST-format
files (8x8 images whose brightness encodes the class), with the representation's robustness in its details."""

from __future__ import annotations

import json
import math

import pytest

from robinherit.data import datasets
from robinherit.reproduce import CLAIMS, ReproduceSettings, reproduce, write_claims
from robinherit.reproduce.claims import c7_real_data
from robinherit.reproduce.report import write_report
from robinherit.runs.store import ResultStore
from test_datasets import make_mnist_files

# Quick mode on the tiny files: a few steps of everything (the files hold 60 training and 30 test images).
TINY_QUICK = (
    "pretrain.steps=20",
    "pretrain.batch_size=16",
    "downstream.n_train=60",
    "downstream.epochs=2",
    "downstream.batch_size=16",
    "downstream.attack_steps=2",
    "eval.n_test=30",
    "eval.steps=5",
    "eval.apgd_steps=3",
    "eval.square_queries=10",
    "eval.dictionary_atoms=4",
)


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    make_mnist_files(tmp_path / "data" / "fashion_mnist")
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")  # the tiny files, not Debian's
    monkeypatch.setattr(c7_real_data, "CLAIM7_QUICK", TINY_QUICK)
    monkeypatch.setattr(c7_real_data, "SHIFT_POINTS", 20)
    return tmp_path


def test_row_7c_runs_contrastive_pretraining_and_reports_the_representation_shift(tiny_fashion, monkeypatch):
    store = ResultStore(tiny_fashion / "runs.db")
    ticks: list[str] = []
    out = c7_real_data.claim7([0, 1], True, store, ticks.append, contrastive=True)
    assert out["extra"]["config"]["pretrain_method"] == "contrastive"
    assert len(ticks) == 4 and all(t.startswith("claim 7c:") for t in ticks)
    for arm in ("at_pretrain", "clean_pretrain"):
        slf, extra = out["per_seed"][arm], out["extra"][arm]
        assert len(slf) == 2 and all(0 <= v <= 1 for v in slf)
        shift = extra["representation_shift"]
        assert len(shift) == 2 and all(math.isfinite(v) and v >= 0 for v in shift)
        assert extra["alf_minus_slf"] == pytest.approx(
            [a - s for a, s in zip(extra["adversarial_head_robust_acc"], slf, strict=True)]
        )
        assert "pretrained_robust_acc" not in extra  # a contrastive encoder's own head is never trained
    # the two arms are two encoders: the attack moves their features by different amounts
    assert out["extra"]["at_pretrain"]["representation_shift"] != out["extra"]["clean_pretrain"]["representation_shift"]

    # a second call reads everything from the store: the runs and the representation shift
    def boom(*a, **k):
        raise AssertionError("computed again")

    import robinherit.runs.experiment as experiment

    monkeypatch.setattr(experiment, "run_experiment", boom)
    monkeypatch.setattr(c7_real_data, "shift_of_encoders", boom)
    again = c7_real_data.claim7([0, 1], True, store, lambda _w: None, contrastive=True)
    assert again["per_seed"] == out["per_seed"] and again["extra"] == out["extra"]


def test_claims_7_selects_both_real_data_rows_and_reports_7c(tiny_fashion):
    settings = ReproduceSettings(seeds=(0, 1), quick=True, claims=(7,))
    assert [s.id for s in settings.selected()] == ["7", "7c"] and CLAIMS["7c"].number == 7
    mine = ReproduceSettings(seeds=(0, 1), quick=True, claims=(7,), rows=("7c",))
    store = ResultStore(tiny_fashion / "runs.db")
    result = reproduce(mine, store)
    write_claims(result, tiny_fashion / "out")
    write_report(result, store, tiny_fashion / "out")
    (row,) = json.loads((tiny_fashion / "out" / "claims.json").read_text())["claims"]
    assert row["id"] == "7c" and row["claim"] == 7 and row["status"] in ("pass", "fail")
    assert "contrastive" in row["statement"] and row["n_seeds"] == 2
    assert len(row["details"]["extra"]["at_pretrain"]["representation_shift"]) == 2
    md = (tiny_fashion / "out" / "report.md").read_text()
    assert "| 7c | real data (contrastive) |" in md and "Real data, contrastive pre-training" in md


def test_label_free_class_split_pretrains_on_every_image_and_heads_on_the_held_out_classes(tiny_fashion):
    from robinherit.config import load_config
    from robinherit.runs.experiment import run_experiment

    sets = [*TINY_QUICK, "pretrain.method=contrastive", "pretrain.aug_strength=0.1", "pretrain.eps=0.1",
            "data.protocol=class_split", "data.pretrain_classes=[0,1]", "downstream.heads=[clean]",
            "eval.autoattack=none"]  # fmt: skip
    every = load_config("fashion_mnist_two_layer", [*sets, "data.pretrain_all_images=true"])
    seen = load_config("fashion_mnist_two_layer", sets)
    rec_every, _ = run_experiment(every)
    rec_seen, _ = run_experiment(seen)
    ds = datasets.load_dataset("fashion_mnist")
    held = int((ds.y_train >= 2).sum())
    # every training image against the 2 seen classes' only
    assert rec_every["dataset"]["n_pretrain"] == len(ds.y_train) > rec_seen["dataset"]["n_pretrain"]
    assert rec_seen["dataset"]["n_pretrain"] == len(ds.y_train) - held
    for rec in (rec_every, rec_seen):  # the head learns the held-out classes either way
        assert rec["dataset"]["downstream_classes"] == 2 and rec["dataset"]["n_downstream_train"] == held
    assert rec_every["run_id"] != rec_seen["run_id"]
