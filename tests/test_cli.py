"""CLI smoke runs on a micro config: run/runs/show/config, and bad input -> one paragraph, exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robinherit.cli import app
from robinherit.runs.store import ResultStore

RECORD_KEYS = {"run_id", "seed", "config", "pretrain", "purification", "downstream", "timing_s"}
PURITY_KEYS = {"top1_share_mean", "top1_share_median", "neff_median", "frac_pure", "dead_nodes"}
TIMING_KEYS = {"pretrain", "downstream", "eval", "total"}

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, micro_yaml_module: Path):
    """A store holding seeds 0 and 1 of the micro config, and the records `run --json` printed."""
    store = tmp_path_factory.mktemp("store") / "runs.db"
    res = invoke("run", micro_yaml_module, "--seeds", "0,1", "--json", "--store", store)
    assert res.exit_code == 0, res.output
    return store, [json.loads(line) for line in res.stdout.splitlines()]


@pytest.fixture(scope="module")
def micro_yaml_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import MICRO  # the shared micro config, written once for this module

    path = tmp_path_factory.mktemp("cfg") / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO))
    return path


def test_run_json_prints_one_record_per_seed_with_the_issue_keys(stored):
    _, records = stored
    assert [r["seed"] for r in records] == [0, 1]
    assert records[0]["run_id"] != records[1]["run_id"]
    for rec in records:
        assert set(rec) >= RECORD_KEYS
        assert {"clean_acc", "robust_acc"} <= set(rec["pretrain"])
        assert set(rec["purification"]) >= PURITY_KEYS
        assert set(rec["purification"]["frac_pure"]) == {"0.5", "0.7", "0.9"}
        assert set(rec["downstream"]) == {"clean_head", "adversarial_head"}
        for head in [rec["pretrain"], *rec["downstream"].values()]:
            assert set(head["robust_acc"]) == {"0", "0.25"}  # keys as in eval.eps_grid
            assert 0.0 <= head["robust_acc"]["0.25"] <= head["clean_acc"] <= 1.0
            # the certified lower bound sits below the attacked upper bound
            assert all(head["certified_acc"][k] <= head["robust_acc"][k] for k in head["robust_acc"])
        # the printed numbers come from a real attack: at the flip radius (a known input flips every example) it
        # breaks (nearly) all of them, which an attack that returns its input unchanged would not
        models = [rec["pretrain"], *rec["downstream"].values()]
        flips = [h["checks"]["robust_at_flip_eps"] for h in models if h["checks"].get("flip_eps")]
        assert flips and all(f <= 0.02 for f in flips)
        assert set(rec["timing_s"]) >= TIMING_KEYS
        assert rec["config"]["seed"] == rec["seed"]


def test_rerun_is_answered_from_the_store(stored, micro_yaml_module: Path):
    store, records = stored
    res = invoke("run", micro_yaml_module, "--seeds", "0,1", "--json", "--store", store)
    assert res.exit_code == 0
    assert [json.loads(line) for line in res.stdout.splitlines()] == records
    table = invoke("run", micro_yaml_module, "--seeds", "1", "--store", store)
    assert table.exit_code == 0 and "from store" in table.stdout


def test_runs_and_show(stored):
    store, records = stored
    res = invoke("runs", "--store", store)
    assert res.exit_code == 0
    for rec in records:
        assert rec["run_id"] in res.stdout
    lines = invoke("runs", "--store", store, "--json").stdout.splitlines()
    assert {json.loads(line)["run_id"] for line in lines} == {r["run_id"] for r in records}
    shown = invoke("show", records[1]["run_id"][:6], "--store", store)
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == records[1]


def test_config_prints_the_resolved_config_with_every_default(micro_yaml_module: Path):
    res = invoke("config", micro_yaml_module, "--set", "data.d=96")
    assert res.exit_code == 0
    resolved = yaml.safe_load(res.stdout)
    assert resolved["data"]["d"] == 96 and resolved["data"]["n_features"] == 96
    assert resolved["data"]["value_low"] == 0.5  # a default the YAML file does not mention
    assert resolved["pretrain"]["optimizer"] == "adam"
    assert json.loads(invoke("config", micro_yaml_module, "--json").stdout)["model"]["width"] == 8


def assert_user_error(res, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    err = res.stderr.strip()
    assert err.startswith("error:")
    assert "\n\n" not in err and err.count("\n") <= 1  # one paragraph
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["data.dd=1"], ["unknown key 'data.dd'", "valid keys"]),
        (["pretrain.eps=-0.1"], ["pretrain.eps"]),
        (["data.k=9"], ["data.k=9", "n_features"]),
        (["pretrain.norm=l3"], ["pretrain.norm", "linf"]),
        (["pretrain.eps"], ["path=value"]),
        (["device=gpu"], ["device"]),
    ],
)
def test_bad_config_is_one_paragraph_and_exit_code_2(micro_yaml_module: Path, tmp_path: Path, sets, needles):
    args = [a for s in sets for a in ("--set", s)]
    res = invoke("run", micro_yaml_module, *args, "--store", tmp_path / "runs.db")
    assert_user_error(res, *needles)
    assert not (tmp_path / "runs.db").exists()  # refused before touching anything


def test_non_finite_loss_names_the_step_and_keeps_the_store(stored, micro_yaml_module: Path):
    store, records = stored
    blowup = ["pretrain.optimizer=sgd", "pretrain.lr=1000", "model.normalize_rows=false", "pretrain.steps=50"]
    res = invoke("run", micro_yaml_module, *[a for s in blowup for a in ("--set", s)], "--store", store)
    err = assert_user_error(res, "at step", "pretrain.lr")
    assert "nan" in err or "inf" in err
    assert {r["run_id"] for r in ResultStore(store).runs()} == {r["run_id"] for r in records}


def test_bad_store_paths_are_user_errors_and_files_are_untouched(micro_yaml_module: Path, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(invoke("run", micro_yaml_module, "--store", blocker / "runs.db"), "writable")
    notes = tmp_path / "notes.db"
    notes.write_bytes(b"not a database\n" * 50)
    before = notes.read_bytes()
    assert_user_error(invoke("run", micro_yaml_module, "--store", notes), "not an SQLite database")
    assert_user_error(invoke("runs", "--store", notes), "not an SQLite database")
    assert notes.read_bytes() == before
    assert_user_error(invoke("runs", "--store", tmp_path / "none.db"), "does not exist")
    assert_user_error(invoke("show", "abc", "--store", tmp_path / "none.db"), "does not exist")


def test_unknown_run_id_and_bad_seeds(stored, micro_yaml_module: Path, tmp_path: Path):
    store, _ = stored
    assert_user_error(invoke("show", "zzzz", "--store", store), "no run 'zzzz'")
    assert_user_error(invoke("run", micro_yaml_module, "--seeds", "a,b", "--store", tmp_path / "r.db"), "--seeds")
    assert_user_error(invoke("run", micro_yaml_module, "--seeds", "3-1", "--store", tmp_path / "r.db"), "empty")
    assert_user_error(invoke("run", tmp_path / "missing.yaml", "--store", tmp_path / "r.db"), "does not exist")


def test_cuda_without_a_gpu_is_a_user_error(micro_yaml_module: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = invoke("run", micro_yaml_module, "--set", "device=cuda", "--store", tmp_path / "r.db")
    assert_user_error(res, "device=cuda", "device=cpu")
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("command", ["run-real-data", "reproduce", "sweep", "evaluate"])
def test_every_computing_command_refuses_a_cuda_device_it_cannot_see(command, micro_yaml_module: Path, tmp_path):
    """The same clear error as `run`, before a store is created or anything runs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    root = Path(__file__).resolve().parents[1]
    store = tmp_path / "r.db"
    if command == "run-real-data":
        args = ["run", root / "configs" / "digits.yaml", "--set", "device=cuda"]
    elif command == "reproduce":
        args = ["reproduce", "--quick", "--claims", "1", "--set", "device=cuda", "--out", tmp_path / "out"]
    elif command == "sweep":
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({"base": str(micro_yaml_module), "set": {"device": "cuda:0"}, "seeds": 1}))
        args = ["sweep", spec, "--quiet"]
    else:
        args = ["evaluate", micro_yaml_module, "--set", "device=cuda"]
    assert_user_error(invoke(*args, "--store", store), "device=cuda", "device=cpu")
    assert not store.exists()


