"""Claim 4, a clean head is enough (Xing et al., AISTATS 2024, arXiv 2401.15248; the SLF vs ALF protocols of
robust self-supervised benchmarks): on adversarially pre-trained features an adversarially trained head adds
little robustness over a clean head, while on clean features the gap is large. Stated for supervised and for
contrastive pre-training: rows "4" (configs/supervised.yaml) and "4c" (configs/contrastive.yaml).

Effect per seed: (adversarial-head minus clean-head robust accuracy at eps EPS_REF) on clean features minus the
same on AT features, each seed's gap averaged over downstream tasks: the run's own and ``n_tasks - 1`` fresh
ones on the same inputs (:func:`extra_task`). The gap depends on the task as much as on the seed (measured on
6 seeds x 4 tasks by scripts/claim4_tasks.py: sd 0.073 between tasks of one seed, 0.037 between seeds' means),
so one task per seed left 3-seed intervals that crossed zero although every seed's gap was positive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robinherit.config import ExperimentConfig, HeadKind
from robinherit.data.sources import SyntheticSource
from robinherit.evaluation.robust import evaluate
from robinherit.ops.losses import class_margin
from robinherit.records import eps_key
from robinherit.reproduce.jobs import AuxJob, derived_job, encoder_weights
from robinherit.reproduce.spec import EPS_REF, ClaimSpec, Evidence, SideCondition, Statistic, robust_at
from robinherit.runs.experiment import frozen_encoder
from robinherit.seeding import generator
from robinherit.training.heads import train_heads
from robinherit.world.sparse_coding import World, make_world, sign_vectors

CLEAN_HEAD_TOLERANCE = 0.05  # the adversarial head's largest mean gain on AT features that is "little"
CLAIM4_TASKS = 4  # downstream tasks per seed, the run's own included
# Quick mode, contrastive row: the run's own task only. Each extra task trains an adversarial head (about 19 s of CPU
# on the shared 2-core machine where this was measured, with the full-batch heads of then; about 1 s with the
# shipped 25 epochs of minibatches), and on contrastive features the gap varies far less
# between tasks (sd 0.035 within a seed, clean features, seeds 0-2 x 4 tasks) than on supervised ones (0.073):
# the own task alone gave +0.339 [+0.260, +0.417] against +0.322 [+0.311, +0.334] over 4 (docs/claims.md).
CLAIM4_TASKS_QUICK_CONTRASTIVE = 1
DERIVED_VERSION = 2  # bump when extra_tasks computes something else (2: the tasks' heads as stacks)


def fresh_task(world: World, index: int, seed: int) -> Tensor:
    """Downstream task number ``index`` >= 1 of a seed's world: a +-1 vector that is none of the pre-training
    tasks, the run's own downstream task, or their negations."""
    g = generator(seed, f"downstream-task-{index}")
    taken = [*world.pretrain_tasks, world.downstream_task]
    while True:
        w = sign_vectors(1, world.cfg.D, g)[0]
        if not any(torch.equal(w, t) or torch.equal(w, -t) for t in taken):
            return w


def extra_tasks(
    cfg: ExperimentConfig, weights: dict[str, np.ndarray], indices: Sequence[int], eps_ref: float = EPS_REF
) -> dict[str, Any]:
    """Clean and adversarial heads on the downstream tasks ``indices`` (see :func:`fresh_task`) of the frozen
    encoder, trained and tested on the run's own downstream inputs relabelled, evaluated as the run's heads are (up
    to ``eps_ref``; no certified bound, and no flip check: only the accuracies are kept, and the check's attack comes
    after the grid's, so the accuracies are the same without it). The tasks' heads of each kind train as one stack
    (``downstream.train_heads``). Returns ``{"tasks": [...]}`` in the order of ``indices``."""
    world = make_world(cfg.data, cfg.seed)
    dev = torch.device(cfg.device)
    source = SyntheticSource(world, cfg.seed)
    enc = frozen_encoder(cfg, weights, source)
    x_tr, z_tr = world.sample(cfg.downstream.n_train, generator(cfg.seed, "downstream-train"))
    x_te, z_te = world.sample(cfg.eval.n_test, generator(cfg.seed, "test"))
    tasks = [dataclasses.replace(world, downstream_task=fresh_task(world, i, cfg.seed)) for i in indices]
    x_tr, x_te = x_tr.to(dev), x_te.to(dev)
    y_tr = [w.downstream_labels(z_tr).to(dev) for w in tasks]
    y_te = [w.downstream_labels(z_te).to(dev) for w in tasks]
    grid = tuple(e for e in cfg.eval.eps_grid if e <= eps_ref) or (eps_ref,)
    out: list[dict[str, Any]] = [{"index": i} for i in indices]
    for kind in (HeadKind.clean, HeadKind.adversarial):
        heads = train_heads(
            enc,
            cfg.model.width,
            2,
            x_tr,
            y_tr,
            kind,
            cfg.downstream,
            norm=cfg.eval.norm,
            gens=[generator(cfg.seed, f"head-{kind.value}-task-{i}", dev) for i in indices],
            clip=source.clip,
        )
        for i, y, head, res in zip(indices, y_te, heads, out, strict=True):
            ev = evaluate(
                head,
                x_te,
                y,
                class_margin,
                eps_grid=grid,
                norm=cfg.eval.norm,
                steps=cfg.eval.steps,
                restarts=cfg.eval.restarts,
                g=generator(cfg.seed, f"eval-{kind.value}-task-{i}", dev),
                certify=False,
                flip_check=False,
            )
            res[kind.value] = {"clean_acc": ev.clean_acc, "robust_acc": ev.robust_acc}
    return {"tasks": out}


