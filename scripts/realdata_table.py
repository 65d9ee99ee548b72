"""Real-data acceptance tables: {clean, AT} pre-training x {pre-trained model, clean head, adversarial head}, PGD
and AutoAttack, two budgets per norm, >= 3 seeds, mean and 95% t-interval; runs are ordinary runs of the store.

    .venv/bin/python scripts/realdata_table.py --config digits --seeds 0,1,2 \
        --store results/realdata.db [--set KEY=VALUE ...] [--norm l2 --eps 0.5,1.0 --at-eps 1.0]

Prints a Markdown table (paste into docs/realdata.md) and, with --json, the per-seed numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from robinherit.analysis.stats import t_interval
from robinherit.config import load_config, with_updates
from robinherit.runs.schedule import run_or_load
from robinherit.runs.store import ResultStore


def interval(values: list[float]) -> str:
    """mean +- half-width of the 95% t-interval (just the mean for one value)."""
    mean, low, high = t_interval(values)
    return f"{mean:.3f}" if len(values) < 2 else f"{mean:.3f} ± {(high - low) / 2:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--store", default="results/realdata.db")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--norm", default=None, help="threat model for AT, the adversarial head and the attacks")
    ap.add_argument("--eps", default=None, help="comma list of evaluation budgets")
    ap.add_argument("--at-eps", type=float, default=None, help="budget of AT pre-training and the adversarial head")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--arm", choices=["both", "clean", "at"], default="both", help="run only one pre-training arm")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: several scripts share the cores)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    overrides = list(args.overrides)
    if args.norm:
        overrides += [f"eval.norm={args.norm}", f"pretrain.norm={args.norm}"]
    if args.eps:
        overrides.append(f"eval.eps_grid=[0,{args.eps}]")
    if args.at_eps is not None:
        overrides += [f"pretrain.eps={args.at_eps}", f"downstream.eps={args.at_eps}"]
    base = load_config(args.config, overrides)
    seeds = [int(s) for s in args.seeds.split(",")]
    store = ResultStore(args.store)

    arms = {"clean pre-training": 0.0, f"AT pre-training (eps {base.pretrain.eps:g})": base.pretrain.eps}
    if args.arm != "both":  # a worker filling the store in parallel; print nothing but progress
        arms = {k: v for k, v in arms.items() if (v == 0.0) == (args.arm == "clean")}
    rows, per_seed = [], {}
    for arm, eps in arms.items():
        recs = []
        for s in seeds:
            cfg = with_updates(base, **{"pretrain.eps": eps, "seed": s})
            t0 = time.perf_counter()
            rec, cached = run_or_load(cfg, store)
            where = "store" if cached else f"{time.perf_counter() - t0:.0f} s"
            print(f"# {arm} seed {s}: {rec['run_id']} ({where})", file=sys.stderr, flush=True)
            recs.append(rec)
        per_seed[arm] = recs
        models = {"pre-trained": lambda r: r["pretrain"]} | {
            h.replace("_head", " head"): (lambda r, h=h: r["downstream"][h]) for h in recs[0]["downstream"]
        }
        for name, get in models.items():
            cells = [arm, name, interval([get(r)["clean_acc"] for r in recs])]
            for k in [k for k in get(recs[0])["pgd_robust_acc"] if k != "0"]:
                for field in ("pgd_robust_acc", "autoattack_robust_acc", "robust_acc"):
                    vals = [get(r)[field].get(k) for r in recs]
                    cells.append(interval(vals) if None not in vals else "-")
            cells.append(interval([r["purification"]["top1_share_mean"] for r in recs]))
            cells.append(interval([r["purification_pixel"]["top1_share_mean"] for r in recs]))
            cells.append(interval([r["sparsity"]["zero_share"] for r in recs]))
            rows.append(cells)

    if args.arm != "both":
        return 0
    eps_keys = [k for k in per_seed[next(iter(per_seed))][0]["downstream"]["clean_head"]["pgd_robust_acc"] if k != "0"]
    norm = base.eval.norm.value
    header = ["pre-training", "model", "clean acc"]
    for k in eps_keys:
        header += [f"PGD {norm} {k}", f"AA {norm} {k}", f"worst {norm} {k}"]
    header += ["top-1 share (ICA dict)", "top-1 share (pixels)", "zero activations"]
    d = base.data
    print(f"\n{d.source}, protocol {d.protocol.value}, encoder {base.model.encoder.value}, seeds {seeds}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    warn = {
        w
        for recs in per_seed.values()
        for r in recs
        for h in r["downstream"].values()
        for w in h["warnings"]
        if "AutoAttack" in w
    }
    ok = all(
        h["autoattack_not_above_pgd"] for recs in per_seed.values() for r in recs for h in r["downstream"].values()
    )
    clean_recs, at_recs = per_seed.values()
    for k in eps_keys:
        diffs = [
            a["downstream"]["clean_head"]["robust_acc"][k] - c["downstream"]["clean_head"]["robust_acc"][k]
            for a, c in zip(at_recs, clean_recs, strict=True)
        ]
        print(f"\nclean head, worst-case robust acc at {norm} {k}, AT minus clean (paired): {interval(diffs)}")
    print(f"\nAutoAttack never above PGD: {ok}" + (f" ({len(warn)} warnings)" if warn else ""))
    times = [r["timing_s"]["total"] for recs in per_seed.values() for r in recs]
    print(f"run time per run: {min(times):.0f}-{max(times):.0f} s")
    if args.json:
        clean_head = {
            arm: {
                k: [r["downstream"]["clean_head"]["robust_acc"][k] for r in recs]
                for k in recs[0]["downstream"]["clean_head"]["robust_acc"]
            }
            for arm, recs in per_seed.items()
        }
        print(json.dumps(clean_head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
