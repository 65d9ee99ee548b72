"""The unit measures against the truth: on the synthetic world, where each hidden node's true top-1 share is known,
how well does each measure of the units (computed from the features alone, as the audit computes it for any
encoder) rank the encoders by purity? Supervised pre-training at several budgets and seeds; Spearman's rho of each
measure's mean over units against the true mean top-1 share, over all encoders and within the adversarial ones.

    .venv/bin/python scripts/unit_validation.py --seeds 0,1,2 --budgets 0,0.05,0.1,0.25 --store results/units.db
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from robinherit.config import load_config, with_updates
from robinherit.data.sources import build_source
from robinherit.evaluation.units import unit_measures
from robinherit.runs.experiment import frozen_encoder
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore

MEASURES = ("class_selectivity_mean", "feature_count_median", "unit_shift_mean", "representation_shift")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budgets", default="0,0.05,0.1,0.25")
    ap.add_argument("--store", default="results/units.db")
    ap.add_argument("--points", type=int, default=200)
    args = ap.parse_args()
    base = load_config("supervised")
    cfgs = [
        with_updates(base, seed=int(s), **{"pretrain.eps": float(e)})
        for e in args.budgets.split(",")
        for s in args.seeds.split(",")
    ]
    db = ResultStore(args.store)
    records = run_many_or_load(cfgs, db)
    rows = []
    for cfg, rec in zip(cfgs, records, strict=True):
        source = build_source(cfg)
        enc = frozen_encoder(cfg, db.artifact(rec["run_id"], "encoder"), source)
        _, test = source.test_splits(cfg)
        x, y = test.x[: args.points], test.y[: args.points]
        m = unit_measures(enc.features, x, y, eps=0.25, norm=cfg.eval.norm, seed=cfg.seed)
        rows.append((cfg.pretrain.eps, rec["purification"]["top1_share_mean"], m))
    print("| measure | rho, all encoders | rho, adversarial only |")
    print("|---|---|---|")
    truth = np.array([r[1] for r in rows])
    at = np.array([r[0] > 0 for r in rows])
    for name in MEASURES:
        vals = np.array([r[2][name] for r in rows])
        rho_all = spearmanr(vals, truth).statistic
        rho_at = spearmanr(vals[at], truth[at]).statistic
        print(f"| {name} | {rho_all:+.2f} | {rho_at:+.2f} |")
    print()
    print("| eps | true top-1 share | " + " | ".join(MEASURES) + " |")
    print("|---|---|" + "---|" * len(MEASURES))
    for eps, top1, m in rows:
        print(f"| {eps:g} | {top1:.3f} | " + " | ".join(f"{m[k]:.3f}" for k in MEASURES) + " |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
