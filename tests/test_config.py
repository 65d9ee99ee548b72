"""Config: loading, --set parsing, derived sizes, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import robinherit.config.identity as config_module  # the run id reads the numerics table there
from robinherit.config import (
    DataConfig,
    ExperimentConfig,
    Norm,
    load_config,
    parse_overrides,
    with_updates,
)
from robinherit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SUPERVISED = REPO / "configs" / "supervised.yaml"


def test_shipped_config_loads_with_its_values():
    cfg = load_config(SUPERVISED)
    assert cfg.data.d == 64 and cfg.data.D == 64
    assert cfg.pretrain.eps == 0.25 and cfg.pretrain.norm is Norm.l2
    assert cfg.model.threshold == 0.3


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.dd=3"])
    msg = str(err.value)
    assert "data.dd" in msg
    for key in DataConfig.model_fields:  # every valid key of the section is named
        assert key in msg


def test_unknown_top_level_key_lists_sections():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["pretrian.eps=0.1"])
    msg = str(err.value)
    assert "pretrian" in msg
    for key in ("data", "model", "pretrain", "downstream", "eval", "seed"):
        assert key in msg


@pytest.mark.parametrize("override", ["pretrain.eps=-0.1", "downstream.eps=-1", "eval.eps_grid=[0,-0.5]"])
def test_negative_eps_is_rejected(override: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert override.split("=")[0] in str(err.value)


def test_k_larger_than_n_features_is_rejected():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.d=8", "data.k=9"])
    msg = str(err.value)
    assert "data.k=9" in msg and "n_features" in msg


def test_enum_value_not_allowed_lists_allowed():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["pretrain.norm=l3"])
    msg = str(err.value)
    assert "pretrain.norm" in msg and "l3" in msg and "l2" in msg and "linf" in msg


@pytest.mark.parametrize("override", ["pretrain.lr=.inf", "data.noise=.nan", "eval.eps_grid=[0,.inf]"])
def test_non_finite_numbers_are_rejected(override: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert override.split("=")[0] in str(err.value)


def test_even_k_with_sign_values_is_rejected_but_uniform_values_allowed():
    with pytest.raises(ConfigError, match="odd"):
        load_config(None, ["data.k=2"])
    assert load_config(None, ["data.k=2", "data.values=uniform"]).data.k == 2


def test_dictionary_sizes_must_agree():
    with pytest.raises(ConfigError, match="overcomplete"):
        load_config(None, ["data.n_features=128"])
    with pytest.raises(ConfigError, match=r"n_features > data\.d"):
        load_config(None, ["data.dictionary=overcomplete"])
    assert load_config(None, ["data.dictionary=overcomplete", "data.n_features=128"]).data.D == 128


def test_set_values_are_parsed_as_yaml():
    sets = ["pretrain.eps=0.25", "eval.eps_grid=[0, 0.2]", "pretrain.norm=linf", "model.learn_threshold=true"]
    tree = parse_overrides(sets)
    assert tree == {
        "pretrain": {"eps": 0.25, "norm": "linf"},
        "eval": {"eps_grid": [0, 0.2]},
        "model": {"learn_threshold": True},
    }
    cfg = load_config(SUPERVISED, ["pretrain.eps=0", "eval.eps_grid=[0,0.2]", "pretrain.norm=linf", "pretrain.lr=1e-3"])
    assert cfg.pretrain.eps == 0.0
    assert cfg.eval.eps_grid == (0.0, 0.2)
    assert cfg.pretrain.norm is Norm.linf
    assert cfg.pretrain.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string; the float field coerces it


def test_set_without_equals_and_through_a_value_are_errors():
    with pytest.raises(ConfigError, match="path=value"):
        parse_overrides(["pretrain.eps"])
    with pytest.raises(ConfigError, match="not a section"):
        parse_overrides(["seed=1", "seed.x=2"])


def test_set_d_alone_gives_a_consistent_config():
    cfg = load_config(SUPERVISED, ["data.d=96"])
    assert cfg.data.d == 96 and cfg.data.D == 96
    assert cfg.resolved()["data"]["n_features"] == 96


def test_config_is_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_with_updates_validates_again():
    cfg = ExperimentConfig()
    assert with_updates(cfg, **{"pretrain.eps": 0}).pretrain.eps == 0.0
    with pytest.raises(ConfigError):
        with_updates(cfg, **{"pretrain.eps": -1})


def test_hash_identifies_the_resolved_config():
    a = ExperimentConfig()
    assert a.config_hash() == ExperimentConfig().config_hash()
    assert a.config_hash() == load_config(None, ["data.n_features=64"]).config_hash()  # same resolved config
    assert a.config_hash() == load_config(None, ["data.source=synthetic"]).config_hash()  # the default source
    assert a.config_hash() != with_updates(a, seed=1).config_hash()
    assert a.config_hash() != with_updates(a, **{"pretrain.eps": 0}).config_hash()


def test_run_id_covers_the_device_type_and_the_numerics_version(monkeypatch):
    a = ExperimentConfig()
    cuda = load_config(None, ["device=cuda"])
    # CUDA draws other random streams than the CPU: a stored CPU run must never answer a CUDA request
    assert a.config_hash() != cuda.config_hash()
    assert cuda.config_hash() == load_config(None, ["device=cuda:1"]).config_hash()  # which GPU does not matter
    before = a.config_hash()
    real = load_config("digits")
    # each run is versioned by its kind's entry (a tautology on the table itself would test nothing)
    real_contrastive = with_updates(real, **{"pretrain.method": "contrastive"})
    kinds = [config_module.numerics_kind(c) for c in (a, real, real_contrastive)]
    assert kinds == ["synthetic", "real", "real_contrastive"]
    real_before = real.config_hash()
    bumped = {k: v + 1 for k, v in config_module.NUMERICS_BY_KIND.items()}
    monkeypatch.setattr(config_module, "NUMERICS_BY_KIND", {**config_module.NUMERICS_BY_KIND, "synthetic": 99})
    assert a.config_hash() != before  # a change of the synthetic numerics gives every synthetic run a new id
    assert real.config_hash() == real_before  # ... and leaves real-data runs (no code sampler there) as they were
    monkeypatch.setattr(config_module, "NUMERICS_BY_KIND", bumped)
    assert real.config_hash() != real_before
    contrastive = load_config("digits", ["pretrain.method=contrastive"])
    assert config_module.numerics_kind(contrastive) == "real_contrastive"  # its training step changed at 3
    assert config_module.numerics_kind(real) == "real" and config_module.numerics_kind(a) == "synthetic"


@pytest.mark.parametrize(
    ("base", "inert"),
    [
        ([], {"pretrain.temperature": 0.9, "pretrain.augmentation": "mask", "pretrain.projector_dim": 8}),
        (["pretrain.eps=0"], {"pretrain.attack_steps": 9, "pretrain.norm": "linf", "pretrain.attack": "fgm"}),
        (["downstream.heads=[clean]"], {"downstream.eps": 0.7, "downstream.attack_steps": 9}),
        ([], {"model.conv.channels": [3, 5], "eval.apgd_steps": 7, "eval.dictionary_atoms": 5}),
    ],
)
def test_inert_settings_do_not_change_the_run_id(base, inert):
    cfg = load_config(None, base)
    assert with_updates(cfg, **inert).config_hash() == cfg.config_hash()


@pytest.mark.parametrize(
    ("base", "live"),
    [
        (["pretrain.method=contrastive"], {"pretrain.temperature": 0.9}),
        ([], {"pretrain.attack_steps": 9}),
        ([], {"downstream.eps": 0.7}),
    ],
)
def test_live_settings_change_the_run_id(base, live):
    cfg = load_config(None, base)
    assert with_updates(cfg, **live).config_hash() != cfg.config_hash()


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_an_unknown_evaluation_attack_is_a_config_error_before_any_compute():
    from robinherit.config import load_config
    from robinherit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval\.attacks names nope.*apgd-ce"):
        load_config("supervised", ["eval.attacks=[nope]"])
    assert load_config("digits", ["eval.attacks=[apgd-ce]"]).eval.attacks == ("apgd-ce",)


def test_budgets_accept_fractions_in_yaml_set_and_the_api():
    from robinherit.config import load_config, with_updates
    from robinherit.errors import ConfigError

    cfg = load_config("cifar10_resnet18")
    assert cfg.pretrain.eps == 8 / 255 and cfg.eval.eps_grid == (0.0, 8 / 255) and cfg.downstream.eps == 8 / 255
    assert load_config("supervised", ["pretrain.eps=1/4"]).pretrain.eps == 0.25
    assert with_updates(load_config("supervised"), **{"eval.eps_grid": [0, "1/2"]}).eval.eps_grid == (0.0, 0.5)
    with pytest.raises(ConfigError, match=r"pretrain\.eps"):
        load_config("supervised", ["pretrain.eps=1/0"])


def test_a_config_file_that_is_not_utf8_is_one_error(tmp_path):
    from robinherit.config import load_config
    from robinherit.errors import ConfigError

    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  d: 64 # dimension \xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)
