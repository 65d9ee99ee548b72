"""The shipped example of a user's encoder, examples/bn_cnn.py, audited on tiny 28 x 28 MNIST-format files: the
module comes back as it was and the record holds what docs/audit.md promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import robinherit
from test_datasets import write_idx
from test_sources import MICRO_REAL

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bn_cnn.py"


def example():
    spec = importlib.util.spec_from_file_location("bn_cnn_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_mnist28(root: Path, n_train: int = 48, n_test: int = 16) -> None:
    """MNIST-format files of 28 x 28 images whose brightness encodes one of 4 classes."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 4
        x = np.clip(rng.normal(40 + 50 * y[:, None, None], 30, size=(n, 28, 28)), 0, 255)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", y.astype(np.uint8))


@pytest.fixture
def mnist28(tmp_path: Path) -> Path:
    write_mnist28(tmp_path / "data")
    raw = json.loads(json.dumps(MICRO_REAL))
    raw["data"]["root"] = str(tmp_path / "data")
    raw["eval"].update(autoattack="none", n_test=8)  # the unit shift attacks 64 units x n_test images
    raw["downstream"].update(steps=10)
    path = tmp_path / "mnist28.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_example_cnn_is_audited_and_left_as_it_was(mnist28: Path):
    net = example().encoder()
    assert net.eval()(torch.rand(3, 1, 28, 28)).shape == (3, 64)  # eval: a training-mode call moves batch norm
    net.train()  # as a user may hand it over: batch norm would update its statistics, dropout would drop
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rec = robinherit.audit(net, mnist28, store=mnist28.parent / "runs.db")
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(m.training for m in net.modules())
    assert rec.encoder.feature_dim == 64 and len(rec.encoder.sha256) == 64
    for head in ("clean_head", "adversarial_head"):
        acc = rec.downstream[head].robust_acc
        assert set(acc) == {"0", "0.5", "2"} and 0 <= acc[2.0] <= acc[0.5] <= acc[0] <= 1
    assert {"class_selectivity_mean", "feature_count_median", "unit_shift_mean", "representation_shift"} <= set(
        rec.units
    )
    # the file spec, as the command line takes it, gives the same weights: the audit is answered from the store
    again = robinherit.audit(f"{EXAMPLE}:encoder", mnist28, store=mnist28.parent / "runs.db")
    assert again.to_dict() == rec.to_dict()


def test_the_example_gives_the_same_weights_at_every_call_and_leaves_the_global_random_state():
    make = example().encoder
    before = torch.random.get_rng_state()
    a, b, other = make(), make(), make(seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.state_dict()["body.0.weight"], other.state_dict()["body.0.weight"])
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in a.modules())


def test_the_training_example_saves_weights_the_example_encoder_loads(tmp_path: Path):
    write_mnist28(tmp_path / "data")
    spec = importlib.util.spec_from_file_location("train_bn_cnn_example", EXAMPLE.parent / "train_bn_cnn.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    out = tmp_path / "bn"
    args = ["--out", str(out), "--steps", "3", "--batch-size", "8", "--root", str(tmp_path / "data")]
    with torch.random.fork_rng(devices=[]):  # a script seeds the global generator; keep the test session's
        assert train.main(args) == 0
    enc, init = example().encoder(), example().encoder()
    enc.load_state_dict(torch.load(out / "encoder.pt", weights_only=True))
    moved = [k for k, v in enc.state_dict().items() if not torch.equal(v, init.state_dict()[k])]
    assert moved  # three AT steps changed the weights and batch norm's statistics
    clf = torch.nn.Sequential(example().encoder(), torch.nn.Linear(64, 4))
    clf.load_state_dict(torch.load(out / "classifier.pt", weights_only=True))  # the 4 classes of the tiny files
    assert torch.equal(clf[0].state_dict()["body.0.weight"], enc.state_dict()["body.0.weight"])
