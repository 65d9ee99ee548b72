"""The Python API's argument checks and record access, without computing runs where the check comes first."""

from __future__ import annotations

import pytest

import robinherit
from robinherit.api import Record
from robinherit.errors import ConfigError


@pytest.mark.parametrize("seeds", ["12", b"1", True, [0, "1"], [1.5], [-1], [2**63], []])
def test_seeds_that_are_not_ints_are_refused_before_anything_runs(seeds, tmp_path):
    store = tmp_path / "runs.db"
    with pytest.raises(ConfigError, match="seeds takes an int or a list of ints"):
        robinherit.run("supervised", seeds=seeds, store=store)
    assert not store.exists()


def test_records_answer_budgets_as_floats_and_as_their_text():
    rec = Record({"robust_acc": {"0": 1.0, "0.1": 0.75, "1": 0.25}})
    assert rec.robust_acc[0.1] == rec.robust_acc["0.1"] == 0.75
    assert rec.robust_acc[0] == 1.0 and rec.robust_acc[1.0] == 0.25
    with pytest.raises(KeyError):
        rec.robust_acc[0.2]


def test_a_run_too_large_for_the_machine_is_refused_before_anything_runs(tmp_path):
    from robinherit.config import load_config
    from robinherit.runs.budget import check_fits, estimate_peak_bytes

    store = tmp_path / "runs.db"
    with pytest.raises(ConfigError, match=r"model\.width=1000000000.*lower the largest"):
        robinherit.run("supervised", store=store, model__width=10**9)
    assert not store.exists()
    small, wide = load_config("supervised"), load_config("supervised", ["data.d=30000"])
    assert estimate_peak_bytes(wide) > 1000 * estimate_peak_bytes(small)
    check_fits([small], memory=2**30)  # the default world fits in 1 GiB
    with pytest.raises(ConfigError, match=r"data\.d=30000"):
        check_fits([wide], memory=24 * 2**30)


def test_a_stored_runs_record_loads_its_encoder_and_heads_from_its_store(tmp_path):
    import torch

    from conftest import MICRO

    store = tmp_path / "runs.db"
    (rec,) = robinherit.run(MICRO, seeds=[0], store=store)
    encoder, heads = robinherit.load(rec.run_id, store=store)
    for loaded in (rec, robinherit.Records.read(store)[0]):  # as run, and as read back from the store
        enc = loaded.encoder()
        assert isinstance(enc, torch.nn.Module) and not any(m.training for m in enc.modules())
        assert enc.state_dict().keys() == encoder.state_dict().keys()
        assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in enc.state_dict().items())
    mine = rec.heads()
    assert set(mine) == set(heads) == {"clean_head", "adversarial_head"}
    for name, head in mine.items():
        assert not head.training
        assert all(torch.equal(v, heads[name].state_dict()[k]) for k, v in head.state_dict().items())
    # fields named like the loaders stay fields in the sections that hold them
    assert rec.config.model.encoder == MICRO.get("model", {}).get("encoder", "two_layer")
    assert rec.config.downstream.heads == ["clean", "adversarial"]


def test_an_audit_record_reads_its_encoder_section_and_refuses_to_rebuild_the_module(tmp_path):
    from conftest import MICRO

    store = tmp_path / "runs.db"
    (run,) = robinherit.run(MICRO, seeds=[0], store=store)
    rec = robinherit.audit(run.run_id, store=store)
    assert rec.kind == "audit" and len(rec.encoder.sha256) == 64 and rec.encoder["feature_dim"] == 8
    assert rec["encoder"]["class"] == rec.encoder["class"]
    with pytest.raises(ConfigError, match=r"is an audit: .*use the module you audited"):
        rec.encoder()
    with pytest.raises(ConfigError, match=r"is an audit"):
        rec.heads()


def test_a_record_without_a_store_names_the_fix():
    rec = Record({"run_id": "0123abcd", "seed": 0, "config": {}})
    with pytest.raises(ConfigError, match=r"does not know its results store.*robinherit\.load\('0123abcd', store="):
        rec.encoder()
    with pytest.raises(AttributeError, match="has no field 'sha256'"):
        _ = rec.encoder.sha256
    with pytest.raises(AttributeError, match="has no field 'encoder'"):
        _ = Record({"a": 1}).encoder
