"""The audit of any encoder: a user's batch-norm CNN from a file of their own, through the CLI and Python; a stored
run audited again; bad encoder specs as one paragraph and exit 2 with nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import robinherit
from robinherit.cli import app
from robinherit.errors import ConfigError
from robinherit.runs.store import ResultStore
from test_datasets import make_mnist_files
from test_sources import MICRO_REAL

USER_FILE = """
import torch
from torch import nn


def make():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def not_flat():
    return nn.Conv2d(1, 2, 3)


def no_module():
    return 3
"""


@pytest.fixture
def setup(tmp_path: Path):
    make_mnist_files(tmp_path / "data", n_train=80, n_test=40)
    raw = json.loads(json.dumps(MICRO_REAL))
    raw["data"]["root"] = str(tmp_path / "data")
    raw["eval"]["autoattack"] = "none"
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "user.py").write_text(USER_FILE)
    return tmp_path


def _user_module(tmp_path: Path) -> torch.nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_for_test", tmp_path / "user.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make()


def test_a_users_batchnorm_cnn_is_audited_from_python_and_left_as_it_was(setup: Path):
    net = _user_module(setup).train()  # in training mode, as a user may hand it over
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    rec = robinherit.audit(net, setup / "micro.yaml", store=setup / "runs.db")
    assert set(rec.downstream) == {"clean_head", "adversarial_head"}
    for head in rec.downstream.values():
        assert set(head.robust_acc) == {"0", "0.5", "2"} and head.robust_acc[2.0] <= head.robust_acc[0.5]
    assert rec.encoder.feature_dim == 6 and len(rec.encoder.sha256) == 64
    assert {"class_selectivity_mean", "feature_count_median", "unit_shift_mean"} <= set(rec.units)
    # the module as it was: state dict (batch-norm statistics included), modes, gradient flags
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(m.training for m in net.modules()) and [p.requires_grad for p in net.parameters()] == flags
    again = robinherit.audit(net, setup / "micro.yaml", store=setup / "runs.db")
    assert again.to_dict() == rec.to_dict()  # answered from the store
    assert len(ResultStore(setup / "runs.db", read_only=True).runs()) == 1


def test_the_cli_audits_a_file_callable_and_runs_lists_it(setup: Path):
    store = setup / "runs.db"
    res = CliRunner().invoke(
        app, ["audit", f"{setup / 'user.py'}:make", "--data", str(setup / "micro.yaml"), "--json", "--store", store]
    )
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["kind"] == "audit" and rec["encoder"]["class"].endswith("Sequential")
    listed = CliRunner().invoke(app, ["runs", "--store", str(store)])
    assert listed.exit_code == 0 and rec["run_id"] in listed.stdout and "audit" in listed.stdout


def test_a_stored_run_audited_again_gives_its_clean_heads_numbers(setup: Path):
    store = setup / "runs.db"
    (run,) = robinherit.run(setup / "micro.yaml", seeds=[0], store=store)
    rec = robinherit.audit(run.run_id, store=store)
    for head in ("clean_head", "adversarial_head"):
        for eps, acc in run.downstream[head].robust_acc.items():
            assert abs(rec.downstream[head].robust_acc[eps] - acc) <= 0.03
    encoder, heads = robinherit.load(run.run_id, store=store)
    assert not encoder.training and set(heads) == {"clean_head", "adversarial_head"}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("missing.py:make", "does not exist"),
        ("{dir}/user.py:nothing", "has no callable 'nothing'"),
        ("{dir}/user.py:no_module", "not a torch nn.Module"),
        ("{dir}/user.py:not_flat", "returns features (n, m)"),
        ("0123abcd", "no stored run"),
    ],
    ids=["missing-file", "no-callable", "not-a-module", "not-flat", "unknown-run"],
)
def test_bad_encoder_specs_are_one_paragraph_exit_2_and_store_nothing(setup: Path, spec: str, needle: str):
    store = setup / "runs.db"
    res = CliRunner().invoke(
        app, ["audit", spec.format(dir=setup), "--data", str(setup / "micro.yaml"), "--store", str(store)]
    )
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and needle in err and "\n\n" not in err and "Traceback" not in res.output
    assert not store.exists() or not ResultStore(store, read_only=True).runs()


def test_weights_that_do_not_fit_are_a_config_error(setup: Path):
    weights = setup / "other.pt"
    torch.save({"0.weight": torch.zeros(3, 3)}, weights)
    with pytest.raises(ConfigError, match="do not fit the encoder"):
        robinherit.audit(f"{setup / 'user.py'}:make", setup / "micro.yaml", weights=weights, store=None)


def test_a_classifier_given_beside_the_encoder_is_evaluated_on_its_logits(setup: Path):
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.features = encoder  # a features attribute, as many models have: the audit must not read it
            self.fc = nn.Linear(6, 4)
            with torch.no_grad():  # always class 0: what its logits say, whatever the features are
                self.fc.weight.zero_()
                self.fc.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))

        def forward(self, x):
            return self.fc(self.features(x))

    enc = _user_module(setup)
    rec = robinherit.audit(enc, setup / "micro.yaml", classifier=Classifier(enc), store=None)
    assert set(rec.pretrain.robust_acc) == {"0", "0.5", "2"} and rec.pretrain.majority_share == 1.0
    assert rec.encoder.classifier_sha256 is not None


def test_no_top_level_module_shadows_a_name_the_package_exports():
    """``robinherit.audit`` is a function; a module of the same name, once imported (as the command line imports
    what it runs), would take its place on the package. Every top-level module is imported and every exported name
    must still be what the package says it is, not a module."""
    import importlib
    import pkgutil
    import types

    for info in pkgutil.iter_modules(robinherit.__path__):
        importlib.import_module(f"robinherit.{info.name}")
    for name in robinherit.__all__:
        assert not isinstance(getattr(robinherit, name), types.ModuleType), name
    assert robinherit.audit is importlib.import_module("robinherit.auditing").audit