def test_a_sweep_dry_run_lists_cuda_runs_without_a_gpu(micro_yaml_module: Path, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": str(micro_yaml_module), "set": {"device": "cuda"}, "seeds": 2}))
    res = invoke("sweep", spec, "--dry-run", "--store", tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    assert "2 runs, 0 stored" in res.output


def test_installed_entry_point_reports_errors_without_traceback(micro_yaml_module: Path, tmp_path: Path):
    exe = Path(sys.executable).with_name("robinherit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "robinherit.cli"]
    proc = subprocess.run(
        [*cmd, "config", str(micro_yaml_module), "--set", "model.widht=3"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown key 'model.widht'" in proc.stderr
    assert proc.stdout == ""


def test_store_file_survives_being_copied_and_reopened(stored, tmp_path: Path):
    store, records = stored
    copy = tmp_path / "copy.db"
    shutil.copy(store, copy)
    for suffix in ("-wal", "-shm"):
        side = Path(str(store) + suffix)
        if side.exists():
            shutil.copy(side, Path(str(copy) + suffix))
    assert len(ResultStore(copy).runs()) == len(records)


def test_config_explain_prints_every_path_with_type_default_and_description():
    from robinherit.config import explain_config, load_config

    res = invoke("config", "digits", "--explain")
    assert res.exit_code == 0, res.output
    rows = explain_config(load_config("digits"))
    assert len(rows) > 40
    for path, _kind, _value, _default, description in rows:
        assert description, f"{path} has no description for --explain"
        assert path.split(".")[-1] in res.stdout
    assert "data.source" in res.stdout and "learned dictionary" in res.stdout  # a field description reached the user


def test_shipped_configs_and_specs_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    res = invoke("config", "supervised", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["pretrain"]["method"] == "supervised"
    res = invoke("sweep", "supervised_eps_threshold", "--dry-run", "--store", tmp_path / "s.db")
    assert res.exit_code == 0 and "runs, 0 stored" in res.stdout, res.output
    res = invoke("config", "no_such_thing")
    assert res.exit_code == 2 and "supervised" in res.output  # the error lists the shipped names


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"data": {"source": "digits", "k": 3}}, ("unknown key 'data.k'", "synthetic world", "valid keys")),
        ({"data": {"source": "imagenet"}}, ("data.source='imagenet' is not a data source", "digits")),
        ({"data": {"name": "digits"}}, ("unknown key 'data.name'", "data.source")),
    ],
    ids=["synthetic-only-key-on-real-data", "unknown-source", "old-real-data-schema"],
)
def test_bad_data_section_is_one_paragraph_exit_2_and_no_store(tmp_path, raw, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    store = tmp_path / "runs.db"
    msg = assert_user_error(invoke("run", path, "--store", store), *needles)
    assert "\n\n" not in msg
    assert not store.exists()  # refused before anything was created or computed


def test_a_cifar_batch_that_would_run_code_is_exit_2_and_runs_nothing(tmp_path):
    import pickle

    from test_datasets import _RunsACommand, make_cifar_files

    make_cifar_files(tmp_path / "data")
    marker = tmp_path / "ran"
    with (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2").open("wb") as fh:
        pickle.dump({b"data": _RunsACommand(marker), b"labels": [0]}, fh, protocol=2)
    path = tmp_path / "cifar.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "cifar10", "root": str(tmp_path / "data")}}))
    store = tmp_path / "runs.db"
    assert_user_error(invoke("run", path, "--store", store), "data_batch_2", "Nothing in it was run")
    assert not marker.exists()
    assert not store.exists() or not ResultStore(store, read_only=True).run_ids()


@pytest.mark.parametrize(
    ("claims", "needles"),
    [("x", ("--claims 'x'", "not a list of integers")), ("1,9", ("--claims '1,9'", "no claim 9")), ("", ("--claims",))],
)
def test_claims_errors_name_the_claims_option_and_every_unknown_row(tmp_path, claims, needles):
    err = assert_user_error(invoke("reproduce", "--claims", claims, "--store", tmp_path / "r.db"), *needles)
    assert "--seeds" not in err
    assert not (tmp_path / "r.db").exists()


def test_reproduce_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    out_file = tmp_path / "claims.txt"
    out_file.write_text("keep me")
    assert_user_error(invoke("reproduce", "--quick", "--out", out_file, "--store", tmp_path / "r.db"), "is a file")
    assert out_file.read_text() == "keep me" and not (tmp_path / "r.db").exists()


def test_reproduce_help_says_what_the_seeds_default_is():
    res = invoke("reproduce", "--help")
    text = " ".join(res.stdout.replace("│", " ").split())
    assert res.exit_code == 0 and "number of seeds (default: 3 with --quick, else 5)" in text


def test_export_to_a_folder_is_one_paragraph(stored, tmp_path):
    store, _ = stored
    assert_user_error(invoke("export", "--store", store, "--out", tmp_path), "is a folder")


def test_ctrl_c_says_how_to_resume_and_exits_130(micro_yaml_module: Path, tmp_path, monkeypatch):
    from robinherit.runs import schedule

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(schedule, "run_or_load", interrupted)
    res = invoke("run", micro_yaml_module, "--store", tmp_path / "r.db")
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.stderr and "rerun the same command to resume" in res.stderr


def test_more_than_a_thousand_runs_ask_for_yes(micro_yaml_module: Path, tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump({"base": str(micro_yaml_module), "grid": {"model.width": list(range(1, 402))},
                                    "seeds": 3}))  # fmt: skip
    store = tmp_path / "r.db"
    assert_user_error(invoke("sweep", spec, "--store", store), "1,203 runs", "--yes")
    assert_user_error(invoke("run", micro_yaml_module, "--seeds", "0-1000", "--store", store), "1,001 runs", "--yes")
    assert not store.exists()
