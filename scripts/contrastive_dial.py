"""Contrastive pre-training tables of docs/contrastive.md: augmentation strength and adversarial training as dials.

Three tables, each a grid of runs of ``configs/contrastive.yaml`` answered from (or run into) the store:

- ``acceptance``: weak augmentation (the config's own), adversarial (eps 0.25) vs clean (eps 0), per seed.
- ``mask``: strong augmentation (coordinate masking, keep 0.5), clean and adversarial.
- ``dial``: augmentation strength in 5 steps from weak to strong x pre-training eps in {0, 0.25}.

Every cell reports the mean over seeds of the top-1 share, the share of nodes with P > 0.5, and the clean
head's clean and robust accuracy at ``--eps-eval``.

    .venv/bin/python scripts/contrastive_dial.py --table dial --seeds 0 --store results/contrastive.db

Prints markdown tables; runs already in the store are not run again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from robinherit.cli import parse_seeds
from robinherit.config import ExperimentConfig, load_config, with_updates
from robinherit.evaluation.robust import eps_key
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "contrastive.yaml"
PRETRAIN_EPS = (0.0, 0.25)
# weak -> strong: Gaussian noise from the default config's std up to one that alone purifies clean training
DIAL = ("noise", (0.015, 0.025, 0.04, 0.06, 0.1))


def cell(records: list[dict], eps_eval: float) -> dict[str, float] | None:
    if not records:
        return None
    key = eps_key(eps_eval)
    heads = [r["downstream"]["clean_head"] for r in records]
    return {
        "top1": statistics.fmean(r["purification"]["top1_share_mean"] for r in records),
        "pure": statistics.fmean(r["purification"]["frac_pure"]["0.5"] for r in records),
        "clean": statistics.fmean(h["clean_acc"] for h in heads),
        "robust": statistics.fmean(h["robust_acc"][key] for h in heads),
        "robust_min": min(h["robust_acc"][key] for h in heads),
        "seconds": statistics.median(r["timing_s"]["total"] for r in records),
        "n": len(records),
    }


def grid(base: ExperimentConfig, rows: list[dict], seeds: list[int]) -> list[list[ExperimentConfig]]:
    return [[with_updates(base, seed=s, **row) for s in seeds] for row in rows]


def run_grid(cfgs: list[list[ExperimentConfig]], store: ResultStore, stored_only: bool = False) -> list[list[dict]]:
    if stored_only:  # a table of what the store has; missing cells print as "-"
        return [[r for c in row if (r := store.get(c.config_hash())) is not None] for row in cfgs]
    flat = [c for row in cfgs for c in row]
    done = iter(
        run_many_or_load(
            flat,
            store,
            on_record=lambda r, cached: print(
                f"  {'stored' if cached else 'ran'} {r['run_id']} seed {r['seed']} ({r['timing_s']['total']:.1f} s)",
                file=sys.stderr,
                flush=True,
            ),
        )
    )
    return [[next(done) for _ in row] for row in cfgs]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_cell(c: dict[str, float] | None) -> list[str]:
    if c is None:
        return ["-"] * 4
    return [f"{c['top1']:.2f}", f"{c['pure']:.0%}", f"{c['clean']:.2f}", f"{c['robust']:.2f}"]


def table_acceptance(
    base: ExperimentConfig, seeds: list[int], store: ResultStore, eps_eval: float, stored_only: bool = False
) -> str:
    rows = [{"pretrain.eps": e} for e in reversed(PRETRAIN_EPS)]
    recs = run_grid(grid(base, rows, seeds), store, stored_only)
    out = []
    for row, rs in zip(rows, recs, strict=True):
        if not rs:
            out.append([f"{row['pretrain.eps']:g}", *fmt_cell(None), "-", "-", "-"])
            continue
        per_seed = " ".join(f"{r['purification']['top1_share_mean']:.2f}" for r in rs)
        per_seed_rob = " ".join(f"{r['downstream']['clean_head']['robust_acc'][eps_key(eps_eval)]:.2f}" for r in rs)
        c = cell(rs, eps_eval)
        out.append([f"{row['pretrain.eps']:g}", *fmt_cell(c), per_seed, per_seed_rob, f"{c['seconds']:.0f}"])
    aug = f"{base.pretrain.augmentation.value} {base.pretrain.aug_strength:g}"
    header = [
        f"pre-train eps ({aug})",
        "top-1 share",
        "nodes P>0.5",
        "clean acc",
        f"robust acc @{eps_eval:g}",
        "top-1 per seed",
        "robust per seed",
        "s / run (median)",
    ]
    return markdown(header, out)


def table_dial(
    base: ExperimentConfig,
    seeds: list[int],
    store: ResultStore,
    eps_eval: float,
    kind: str,
    strengths: list[float],
    stored_only: bool = False,
) -> str:
    rows = [
        {"pretrain.augmentation": kind, "pretrain.aug_strength": s, "pretrain.eps": e}
        for s in strengths
        for e in PRETRAIN_EPS
    ]
    recs = run_grid(grid(base, rows, seeds), store, stored_only)
    by = {(r["pretrain.aug_strength"], r["pretrain.eps"]): cell(rs, eps_eval) for r, rs in zip(rows, recs, strict=True)}
    out = []
    for s in sorted(strengths):  # runs go in the given order (to reuse stored runs first), rows weak -> strong
        clean, adv = by[(s, 0.0)], by[(s, 0.25)]
        out.append([f"{s:g}", *fmt_cell(clean), *fmt_cell(adv)])
    r = f"rob@{eps_eval:g}"
    header = [f"{kind} strength", "clean: top-1", "P>0.5", "acc", r, "AT 0.25: top-1", "P>0.5", "acc", r]
    return markdown(header, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", choices=["acceptance", "mask", "dial", "all"], default="all")
    p.add_argument("--seeds", default="0,1,2", help="comma list or range, e.g. 0-2")
    p.add_argument("--store", type=Path, default=Path("results/contrastive.db"))
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override, e.g. data.d=32")
    p.add_argument("--eps-eval", type=float, default=0.25, help="budget of the reported robust accuracy")
    p.add_argument("--dial-augmentation", default=DIAL[0], choices=["noise", "mask", "feature_dropout"])
    p.add_argument("--stored-only", action="store_true", help="tabulate stored runs only, run nothing")
    p.add_argument("--strengths", default=",".join(f"{s:g}" for s in DIAL[1]), help="5 strengths, weak to strong")
    a = p.parse_args(argv)
    base = load_config(a.config, a.sets)
    seeds = parse_seeds(a.seeds) or [base.seed]
    store = ResultStore(a.store)
    strengths = [float(s) for s in a.strengths.split(",")]
    if a.table in ("acceptance", "all"):
        print(f"### Weak augmentation, adversarial vs clean (seeds {a.seeds})\n")
        print(table_acceptance(base, seeds, store, a.eps_eval, a.stored_only) + "\n")
    if a.table in ("mask", "all"):
        print(f"### Strong augmentation: masking, keep 0.5 (seeds {a.seeds})\n")
        print(table_dial(base, seeds, store, a.eps_eval, "mask", [0.5], a.stored_only) + "\n")
    if a.table in ("dial", "all"):
        print(f"### Dial: {a.dial_augmentation} strength x pre-training eps (seeds {a.seeds})\n")
        print(table_dial(base, seeds, store, a.eps_eval, a.dial_augmentation, strengths, a.stored_only) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
