"""Claim 6, cost (Xing et al., AISTATS 2024, arXiv 2401.15248, whose motivation is that adversarial training
costs about 20x clean training, Rice et al. 2020): once a robust encoder exists, a robust downstream model
through inheritance (a clean head on frozen AT features) costs a fraction of end-to-end adversarial training on
the downstream task, at comparable robust accuracy.

Effect per seed: 1 - (wall time of the clean head) / (wall time of end-to-end AT). Wall time is measured, so this
effect is the one number that differs between two identical runs. The seeds' end-to-end networks train as one stack
(``robinherit.training.stacked``, as the pre-training runs of a reproduce do), and each seed's end-to-end time is its
share of
the stack's wall time: the reference is end-to-end AT as fast as the toolkit trains it, which only makes the claim
harder. The clean head is timed alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from robinherit.config import ExperimentConfig, HeadKind
from robinherit.data.sources import Split, SyntheticSource
from robinherit.evaluation.robust import evaluate
from robinherit.models.two_layer import build_model
from robinherit.ops.losses import multilabel_margin
from robinherit.records import eps_key
from robinherit.reproduce.jobs import AuxJob, derived_job, encoder_weights
from robinherit.reproduce.spec import EPS_REF, ClaimSpec, Evidence, Figure, SideCondition, Statistic, robust_at
from robinherit.runs.experiment import fit_head, frozen_encoder
from robinherit.runs.schedule import group_configs
from robinherit.seeding import generator
from robinherit.training import stacked as batched
from robinherit.training.heads import head_rows
from robinherit.training.pretraining import pretrain_supervised
from robinherit.world.sparse_coding import Batch, make_world

COST_ROBUST_TOLERANCE = 0.05  # inheritance may fall this far short of end-to-end AT in robust accuracy
DERIVED_VERSION = 3  # bump when end_to_end_at or clean_head_cost computes something else (2: head rows; 3: stacked)


class _DownstreamStream:
    """Pre-training batches labelled with the *downstream* task: end-to-end AT trains on it directly."""

    def __init__(self, cfg: ExperimentConfig):
        self.world = make_world(cfg.data, cfg.seed)
        self.g = generator(cfg.seed, "e2e-batches")
        self.n = cfg.pretrain.batch_size
        self.dev = torch.device(cfg.device)

    def next(self) -> Batch:
        x, z = self.world.sample(self.n, self.g)
        y = self.world.downstream_labels(z).float()[:, None]  # (n, 1) one binary task
        return Batch(x.to(self.dev), y.to(self.dev), z.to(self.dev))


def end_to_end_at(cfgs: Sequence[ExperimentConfig]) -> dict[str, Any]:
    """A fresh network per config (one per seed), trained adversarially on the downstream task itself: the reference
    that inheritance saves. Configs that stack (``robinherit.runs.schedule.group_configs``) train as one stack; any
    other config alone. Returns ``{"per_seed": [...]}`` in the order of ``cfgs``, each with its share of the wall
    time."""
    models = [build_model(c.data.d, c.model, n_out=1, g=generator(c.seed, "e2e-init")).to(c.device) for c in cfgs]
    seconds: list[float] = [0.0] * len(cfgs)
    for group in group_configs(cfgs):
        t0 = time.perf_counter()
        if len(group) > 1:
            net = batched.StackedTwoLayer([models[i] for i in group]).to(cfgs[group[0]].device)
            batched.pretrain_stacked(net, [_DownstreamStream(cfgs[i]) for i in group], [cfgs[i] for i in group])
            net.unstack([models[i] for i in group])
        else:
            pretrain_supervised(models[group[0]], _DownstreamStream(cfgs[group[0]]), cfgs[group[0]])
        share = (time.perf_counter() - t0) / len(group)
        for i in group:
            seconds[i] = share
    return {"per_seed": [_e2e_result(c, m, t) for c, m, t in zip(cfgs, models, seconds, strict=True)]}


def _e2e_result(cfg: ExperimentConfig, model: nn.Module, seconds: float) -> dict[str, Any]:
    world = make_world(cfg.data, cfg.seed)
    dev = torch.device(cfg.device)
    model.freeze().eval()
    x_te, z_te = world.sample(cfg.eval.n_test, generator(cfg.seed, "test"))
    res = evaluate(
        model,
        x_te.to(dev),
        world.downstream_labels(z_te).float()[:, None].to(dev),
        multilabel_margin,
        eps_grid=cfg.eval.eps_grid,
        norm=cfg.eval.norm,
        steps=cfg.eval.steps,
        restarts=cfg.eval.restarts,
        g=generator(cfg.seed, "eval-e2e", dev),
    )
    p = cfg.pretrain
    # Example-gradient evaluations: each step runs the attack's steps plus the training step on a batch.
    grads = p.steps * p.batch_size * ((p.attack_steps if p.eps > 0 else 0) + 1)
    return {"seconds": seconds, "grad_evals": grads, "clean_acc": res.clean_acc, "robust_acc": res.robust_acc}


def clean_head_cost(cfg: ExperimentConfig, weights: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Wall time and example-gradient evaluations of a clean head on a frozen, already pre-trained encoder
    (``weights``: the stored encoder artifact {"W", "b"} of the AT run)."""
    world = make_world(cfg.data, cfg.seed)
    source = SyntheticSource(world, cfg.seed)
    enc = frozen_encoder(cfg, weights, source)
    x_tr, z_tr = world.sample(cfg.downstream.n_train, generator(cfg.seed, "downstream-train"))
    t0 = time.perf_counter()
    fit_head(cfg, enc, source, HeadKind.clean, Split(x_tr, world.downstream_labels(z_tr), 2))
    seconds = time.perf_counter() - t0
    # Features are computed once (n_train encoder passes); then each head step is a pass of the head alone over
    # its rows: the whole training set, or a minibatch.
    rows = head_rows(cfg.downstream.n_train, cfg.downstream)
    return {"seconds": seconds, "grad_evals": cfg.downstream.n_train + rows}


