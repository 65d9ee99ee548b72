"""reproduce: statistics, the report's structure, and that a non-purifying pre-training fails the claims."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from scipy import stats

from robinherit import reproduce as rep
from robinherit.config import ExperimentConfig
from robinherit.data import make_world
from robinherit.errors import RobinheritError
from robinherit.report import write_report
from robinherit.reproduce import ReproduceSettings, paired_stats, reproduce, write_claims
from robinherit.store import ResultStore

# A small world where the phenomenon still shows (see docs/claims.md), fast enough for CI.
TINY = (
    "data.d=16",
    "model.width=32",
    "pretrain.steps=400",
    "pretrain.batch_size=128",
    "downstream.steps=100",
    "downstream.n_train=500",
    "eval.n_test=300",
    "eval.steps=10",
    "eval.restarts=1",
    "eval.eps_grid=[0,0.25,0.5,1.0]",
)
SEEDS = (0, 1, 2)


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


def test_paired_stats_degenerate_cases():
    assert paired_stats([0.3, 0.3, 0.3]) == (pytest.approx(0.3), (pytest.approx(0.3), pytest.approx(0.3)), 0.0)
    _mean, (lo, hi), _ = paired_stats([0.2])
    assert lo == -np.inf and hi == np.inf  # one seed never passes a claim


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    store = ResultStore(out / "runs.db")
    settings = ReproduceSettings(seeds=SEEDS, quick=False, overrides=TINY, claims=(1, 3, 4, 5, 6))
    result = reproduce(settings, store)
    write_claims(result, out)
    write_report(result, store, out)
    return out, result, store, settings


def _claims(result):
    return {c["id"]: c for c in result.claims}


def test_claims_json_shape(good):
    out, _result, _, _ = good
    data = json.loads((out / "claims.json").read_text())
    assert [c["id"] for c in data["claims"]] == [1, 3, 4, 5, 6]
    for c in data["claims"]:
        assert set(c) >= {"id", "statement", "passed", "effect", "ci95", "p_value", "n_seeds", "per_seed"}
        assert c["n_seeds"] == len(SEEDS)
        lo, hi = c["ci95"]
        assert lo <= c["effect"] <= hi
        assert c["passed"] == (lo > 0 and c["side_condition_ok"])


def test_purification_and_inheritance_pass_on_the_small_world(good):
    _, result, _, _ = good
    claims = _claims(result)
    assert claims[1]["passed"], claims[1]
    assert claims[3]["passed"], claims[3]
    assert claims[5]["passed"], claims[5]


def test_report_html_structure(good):
    out, result, _, _ = good
    page = (out / "report.html").read_text()
    # the claims table comes before the first figure
    assert page.index('<table id="claims">') < page.index("<figure")
    rows = re.findall(r"<tr class='(pass|fail)'>", page)
    assert len(rows) == len(result.claims)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    figures = re.findall(r"<figure", page)
    assert len(images) == len(figures) >= 5
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == len(figures) and all(len(c) > 40 for c in captions)
    md = (out / "report.md").read_text()
    assert "| # | claim | passed |" in md


def test_second_call_only_renders(good, monkeypatch):
    _out, result, store, settings = good
    import robinherit.experiment as experiment

    def boom(*a, **k):
        raise AssertionError("a stored run was computed again")

    monkeypatch.setattr(experiment, "run_experiment", boom)
    monkeypatch.setattr(rep, "mechanism_curve", boom)
    monkeypatch.setattr(rep, "end_to_end_at", boom)
    monkeypatch.setattr(rep, "extra_task", boom)
    monkeypatch.setattr(rep, "clean_head_cost", boom)
    again = reproduce(settings, store)
    assert [c["effect"] for c in again.claims] == [c["effect"] for c in result.claims]


def test_non_purifying_pretraining_fails_the_claims(tmp_path):
    # threshold 0 makes every unit linear: neither purification nor robustness can appear
    store = ResultStore(tmp_path / "runs.db")
    settings = ReproduceSettings(seeds=SEEDS, quick=False, overrides=(*TINY, "model.threshold=0"), claims=(1, 3, 4))
    claims = _claims(reproduce(settings, store))
    assert not claims[1]["passed"], claims[1]
    assert not claims[3]["passed"], claims[3]


def test_claim4_averages_the_gap_over_downstream_tasks(good):
    _, result, _, _ = good
    c4 = _claims(result)[4]
    assert c4["details"]["n_tasks"] == rep.CLAIM4_TASKS
    for arm, key in (("at", "gap_on_at_features"), ("clean", "gap_on_clean_features")):
        per_task = c4["details"][f"gap_per_task_{arm}"]
        assert len(per_task) == len(SEEDS) and all(len(t) == rep.CLAIM4_TASKS for t in per_task)
        assert c4["per_seed"][key] == pytest.approx([np.mean(t) for t in per_task])
        # the tasks are different problems, so their gaps are not all the same number
        assert len({round(g, 6) for t in per_task for g in t}) > len(SEEDS)
    # the run's own task comes first, read from the run record
    rec = result.records["supervised"]["clean"][0]["downstream"]
    own = rec["adversarial_head"]["robust_acc"]["0.25"] - rec["clean_head"]["robust_acc"]["0.25"]
    assert c4["details"]["gap_per_task_clean"][0][0] == pytest.approx(own)


def test_fresh_tasks_are_new_and_fixed_by_the_seed():
    cfg = ExperimentConfig().data.model_copy(update={"d": 8})
    world = make_world(cfg, 0)
    taken = [*world.pretrain_tasks, world.downstream_task]
    tasks = [rep.fresh_task(world, i, 0) for i in range(1, 6)]
    for w in tasks:
        assert set(w.tolist()) <= {-1.0, 1.0}
        assert not any(bool((w == t).all() or (w == -t).all()) for t in taken)
    assert len({tuple(w.tolist()) for w in tasks}) > 1
    again = [rep.fresh_task(world, i, 0) for i in range(1, 6)]
    assert all(bool((a == b).all()) for a, b in zip(tasks, again, strict=True))


def test_derived_results_are_stored_one_by_one_and_failures_named(tmp_path):
    store = ResultStore(tmp_path / "runs.db")

    jobs = [rep.AuxJob("t", str(i), f"job {i}", _square_or_fail, lambda i=i: (i,)) for i in range(4)]
    ticks: list[str] = []
    with pytest.raises(RobinheritError, match=r"1 derived result\(s\) failed \(job 2: ValueError: no 2"):
        rep.run_aux(store, jobs, workers=1, tick=ticks.append)
    # every job but the failed one is stored, the ones after it included
    assert [store.get_aux("t", str(i)) for i in range(4)] == [{"v": 0}, {"v": 1}, None, {"v": 9}]
    ok = [j for j in jobs if j.key != "2"]
    out = rep.run_aux(store, ok, workers=2, tick=ticks.append)  # all stored: nothing runs, no pool
    assert out[("t", "3")] == {"v": 9} and ticks[-1] == "job 3 (stored)"


def _square_or_fail(i: int) -> dict:
    if i == 2:
        raise ValueError("no 2")
    return {"v": i * i}


def test_quick_mode_shortens_only_what_it_says():
    quick = ReproduceSettings(seeds=(0,), quick=True)
    full = ReproduceSettings(seeds=(0,), quick=False)
    assert quick.base("contrastive").pretrain.steps == full.base("contrastive").pretrain.steps // 2
    assert [h.value for h in quick.base("contrastive").downstream.heads] == ["clean"]
    assert len(full.base("contrastive").downstream.heads) == 2
    assert quick.base("supervised").pretrain.steps == full.base("supervised").pretrain.steps
    assert quick.base("supervised").downstream == full.base("supervised").downstream
    assert quick.base("supervised").eval.n_test == 500 < full.base("supervised").eval.n_test
    # the user's --set wins over quick mode's own settings
    mine = ReproduceSettings(seeds=(0,), quick=True, overrides=("pretrain.steps=700",))
    assert mine.base("contrastive").pretrain.steps == 700


def test_report_lists_every_evaluation_self_check_with_its_origin(good, tmp_path):
    import copy

    _out, result, store, _settings = good
    quiet = copy.deepcopy(result)
    for arms in quiet.records.values():
        for recs in arms.values():
            for rec in recs:
                for r in rec["downstream"].values():
                    r["warnings"] = []
    write_report(quiet, store, tmp_path / "quiet")
    assert "Self-checks: 0 warning(s)." in (tmp_path / "quiet" / "report.md").read_text()
    assert "No evaluation self-check fired" in (tmp_path / "quiet" / "report.html").read_text()

    loud = copy.deepcopy(quiet)
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
