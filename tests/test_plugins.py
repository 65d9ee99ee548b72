"""Plugins reach every process: a unit, a data set and an encoder defined in one plugin file run through
`robinherit run` and through a sweep on real worker processes; a plugin that cannot be imported is a ConfigError
naming it and the fix."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robinherit import plugins
from robinherit.cli import app
from robinherit.config import build_config
from robinherit.data import datasets
from robinherit.errors import ConfigError
from robinherit.models import encoder, units
from robinherit.runs.store import ResultStore

PLUGIN = '''
"""A unit, a data set and an encoder, registered when this file is imported."""
import torch
from torch import nn

from robinherit.data.datasets import LOADERS, ArrayDataset
from robinherit.models.encoder import ENCODERS, FirstLayer, linear
from robinherit.models.units import UNITS, Unit


def neg_relu(u, b):
    return -torch.relu(-u - b)


UNITS["plugin_neg_relu"] = Unit(neg_relu, neg_relu, lambda b: (-b,), lambda u: -torch.ones_like(u))


def load_blobs(spec):
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(3, 16, generator=g)
    y = torch.arange(150) % 3
    x = (centres[y] + 0.05 * torch.randn(150, 16, generator=g)).clamp(0, 1)
    return ArrayDataset("plugin_blobs", x[:100], y[:100], x[100:], y[100:], (1, 4, 4), 3)


LOADERS["plugin_blobs"] = load_blobs


class Mlp(nn.Module):
    capabilities = frozenset()

    def __init__(self, d, cfg, n_out, g, center):
        super().__init__()
        self.first, self.second = linear(d, cfg.width, g), linear(cfg.width, cfg.width, g)
        self.act = UNITS[cfg.activation].function
        self.b = nn.Parameter(torch.full((cfg.width,), cfg.threshold), requires_grad=False)
        self.head = linear(cfg.width, n_out, g)
        self.register_buffer("center", center)

    @property
    def feature_dim(self):
        return self.second.out_features

    def features(self, x):
        x = x if self.center is None else x - self.center
        return self.act(self.second(torch.relu(self.first(x))), self.b)

    def forward(self, x):
        return self.head(self.features(x))

    def freeze(self):
        return self.requires_grad_(False)

    def first_layer(self):
        return FirstLayer(self.first.weight)


ENCODERS["plugin_mlp"] = lambda cfg, d, n_out, image_shape, g, center: Mlp(d, cfg, n_out, g, center)
'''

RUN = {
    "data": {"source": "plugin_blobs"},
    "model": {"encoder": "plugin_mlp", "activation": "plugin_neg_relu", "width": 8, "threshold": 0.05},
    "pretrain": {"eps": 0.1, "steps": 4, "batch_size": 32, "attack_steps": 1},
    "downstream": {"heads": ["clean"], "steps": 3, "n_train": 40},
    "eval": {"eps_grid": [0, 0.1], "steps": 1, "restarts": 1, "n_test": 20, "dictionary_atoms": 4},
}


@pytest.fixture
def registries():
    """The registries and the plugins loaded as they were, given back after the test (the plugin's entries are this
    process's; a later pool's workers would be handed its files)."""
    saved = [(r, dict(r)) for r in (units.UNITS, datasets.LOADERS, encoder.ENCODERS, plugins._loaded)]
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)


def plugin_config(tmp_path: Path) -> Path:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    path = tmp_path / "plugin_run.yaml"
    path.write_text(yaml.safe_dump({"plugins": [str(tmp_path / "my_plugin.py")], **RUN}))
    return path


def test_a_plugin_file_named_by_the_config_runs_through_cli_run_and_a_two_worker_sweep(tmp_path, registries):
    cfg_path = plugin_config(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(cfg_path), "--store", str(tmp_path / "run.db"), "--json"])
    assert res.exit_code == 0, res.output
    assert "plugin_mlp" in res.output and "plugin_blobs" in res.output

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": cfg_path.name, "seeds": [0, 1]}))
    db = tmp_path / "sweep.db"
    res = runner.invoke(app, ["sweep", str(spec), "--store", str(db), "--workers", "2", "--batch", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    records = ResultStore(db, read_only=True).runs()
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert {r["config"]["model"]["encoder"] for r in records} == {"plugin_mlp"}
    assert all(r["dataset"]["name"] == "plugin_blobs" for r in records)
    # the workers computed what this process computes: seed 0 equals the `run` above
    ran = ResultStore(tmp_path / "run.db", read_only=True).runs()[0]
    swept = next(r for r in records if r["seed"] == 0)
    assert swept["run_id"] == ran["run_id"] and swept["pretrain"]["robust_acc"] == ran["pretrain"]["robust_acc"]


def test_a_worker_that_started_without_the_plugin_loads_the_one_its_config_names(tmp_path, registries):
    from robinherit.config import load_config
    from robinherit.runs.sweep import execute

    cfg = load_config(plugin_config(tmp_path))
    # a bare spawned process (no pool initializer, so none of this process's plugins), as a Ray worker starts
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        ((result, error),) = ex.submit(execute, [cfg.model_dump(mode="json")]).result()
    assert error is None and result[0]["config"]["model"]["encoder"] == "plugin_mlp"


def test_plugins_are_not_part_of_a_runs_identity(tmp_path, registries):
    plugin = tmp_path / "same.py"
    plugin.write_text("X = 1\n")
    assert build_config({"plugins": [str(plugin)]}).config_hash() == build_config({}).config_hash()


def test_a_plugin_is_imported_once_per_process(tmp_path, registries):
    plugin = tmp_path / "counted.py"
    plugin.write_text("open(__file__ + '.log', 'a').write('imported ')\n")
    plugins.load_plugins([str(plugin)])
    plugins.load_plugins([str(plugin), str(plugin)])
    assert (tmp_path / "counted.py.log").read_text() == "imported "
    assert str(plugin.resolve()) in plugins.loaded_plugins()


def test_a_module_on_sys_path_is_a_plugin(tmp_path, monkeypatch, registries):
    (tmp_path / "robinherit_test_plugin_mod.py").write_text(
        "from robinherit.models.encoder import ENCODERS\nENCODERS['mod_two_layer'] = ENCODERS['two_layer']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = build_config({"plugins": ["robinherit_test_plugin_mod"], "model": {"encoder": "mod_two_layer"}})
    assert cfg.model.encoder == "mod_two_layer"


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("missing.py", None, r"plugin file '.*missing\.py' does not exist"),
        ("broken.py", "raise RuntimeError('boom')\n", r"plugin '.*broken\.py' cannot be imported \(RuntimeError: bo"),
        ("no_such_robinherit_plugin", None, r"plugin 'no_such_robinherit_plugin' cannot be imported .*PYTHONPATH"),
    ],
)
def test_a_plugin_that_cannot_be_imported_is_a_config_error_naming_it(tmp_path, name, text, expected):
    target = str(tmp_path / name) if name.endswith(".py") else name
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=expected):
        build_config({"plugins": [target]})
    res = CliRunner().invoke(app, ["config", "--set", f"plugins=[{target}]"])
    assert res.exit_code == 2 and ("cannot be imported" in res.output or "does not exist" in res.output)


def test_entry_points_of_the_group_are_loaded_once(monkeypatch):
    calls = []

    class EntryPoint:
        name, value = "fake", "fake_pkg:register"

        def load(self):
            return lambda: calls.append(1)

    monkeypatch.setattr(plugins, "entry_points", lambda group: [EntryPoint()] if group == plugins.GROUP else [])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    plugins.load_entry_points()
    plugins.load_entry_points()
    assert calls == [1]


def test_an_entry_point_that_fails_names_it(monkeypatch):
    class EntryPoint:
        name, value = "bad", "bad_pkg"

        def load(self):
            raise ImportError("no module named bad_pkg")

    monkeypatch.setattr(plugins, "entry_points", lambda group: [EntryPoint()])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.raises(ConfigError, match=r"entry point 'bad = bad_pkg'.*uninstall"):
        plugins.load_entry_points()


def test_a_parent_plugin_that_a_worker_cannot_import_fails_its_runs_by_name(tmp_path, registries, micro_cfg):
    from robinherit.runs.sweep import run_sweep

    gone = tmp_path / "gone.py"
    gone.write_text("X = 1\n")
    plugins.load_plugins([str(gone)])
    gone.unlink()  # the workers, handed this process's plugins, cannot import it
    rep = run_sweep([micro_cfg], ResultStore(tmp_path / "runs.db"), workers=1)
    ((_, error),) = rep.failed
    assert "gone.py' does not exist" in error