class Cost(ClaimSpec):
    id = "6"
    number = 6
    name = "cost"
    family = "supervised"
    arms = ("at",)  # the AT encoders and their clean heads' robust accuracy

    def jobs(self, ev: Evidence) -> list[AuxJob]:
        at = self.cfgs(ev, "at")
        # One job for every seed's end-to-end network (a stack), keyed by all their run ids: the longest derived
        # job, first on the pool.
        e2e = [
            derived_job(
                "end_to_end_at",
                at,
                f"claim 6: end-to-end AT, seeds {', '.join(str(c.seed) for c in at)}",
                end_to_end_at,
                lambda: (at,),
                params={},
                version=DERIVED_VERSION,
                tag="e2e",
                weight=10.0 * len(at),
            )
        ]
        heads = [
            derived_job(
                "clean_head_cost",
                c,
                f"claim 6: clean-head cost seed {c.seed}",
                clean_head_cost,
                lambda c=c: (c, encoder_weights(ev.store, c)),
                params={},
                version=DERIVED_VERSION,
                tag=("head", s),
                weight=0.5,
            )
            for s, c in enumerate(at)
        ]
        return e2e + heads

    def parts(self, ev: Evidence) -> tuple[list[dict], list[dict]]:
        res = ev.results(self.id)
        n = len(ev.settings.seeds)
        return res["e2e"]["per_seed"], [res["head", s] for s in range(n)]

    def statistic(self, ev: Evidence) -> Statistic:
        e2e, heads = self.parts(ev)
        frac_time = [h["seconds"] / e["seconds"] for h, e in zip(heads, e2e, strict=True)]
        return Statistic(
            "Cost: once a robust encoder exists, a robust downstream model through inheritance (clean head on frozen "
            "AT features) costs a fraction of end-to-end adversarial training on the downstream task "
            "(effect = 1 - wall-time fraction), at comparable robust accuracy.",
            {
                "clean_head_seconds": [h["seconds"] for h in heads],
                "end_to_end_at_seconds": [e["seconds"] for e in e2e],
                "inheritance_robust": [robust_at(r, "clean") for r in self.runs(ev, "at")],
                "end_to_end_robust": [e["robust_acc"][eps_key(EPS_REF)] for e in e2e],
            },
            [1.0 - f for f in frac_time],
            details={
                "clean_head_grad_evals": heads[0]["grad_evals"],
                "end_to_end_grad_evals": e2e[0]["grad_evals"],
                "time_fraction": frac_time,
            },
        )

    def side_condition(self, ev: Evidence, stat: Statistic) -> SideCondition:
        ps = stat.per_seed
        shortfall = float(np.mean(ps["end_to_end_robust"]) - np.mean(ps["inheritance_robust"]))
        return SideCondition(
            f"inheritance robust accuracy within {COST_ROBUST_TOLERANCE} of end-to-end AT (shortfall {shortfall:.3f})",
            shortfall <= COST_ROBUST_TOLERANCE,
        )

    def figures(self, row: dict[str, Any], ev: Evidence) -> list[Figure]:
        e2e, _ = self.parts(ev)
        return [
            Figure("Cost: inheritance vs end-to-end adversarial training", *cost_figure(row)),
            Figure("Inheritance vs end-to-end AT: robust accuracy vs eps", *versus_e2e(self.runs(ev, "at"), e2e)),
        ]


