"""reproduce: the statistic, each claim's decision, derived-result keys, the registry, and that a non-purifying
pre-training fails the claims."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from robinherit.config import ExperimentConfig
from robinherit.errors import ConfigError, DataError, RobinheritError
from robinherit.reproduce import (
    CLAIMS,
    AuxJob,
    Claim,
    ClaimSpec,
    Evidence,
    Figure,
    ReproduceSettings,
    paired_stats,
    reproduce,
    run_aux,
    write_claims,
)
from robinherit.reproduce.claims import c4_clean_head, c5_mechanism, c6_cost
from robinherit.reproduce.driver import claim_row, per_arm
from robinherit.reproduce.jobs import derived_job
from robinherit.reproduce.report import write_report
from robinherit.reproduce.spec import SideCondition, Statistic
from robinherit.runs.store import ResultStore
from robinherit.world.sparse_coding import make_world

# A small world where the phenomenon still shows (see docs/claims.md), fast enough for CI.
TINY = (
    "data.d=16",
    "model.width=32",
    "pretrain.steps=400",
    "pretrain.batch_size=128",
    "downstream.epochs=25",  # 2 minibatches of 256 per epoch over n_train 500
    "downstream.n_train=500",
    "eval.n_test=300",
    "eval.steps=10",
    "eval.restarts=1",
    "eval.eps_grid=[0,0.25,0.5,1.0]",
)
SEEDS = (0, 1, 2)
SUPERVISED_ROWS = ("1", "3", "4", "5", "6")  # the contrastive rows 3c/4c need contrastive runs: not here


# --------------------------------------------------------------------------------------------- statistics


def test_paired_stats_matches_t_interval():
    d = [0.5, 0.6, 0.4, 0.55]
    mean, (lo, hi), p = paired_stats(d)
    ref = stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=stats.sem(d))
    assert mean == pytest.approx(np.mean(d))
    assert (lo, hi) == pytest.approx(ref)
    assert p == pytest.approx(stats.ttest_1samp(d, 0, alternative="greater").pvalue)
    # the claimed direction matters: negative differences give a large p and an interval below zero
    _, (_lo2, hi2), p2 = paired_stats([-x for x in d])
    assert hi2 < 0 and p2 > 0.5


def test_paired_stats_on_hand_data():
    # d = 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.302653, half width 4.302653 * 0.1 / sqrt(3) = 0.248414;
    # t statistic 0.2 / (0.1 / sqrt(3)) = 3.4641, one-sided p = 0.03709
    mean, (lo, hi), p = paired_stats([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert (lo, hi) == pytest.approx((0.2 - 0.248414, 0.2 + 0.248414), abs=1e-6)
    assert p == pytest.approx(0.03709, abs=1e-5)


def test_paired_stats_degenerate_cases():
    assert paired_stats([0.3, 0.3, 0.3]) == (pytest.approx(0.3), (pytest.approx(0.3), pytest.approx(0.3)), 0.0)
    _mean, (lo, hi), _ = paired_stats([0.2])
    assert lo == -np.inf and hi == np.inf  # one seed never passes a claim


def _row(differences, side_ok=True):
    return Claim("x", 0, "x", "x", {}, list(differences), side_condition="s", side_ok=side_ok).to_dict()


def test_a_claim_passes_only_when_its_interval_excludes_zero_and_its_side_condition_holds():
    assert _row([0.5, 0.6, 0.4])["passed"]
    # every seed positive and p < 0.05 one-sided, yet the 95% interval includes 0 (see the hand data above)
    assert not _row([0.1, 0.2, 0.3])["passed"]
    assert not _row([-0.5, -0.6, -0.4])["passed"]  # wrong direction
    assert not _row([0.5, 0.6, 0.4], side_ok=False)["passed"]
    assert not _row([0.5])["passed"]  # one seed has no interval
    assert _row([0.5, 0.6, 0.4])["status"] == "pass" and _row([0.1, 0.2, 0.3])["status"] == "fail"


def _rec(top1, frac_pure, robust=0.9, clean_acc=0.95):
    heads = {"clean_head": {"clean_acc": clean_acc, "robust_acc": {"0.25": robust}}}
    return {"purification": {"top1_share_mean": top1, "frac_pure": {"0.5": frac_pure}}, "downstream": heads}


def _evidence(family, at, clean):
    settings = ReproduceSettings(seeds=tuple(range(len(at))), quick=False)
    return Evidence(settings, store=None, configs={}, records={family: {"at": at, "clean": clean}})


def test_purification_fails_when_at_nodes_are_purer_but_not_pure():
    spec = CLAIMS["1"]
    pure = _evidence("supervised", [_rec(0.8, 0.9), _rec(0.82, 0.95), _rec(0.79, 0.9)], [_rec(0.2, 0.0)] * 3)
    row = claim_row(spec, pure, tick=lambda _w: None)
    assert row["passed"] and row["side_condition_ok"]
    assert row["per_seed"]["difference"] == pytest.approx([0.6, 0.62, 0.59])
    # the same consistent difference, but most AT nodes mix features (a linear network trained adversarially)
    purer = _evidence("supervised", [_rec(0.3, 0.1), _rec(0.32, 0.1), _rec(0.31, 0.0)], [_rec(0.2, 0.0)] * 3)
    row = claim_row(spec, purer, tick=lambda _w: None)
    assert row["ci95"][0] > 0 and not row["side_condition_ok"] and not row["passed"]


def test_inheritance_fails_when_the_head_on_at_features_loses_its_accuracy_under_attack():
    spec = CLAIMS["3"]
    fragile = [_rec(0.8, 0.9, robust=r, clean_acc=0.95) for r in (0.5, 0.55, 0.52)]  # kept 0.55 < 0.8
    ev = _evidence("supervised", fragile, [_rec(0.2, 0.0, robust=r) for r in (0.1, 0.12, 0.08)])
    row = claim_row(spec, ev, tick=lambda _w: None)
    assert row["ci95"][0] > 0 and not row["side_condition_ok"] and not row["passed"]


# --------------------------------------------------------------------------------------------- a small world


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    store = ResultStore(out / "runs.db")
    settings = ReproduceSettings(seeds=SEEDS, quick=False, overrides=TINY, rows=SUPERVISED_ROWS)
    result = reproduce(settings, store)
    write_claims(result, out)
    write_report(result, store, out)
    return out, result, store, settings


def _claims(result):
    return {c["id"]: c for c in result.claims}


def test_claims_json_holds_the_rows_and_their_statistics(good):
    out, result, _, _ = good
    data = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in data["claims"]] == list(SUPERVISED_ROWS)
    for c in data["claims"]:
        assert c["n_seeds"] == len(SEEDS) and c["status"] in ("pass", "fail")
        d = c["per_seed"]["difference"]
        ref = stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=stats.sem(d))
        assert c["effect"] == pytest.approx(np.mean(d)) and c["ci95"] == pytest.approx(list(ref))
    # the differences are the claimed comparisons of the runs, AT minus clean on the same seed
    recs = result.records["supervised"]
    c1, c3 = _claims(result)["1"], _claims(result)["3"]
    at, clean = recs["at"], recs["clean"]
    assert c1["per_seed"]["difference"] == pytest.approx(
        [
            a["purification"]["top1_share_mean"] - b["purification"]["top1_share_mean"]
            for a, b in zip(at, clean, strict=True)
        ]
    )
    assert c3["per_seed"]["difference"] == pytest.approx(
        [
            a["downstream"]["clean_head"]["robust_acc"]["0.25"] - b["downstream"]["clean_head"]["robust_acc"]["0.25"]
            for a, b in zip(at, clean, strict=True)
        ]
    )
    assert [r["seed"] for r in at] == [r["seed"] for r in clean] == list(SEEDS)


def test_purification_and_inheritance_pass_on_the_small_world(good):
    _, result, _, _ = good
    claims = _claims(result)
    for cid in ("1", "3", "5"):
        assert claims[cid]["passed"], claims[cid]


def test_report_html_structure(good):
    import base64
    import re

    out, result, _, _ = good
    page = (out / "report.html").read_text()
    assert page.index('<table id="claims">') < page.index("<figure")  # the claims table comes first
    rows = re.findall(r"<tr class='(pass|fail)'>", page)
    assert len(rows) == len(result.claims)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    figures = re.findall(r"<figure", page)
    assert len(images) == len(figures) >= 6  # purity, heatmaps, robust curves, mechanism, cost, vs e2e
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == len(figures) and all(len(c) > 40 for c in captions)
    assert "| # | claim | passed |" in (out / "report.md").read_text()


def test_second_call_only_renders(good, monkeypatch):
    _out, result, store, settings = good
    import robinherit.runs.experiment as experiment

    def boom(*a, **k):
        raise AssertionError("a stored run was computed again")

    monkeypatch.setattr(experiment, "run_experiment", boom)
    monkeypatch.setattr(c5_mechanism, "mechanism_curve", boom)
    monkeypatch.setattr(c6_cost, "end_to_end_at", boom)
    monkeypatch.setattr(c4_clean_head, "extra_tasks", boom)
    monkeypatch.setattr(c6_cost, "clean_head_cost", boom)
    again = reproduce(settings, store)
    assert [c["effect"] for c in again.claims] == [c["effect"] for c in result.claims]
    # nothing was computed the second time, and the timing says so
    assert again.timing["worker_s"] == 0 and all(r["computed"] == 0 and r["stored"] > 0 for r in again.timing["work"])


def test_the_timing_accounts_for_every_stage_run_and_derived_result(good):
    out, result, store, settings = good
    timing = json.loads((out / "claims.json").read_text())["timing_s"]
    assert list(timing["stages"]) == [
        "planning",
        "pre-training runs (with their heads and evaluation)",
        "derived results",
        "claims (the runs a claim gathers itself, e.g. claim 7's real data; statistics)",
    ]
    assert timing["wall"] == pytest.approx(sum(timing["stages"].values())) and timing["workers"] == settings.workers
    rows = {r["what"]: r for r in timing["work"]}
    for arm in ("at", "clean"):
        recs = result.records["supervised"][arm]
        for part, label in (("pretrain", "pre-training"), ("downstream", "heads"), ("eval", "evaluation")):
            row = rows[f"supervised {arm}: {label}"]
            assert row["computed"] == len(SEEDS) and row["stored"] == 0
            assert row["worker_s"] == pytest.approx(sum(r["timing_s"][part] for r in recs))
    # every derived result computed here has its seconds, stored with its value
    jobs = [j for spec in settings.selected() for j in spec.jobs(result.evidence)]
    for kind in {j.kind for j in jobs}:
        mine = [j for j in jobs if j.kind == kind]
        stored = [store.get_aux(j.kind, j.key)["seconds"] for j in mine]
        assert rows[f"derived: {kind}"]["computed"] == len(mine) and all(s > 0 for s in stored)
        assert rows[f"derived: {kind}"]["worker_s"] == pytest.approx(sum(stored))
    assert timing["worker_s"] > 0 and timing["worker_s"] == pytest.approx(sum(r["worker_s"] for r in timing["work"]))
    assert "## Where the time went" in (out / "report.md").read_text()
    assert "<table id='work'>" in (out / "report.html").read_text()


def test_non_purifying_pretraining_fails_the_claims(tmp_path):
    # threshold 0 makes every unit linear: neither purification nor robustness can appear
    store = ResultStore(tmp_path / "runs.db")
    over = (*TINY, "model.threshold=0")
    settings = ReproduceSettings(seeds=SEEDS, quick=False, overrides=over, rows=("1", "3"))
    claims = _claims(reproduce(settings, store))
    assert not claims["1"]["passed"], claims["1"]
    assert not claims["3"]["passed"], claims["3"]


def test_claim4_averages_over_downstream_tasks(good):
    _, result, _, _ = good
    c4 = _claims(result)["4"]
    n = c4_clean_head.CLAIM4_TASKS
    assert c4["details"]["n_tasks"] == n
    for arm in ("at", "clean"):
        per_task = c4["details"][f"gap_per_task_{arm}"]
        assert len(per_task) == len(SEEDS) and all(len(t) == n for t in per_task)
        # the tasks are different problems, so the extra tasks' gaps are not one number per seed
        assert len({round(g, 6) for t in per_task for g in t[1:]}) > len(SEEDS)
        flags = c4["details"]["degenerate"][arm]
        assert all(len(t) == n for head in flags.values() for t in head)
    # the equivalence part is the clean minus adversarial head on AT features, each seed's mean over its tasks
    eq = c4["details"]["equivalence"]["differences"]
    assert eq == pytest.approx([-np.mean(t) for t in c4["details"]["gap_per_task_at"]])
    assert c4["details"]["class_prior"]["at"] == c4["details"]["class_prior"]["clean"]  # same test sets
    # the run's own task comes first, read from the run record
    rec = result.records["supervised"]["clean"][0]["downstream"]
    own = rec["adversarial_head"]["robust_acc"]["0.25"] - rec["clean_head"]["robust_acc"]["0.25"]
    assert c4["details"]["gap_per_task_clean"][0][0] == pytest.approx(own)


def test_fresh_tasks_are_new_and_fixed_by_the_seed():
    cfg = ExperimentConfig().data.model_copy(update={"d": 8})
    world = make_world(cfg, 0)
    taken = [*world.pretrain_tasks, world.downstream_task]
    tasks = [c4_clean_head.fresh_task(world, i, 0) for i in range(1, 6)]
    for w in tasks:
        assert set(w.tolist()) <= {-1.0, 1.0}
        assert not any(bool((w == t).all() or (w == -t).all()) for t in taken)
    assert len({tuple(w.tolist()) for w in tasks}) > 1
    again = [c4_clean_head.fresh_task(world, i, 0) for i in range(1, 6)]
    assert all(bool((a == b).all()) for a, b in zip(tasks, again, strict=True))


# --------------------------------------------------------------------------------------------- derived results


def test_derived_results_are_stored_one_by_one_and_failures_named(tmp_path):
    store = ResultStore(tmp_path / "runs.db")

    jobs = [AuxJob("t", str(i), f"job {i}", _square_or_fail, lambda i=i: (i,)) for i in range(4)]
    ticks: list[str] = []
    with pytest.raises(RobinheritError, match=r"1 derived result\(s\) failed \(job 2: ValueError: no 2"):
        run_aux(store, jobs, workers=1, tick=ticks.append)
    # every job but the failed one is stored, the ones after it included, with the versions and commit
    stored = [store.get_aux("t", str(i)) for i in range(4)]
    assert [s and s["value"] for s in stored] == [{"v": 0}, {"v": 1}, None, {"v": 9}]
    assert all({"versions", "git_commit"} <= set(s) for s in stored if s)
    ok = [j for j in jobs if j.key != "2"]
    out = run_aux(store, ok, workers=2, tick=ticks.append)  # all stored: nothing runs, no pool
    assert out[("t", "3")] == {"v": 9} and ticks[-1] == "job 3 (stored)"


def _square_or_fail(i: int) -> dict:
    if i == 2:
        raise ValueError("no 2")
    return {"v": i * i}


def _mechanism_job(settings):
    ev = Evidence(settings, store=None, configs={})
    return CLAIMS["5"].jobs(ev)[0]


def test_a_derived_result_is_keyed_by_what_it_reads(good, monkeypatch):
    _out, _result, store, settings = good
    job = _mechanism_job(settings)
    assert store.get_aux(job.kind, job.key) is not None  # the fixture computed it under this key
    assert job.key.startswith(settings.base("supervised").config_hash() + "/")

    with monkeypatch.context() as m:
        m.setattr(c5_mechanism, "GAMMAS", (0.0, 1.0, 3.0))
        changed = _mechanism_job(settings)
    assert changed.key != job.key and changed.params["gammas"] == [0.0, 1.0, 3.0]
    assert store.get_aux(changed.kind, changed.key) is None  # no stale hit: the new curve would be computed
    for name, value in (("EPS_REF", 0.5), ("DERIVED_VERSION", c5_mechanism.DERIVED_VERSION + 1)):
        with monkeypatch.context() as m:
            m.setattr(c5_mechanism, name, value)
            assert _mechanism_job(settings).key != job.key, name
    assert _mechanism_job(settings).key == job.key


def test_the_extra_tasks_are_one_job_per_encoder_keyed_by_the_tasks_it_stacks(good):
    _out, _result, _store, settings = good
    at, clean = [settings.base("supervised")], [settings.base("supervised").model_copy(update={"seed": 1})]
    ev = Evidence(settings, store=None, configs={"supervised": {"at": at, "clean": clean}})
    few = c4_clean_head.CleanHeadIsEnough("4", "supervised", n_tasks=3).jobs(ev)
    many = c4_clean_head.CleanHeadIsEnough("4", "supervised", n_tasks=5).jobs(ev)
    assert [j.tag for j in few] == [("at", 0), ("clean", 0)] and [j.params["indices"] for j in few] == [[1, 2]] * 2
    # the heads of a job's tasks train as one stack, whose floats depend on its members: other tasks, another key
    assert len({j.key for j in few + many}) == 4 and [j.params["indices"] for j in many] == [[1, 2, 3, 4]] * 2
    assert c4_clean_head.CleanHeadIsEnough("4", "supervised", n_tasks=1).jobs(ev) == []  # the run's own task only


def test_extra_tasks_as_a_stack_give_each_task_its_own_heads(good):
    _out, _result, store, settings = good
    cfg = settings.base("supervised")
    weights = store.artifact(cfg.config_hash(), "encoder")
    both = c4_clean_head.extra_tasks(cfg, weights, [1, 2])["tasks"]
    alone = [c4_clean_head.extra_task(cfg, weights, i) for i in (1, 2)]
    assert [t["index"] for t in both] == [1, 2]
    for t, a in zip(both, alone, strict=True):
        for kind in ("clean", "adversarial"):
            assert t[kind]["robust_acc"] == pytest.approx(a[kind]["robust_acc"], abs=1 / 300)  # one point of 300
    assert both[0]["clean"]["robust_acc"] != both[1]["clean"]["robust_acc"]  # two tasks, two problems


# --------------------------------------------------------------------------------------------- registry


def _count(cfg, weights, *, scale: float) -> dict:
    return {"value": scale * float(np.asarray(weights["W"]).shape[0]), "seed": cfg.seed}


class Dummy(ClaimSpec):
    """A claim that exists only in this test: reads the supervised AT runs and one derived job per seed."""

    id = "99"
    number = 99
    name = "dummy <claim>"
    family = "supervised"
    arms = ("at",)

    def jobs(self, ev):
        return [
            derived_job(
                "dummy",
                c,
                f"dummy seed {c.seed}",
                _count,
                lambda c=c: (c, ev.store.artifact(c.config_hash(), "encoder")),
                params={"scale": 0.5},
                version=1,
                tag=s,
            )
            for s, c in enumerate(self.cfgs(ev, "at"))
        ]

    def statistic(self, ev):
        vals = [ev.results(self.id)[s]["value"] for s in range(len(ev.settings.seeds))]
        return Statistic("Dummy: half the width is positive.", {"half_width": vals}, vals)

    def side_condition(self, ev, stat):
        return SideCondition("always", True)

    def figures(self, row, ev):
        from robinherit.reproduce.figures import plt, png

        fig, ax = plt.subplots()
        ax.plot(row["per_seed"]["half_width"])
        return [Figure("Dummy figure", png(fig), "The dummy claim's only figure, drawn by its own module.")]


def test_a_claim_added_to_the_registry_is_run_and_reported(good, monkeypatch, tmp_path):
    _out, _result, store, _settings = good
    monkeypatch.setitem(CLAIMS, "99", Dummy())
    mine = ReproduceSettings(seeds=SEEDS, quick=False, overrides=TINY, rows=("1", "99"))
    result = reproduce(mine, store)
    write_claims(result, tmp_path)
    write_report(result, store, tmp_path)
    rows = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert [r["id"] for r in rows] == ["1", "99"]
    assert rows[1]["per_seed"]["half_width"] == [16.0] * len(SEEDS) and rows[1]["passed"]
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "| 99 | dummy <claim> | PASS |" in md and "*Dummy figure*" in md
    assert "dummy &lt;claim&gt;" in page and "Figure 3. Dummy figure" in page


def test_registry_ids_are_unique_and_claims_3_and_4_cover_both_families():
    assert all(spec.id == key for key, spec in CLAIMS.items())
    assert [s.id for s in ReproduceSettings(seeds=(0,), quick=True, claims=(3, 4)).selected()] == ["3", "3c", "4", "4c"]
    assert {CLAIMS[i].family for i in ("3c", "4c")} == {"contrastive"}
    assert ReproduceSettings(seeds=(0,), quick=True, claims=(5,)).families() == ["supervised"]


# --------------------------------------------------------------------------------------------- claim 7


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ImportError("No module named 'sklearn'", name="sklearn"), "could not be imported"),
        (DataError("'data/mnist/train-images-idx3-ubyte' is missing"), "not available"),
        (ConfigError("eval.autoattack needs torchattacks; install it with ..."), "torchattacks"),
    ],
)
def test_claim7_without_its_optional_parts_is_reported_not_run(error, reason, monkeypatch, tmp_path):
    from robinherit.reproduce.claims import c7_real_data

    def missing(*a, **k):
        raise error

    monkeypatch.setattr(c7_real_data, "claim7", missing)
    store = ResultStore(tmp_path / "r.db")
    result = reproduce(ReproduceSettings(seeds=SEEDS, quick=True, claims=(7,)), store)
    write_claims(result, tmp_path)
    write_report(result, store, tmp_path)
    rows = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert [row["id"] for row in rows] == ["7", "7c"]  # --claims 7 selects both real-data rows
    for row in rows:
        assert row["status"] == "not run" and not row["passed"]
        assert reason in row["reason"] and row["fix"]
        assert row["effect"] is None and row["ci95"] == [None, None]  # strict JSON: null, not NaN
        assert f"Not run: {row['reason']}" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.html").read_text().count("<tr class='not-run'>") == 2


def test_claim7_config_mistakes_are_errors_not_a_missing_dependency(monkeypatch, tmp_path):
    from robinherit.reproduce.claims import c7_real_data

    def broken(*a, **k):
        raise ConfigError("unknown key 'eval.stpes'")

    monkeypatch.setattr(c7_real_data, "claim7", broken)
    with pytest.raises(ConfigError, match="stpes"):
        reproduce(ReproduceSettings(seeds=SEEDS, quick=True, claims=(7,)), ResultStore(tmp_path / "r.db"))


def test_claim7_is_ordinary_runs_of_the_shipped_config_with_the_pretrained_robustness(monkeypatch):
    from robinherit.config import load_config
    from robinherit.reproduce.claims import c7_real_data

    seen = []

    def fake(cfgs, store, on_record=None, **_):
        seen.extend(cfgs)
        out = []
        for c in cfgs:
            at = c.pretrain.eps > 0
            heads = {
                "clean_head": {"clean_acc": 0.9, "robust_acc": {"0.1": 0.4 if at else 0.1}},
                "adversarial_head": {"clean_acc": 0.8, "robust_acc": {"0.1": 0.5 if at else 0.3}},
            }
            rec = {
                "seed": c.seed,
                "downstream": heads,
                "pretrain": {"clean_acc": 0.95, "robust_acc": {"0.1": 0.5 if at else 0.0}, "certified_acc": {}},
                "purification": {"top1_share_mean": 0.3},
            }
            out.append(rec)
            on_record(rec, False)
        return out

    monkeypatch.setattr(c7_real_data, "run_many_or_load", fake)
    monkeypatch.setattr(c7_real_data, "representation_shifts", lambda cfgs, *_: [0.2] * len(cfgs))
    ticks = []
    out = c7_real_data.claim7([0, 1], False, None, ticks.append)
    # full mode: the shipped config with the claim's evaluation, so `robinherit run fashion_mnist_two_layer` with
    # the same --set answers the same runs from the store
    name, extra = "fashion_mnist_two_layer", list(c7_real_data.CLAIM7_SET)
    shipped = load_config(name)
    assert shipped.data.source == "fashion_mnist" and c7_real_data.CLAIM7_EPS == 0.1
    assert {c.config_hash() for c in seen} == {
        load_config(name, [*extra, f"seed={s}", f"pretrain.eps={e}"]).config_hash() for s in (0, 1) for e in (0, 0.1)
    }
    assert all(c.data == shipped.data and c.model == shipped.model for c in seen)
    assert out["per_seed"] == {"clean_pretrain": [0.1, 0.1], "at_pretrain": [0.4, 0.4]}
    assert out["extra"]["at_pretrain"]["pretrained_robust_acc"] == [0.5, 0.5]  # anything to inherit?
    assert out["extra"]["at_pretrain"]["alf_minus_slf"] == pytest.approx([0.1, 0.1])  # the clean head's distance
    assert out["extra"]["clean_pretrain"]["pretrained_certified_acc"] == [None, None]
    assert out["extra"]["at_pretrain"]["representation_shift"] == [0.2, 0.2]
    assert len(ticks) == 4
    # row 7c: the same runs with label-free contrastive pre-training, and no pre-trained classifier to report
    seen.clear()
    out = c7_real_data.claim7([0, 1], False, None, ticks.append, contrastive=True)
    assert {c.pretrain.method.value for c in seen} == {"contrastive"} and {c.pretrain.eps for c in seen} == {0, 0.1}
    assert {c.config_hash() for c in seen} == {
        load_config(name, [*extra, *c7_real_data.CLAIM7C_SET, f"seed={s}", f"pretrain.eps={e}"]).config_hash()
        for s in (0, 1)
        for e in (0, 0.1)
    }
    assert "pretrained_robust_acc" not in out["extra"]["at_pretrain"] and "contrastive" in out["statement"]
    assert out["extra"]["at_pretrain"]["alf_minus_slf"] == pytest.approx([0.1, 0.1])


def test_claim7_without_the_fashion_mnist_files_says_not_run_and_how_to_get_them(monkeypatch, tmp_path):
    from robinherit.data import datasets

    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setenv("ROBINHERIT_DATA", str(tmp_path / "nothing"))
    store = ResultStore(tmp_path / "r.db")
    result = reproduce(ReproduceSettings(seeds=SEEDS, quick=True, claims=(7,)), store)
    write_claims(result, tmp_path)
    for row in json.loads((tmp_path / "claims.json").read_text())["claims"]:
        assert row["status"] == "not run" and "Fashion-MNIST" in row["reason"]
        assert "make fashion-mnist" in row["fix"] and "ROBINHERIT_DATA" in row["fix"]


# --------------------------------------------------------------------------------------------- quick mode


def test_quick_mode_shortens_only_what_it_says():
    quick = ReproduceSettings(seeds=(0,), quick=True)
    full = ReproduceSettings(seeds=(0,), quick=False)
    assert quick.base("contrastive").pretrain.steps == full.base("contrastive").pretrain.steps // 2
    # claims 3c and 4c read both heads of the contrastive runs; 4c averages over fewer tasks in quick mode only
    assert quick.base("contrastive").downstream == full.base("contrastive").downstream
    assert (CLAIMS["4c"].tasks(quick), CLAIMS["4c"].tasks(full)) == (1, 4)
    assert CLAIMS["4"].tasks(quick) == CLAIMS["4"].tasks(full) == 4
    assert quick.base("supervised").pretrain.steps == full.base("supervised").pretrain.steps
    assert quick.base("supervised").downstream == full.base("supervised").downstream
    assert quick.base("supervised").eval.n_test == 500 < full.base("supervised").eval.n_test
    # the user's --set wins over quick mode's own settings
    mine = ReproduceSettings(seeds=(0,), quick=True, overrides=("pretrain.steps=700",))
    assert mine.base("contrastive").pretrain.steps == 700


def test_report_lists_every_evaluation_self_check_with_its_origin(good, tmp_path):
    import copy

    _out, result, store, _settings = good
    quiet = copy.copy(result)
    quiet.records = copy.deepcopy(result.records)
    for arms in quiet.records.values():
        for recs in arms.values():
            for rec in recs:
                for r in rec["downstream"].values():
                    r["warnings"] = []
    write_report(quiet, store, tmp_path / "quiet")
    assert "Self-checks: 0 warning(s)." in (tmp_path / "quiet" / "report.md").read_text()
    assert "No evaluation self-check fired" in (tmp_path / "quiet" / "report.html").read_text()

    loud = copy.copy(quiet)
    loud.records = copy.deepcopy(quiet.records)
    fam = next(iter(loud.records))
    arm = next(iter(loud.records[fam]))
    rec = loud.records[fam][arm][1]
    head = next(iter(rec["downstream"]))
    rec["downstream"][head]["warnings"] = ["robust accuracy 0.9 > clean 0.8 at eps <0.5>"]
    write_report(loud, store, tmp_path / "loud")
    md = (tmp_path / "loud" / "report.md").read_text()
    where = f"{fam} {arm} seed {rec['seed']} {head}: robust accuracy 0.9 > clean 0.8 at eps <0.5>"
    assert "Self-checks: 1 warning(s)." in md and f"- {where}" in md
    page = (tmp_path / "loud" / "report.html").read_text()
    assert "No evaluation self-check fired" not in page
    assert "at eps &lt;0.5&gt;" in page and "at eps <0.5>" not in page  # the warning is escaped in HTML


def test_jobs_a_claim_tells_apart_may_not_share_a_key(tmp_path):
    from robinherit.reproduce.driver import run_derived

    # the index reaches the job through make_args, outside its params: both tasks would get one key
    jobs = [AuxJob("t", "run/abc", f"task {i}", _square_or_fail, lambda i=i: (i,), tag=i) for i in (1, 3)]
    with pytest.raises(RobinheritError, match="share the store key run/abc"):
        run_derived({"4": jobs}, ResultStore(tmp_path / "r.db"), workers=1, tick=lambda _w: None)


def test_the_reproduce_command_prints_the_wall_time_of_each_stage(tmp_path):
    from typer.testing import CliRunner

    from robinherit.cli import app

    sets = [a for s in TINY for a in ("--set", s)]
    res = CliRunner().invoke(
        app,
        ["reproduce", "--claims", "1", "--seeds", "2", "--workers", "1", "--out", str(tmp_path / "out"),
         "--store", str(tmp_path / "r.db"), *sets],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cells = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in res.output.splitlines() if
             line.count("│") == 3}  # fmt: skip
    for stage in ("planning", "derived results", "report and figures", "total"):
        assert float(cells[stage]) >= 0, res.output
    assert float(cells["total"]) >= float(cells["report and figures"]) > 0
    timing = json.loads((tmp_path / "out" / "claims.json").read_text())["timing_s"]
    assert {r["what"] for r in timing["work"]} == {
        f"supervised {arm}: {part}" for arm in ("at", "clean") for part in ("pre-training", "heads", "evaluation")
    }
    # the printed stages are the timing's own, and the total adds the report to its wall time
    for stage in ("planning", "derived results"):
        assert float(cells[stage]) == pytest.approx(timing["stages"][stage], abs=0.051)
    assert float(cells["total"]) == pytest.approx(timing["wall"] + float(cells["report and figures"]), abs=0.11)


def test_end_to_end_at_trains_the_seeds_as_one_stack_with_the_results_of_each_alone(good, monkeypatch):
    _out, _result, _store, settings = good
    cfgs = [c.model_copy(update={"seed": s}) for c, s in zip([settings.base("supervised")] * 2, (0, 1), strict=True)]
    stacks = []
    real = c6_cost.batched.pretrain_stacked
    monkeypatch.setattr(
        c6_cost.batched, "pretrain_stacked", lambda net, *a, **k: stacks.append(net.W.shape[0]) or real(net, *a, **k)
    )
    together = c6_cost.end_to_end_at(cfgs)["per_seed"]
    assert stacks == [2]
    alone = [c6_cost.end_to_end_at([c])["per_seed"][0] for c in cfgs]
    assert stacks == [2, 1, 1]  # a seed alone is a stack of one (batched.pretrain_one)
    for t, a in zip(together, alone, strict=True):
        assert t["grad_evals"] == a["grad_evals"] and t["clean_acc"] == pytest.approx(a["clean_acc"], abs=0.01)
        assert t["robust_acc"] == pytest.approx(a["robust_acc"], abs=1 / 300)  # at most one test point of 300
    assert together[0]["robust_acc"] != together[1]["robust_acc"]  # two seeds, two networks: a swap would show
    # each seed's time is its share of the stack's
    assert together[0]["seconds"] == together[1]["seconds"] > 0
    # the job is keyed by every seed's run: other seeds, another key
    ev = Evidence(settings, store=None, configs={"supervised": per_arm(settings, "supervised")})
    key = next(j.key for j in CLAIMS["6"].jobs(ev) if j.kind == "end_to_end_at")
    fewer = dataclasses.replace(settings, seeds=settings.seeds[:2])
    ev2 = Evidence(fewer, store=None, configs={"supervised": per_arm(fewer, "supervised")})
    assert key != next(j.key for j in CLAIMS["6"].jobs(ev2) if j.kind == "end_to_end_at")