def extra_task(
    cfg: ExperimentConfig, weights: dict[str, np.ndarray], index: int, eps_ref: float = EPS_REF
) -> dict[str, Any]:
    """:func:`extra_tasks` for one task."""
    return extra_tasks(cfg, weights, (index,), eps_ref)["tasks"][0]


def task_gaps(rec: dict[str, Any], extra: Sequence[dict[str, Any]]) -> list[float]:
    """Adversarial-head minus clean-head robust accuracy at EPS_REF: the run's own task, then each extra task."""
    key = eps_key(EPS_REF)
    own = robust_at(rec, "adversarial") - robust_at(rec, "clean")
    return [own] + [t["adversarial"]["robust_acc"][key] - t["clean"]["robust_acc"][key] for t in extra]


class CleanHeadIsEnough(ClaimSpec):
    number = 4
    arms = ("at", "clean")

    def __init__(self, id: str, family: str, n_tasks: int = CLAIM4_TASKS, quick_tasks: int | None = None):
        self.id, self.family, self.n_tasks, self.quick_tasks = id, family, n_tasks, quick_tasks or n_tasks
        self.name = "clean head is enough" + ("" if family == "supervised" else f" ({family})")

    def tasks(self, settings: Any) -> int:
        """Downstream tasks per seed, the run's own included."""
        return self.quick_tasks if settings.quick else self.n_tasks

    def jobs(self, ev: Evidence) -> list[AuxJob]:
        # One job per encoder, its extra tasks' heads trained as stacks; keyed by the task indices it stacks (a
        # stack's floats depend on its members at rounding level, so other tasks are another key).
        indices = list(range(1, self.tasks(ev.settings)))
        if not indices:
            return []
        return [
            derived_job(
                "downstream_tasks",
                c,
                f"claim {self.id}: {arm} features, seed {c.seed}, extra tasks {indices[0]}-{indices[-1]}",
                extra_tasks,
                lambda c=c: (c, encoder_weights(ev.store, c)),
                params={"indices": indices, "eps_ref": EPS_REF},
                version=DERIVED_VERSION,
                tag=(arm, seed_index),
                weight=2.0 * len(indices),
            )
            for arm in ("at", "clean")
            for seed_index, c in enumerate(self.cfgs(ev, arm))
        ]

    def statistic(self, ev: Evidence) -> Statistic:
        extra, n_tasks = ev.results(self.id), self.tasks(ev.settings)
        per_task = {
            arm: [
                task_gaps(rec, extra[arm, s]["tasks"] if n_tasks > 1 else [])
                for s, rec in enumerate(self.runs(ev, arm))
            ]
            for arm in ("at", "clean")
        }
        gap_at = [float(np.mean(g)) for g in per_task["at"]]
        gap_clean = [float(np.mean(g)) for g in per_task["clean"]]
        return Statistic(
            f"Clean head is enough ({self.family} pre-training): on adversarially pre-trained features an "
            "adversarially trained head adds little robustness over a clean head (mean gap <= "
            f"{CLEAN_HEAD_TOLERANCE}), while on clean features the gap is larger (effect = gap on clean features - "
            f"gap on AT features; each seed's gap is the mean over {n_tasks} downstream task(s)).",
            {"gap_on_at_features": gap_at, "gap_on_clean_features": gap_clean},
            [g - h for g, h in zip(gap_clean, gap_at, strict=True)],
            details={
                "n_tasks": n_tasks,
                "gap_per_task_at": per_task["at"],
                "gap_per_task_clean": per_task["clean"],
            },
        )

    def side_condition(self, ev: Evidence, stat: Statistic) -> SideCondition:
        mean_gap_at = float(np.mean(stat.per_seed["gap_on_at_features"]))
        return SideCondition(
            f"mean gap on AT features <= {CLEAN_HEAD_TOLERANCE} (got {mean_gap_at:.3f})",
            mean_gap_at <= CLEAN_HEAD_TOLERANCE,
        )


SUPERVISED = CleanHeadIsEnough("4", "supervised")
CONTRASTIVE = CleanHeadIsEnough("4c", "contrastive", quick_tasks=CLAIM4_TASKS_QUICK_CONTRASTIVE)