def cost_figure(row: dict[str, Any]) -> tuple[bytes, str]:
    from robinherit.reproduce.figures import COLORS, plt, png

    ps, d = row["per_seed"], row["details"]
    head_t, e2e_t = np.array(ps["clean_head_seconds"]), np.array(ps["end_to_end_at_seconds"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = ["clean head on\nAT features", "end-to-end AT\non downstream"]
    for ax, vals, ylabel in (
        (axes[0], [head_t, e2e_t], "downstream wall time (s)"),
        (axes[1], [[d["clean_head_grad_evals"]], [d["end_to_end_grad_evals"]]], "example-gradient evaluations"),
    ):
        means = [float(np.mean(v)) for v in vals]
        ax.bar(labels, means, color=[COLORS["AT"], COLORS["e2e"]])
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        for i, v in enumerate(means):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    frac = float(np.mean(head_t / e2e_t))
    caption = (
        f"Cost of a robust downstream model once a robust encoder exists: a clean head takes {frac:.1%} of the wall "
        f"time of end-to-end adversarial training on the downstream task (robust accuracy at eps {EPS_REF}: "
        f"{np.mean(ps['inheritance_robust']):.2f} vs {np.mean(ps['end_to_end_robust']):.2f})."
    )
    return png(fig), caption


def versus_e2e(at_runs: list[dict], e2e: list[dict]) -> tuple[bytes, str]:
    """The clean head on AT features (claim 3's curve) next to end-to-end AT, over the whole eps grid."""
    from robinherit.reproduce.claims.c3_inheritance import head_curve
    from robinherit.reproduce.figures import COLORS, mean_ci, plt, png

    fig, ax = plt.subplots(figsize=(6.4, 4))
    x, mean_inh, half = head_curve(at_runs, "clean")
    ax.errorbar(
        x, mean_inh, yerr=half, marker="o", ms=3, capsize=2, color=COLORS["AT"], label="AT pre-train + clean head"
    )
    keys = list(e2e[0]["robust_acc"])
    mean_e2e, half = mean_ci(np.array([[e["robust_acc"][k] for k in keys] for e in e2e]))
    x_e2e = np.array([float(k) for k in keys])
    ax.errorbar(
        x_e2e,
        mean_e2e,
        yerr=half,
        fmt=":",
        lw=2,
        capsize=2,
        color=COLORS["e2e"],
        label="end-to-end AT on the downstream task",
    )
    ax.axvline(EPS_REF, color="#999", lw=0.8)
    ax.set_xlabel("l2 attack budget eps (PGD with restarts); bars: 95% interval over seeds")
    ax.set_ylabel("downstream robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, frameon=False)
    caption = (
        "Downstream robust accuracy against the attack budget (mean and 95% interval over seeds): a clean head on "
        f"adversarially pre-trained features ({np.interp(EPS_REF, x, mean_inh):.2f} at eps {EPS_REF}) tracks "
        f"end-to-end adversarial training on the downstream task ({np.interp(EPS_REF, x_e2e, mean_e2e):.2f})."
    )
    return png(fig), caption


CLAIM = Cost()
