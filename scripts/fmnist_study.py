"""Tables of the Fashion-MNIST study (docs/realdata.md) from the stores of its three sweeps, mean and 95%
t-interval over seeds, with paired differences where the claim is a difference:

    .venv/bin/python scripts/fmnist_study.py dial        # sweeps/fashion_mnist_head_dial.yaml
    .venv/bin/python scripts/fmnist_study.py transfer    # sweeps/fashion_mnist_transfer.yaml
    .venv/bin/python scripts/fmnist_study.py purity      # sweeps/fashion_mnist_purity.yaml

Each reads the runs its sweep stored (run the sweep first: `robinherit sweep fashion_mnist_head_dial`) and
prints Markdown. Robust accuracy is at l-inf 0.1 (``--eps``), the record's ``robust_acc``: PGD-20, or the
per-example worst case of PGD and AutoAttack's components where the config ran them.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from robinherit.analysis.correlate import correlate
from robinherit.analysis.plots import _hashable, axis_value
from robinherit.analysis.stats import t_interval
from robinherit.records import eps_key
from robinherit.runs.sweep import records_of


def interval(values: list[float]) -> str:
    """mean +- half-width of the 95% t-interval over seeds (the package's one t interval; just the mean for one
    value)."""
    mean, low, high = t_interval(values)
    return f"{mean:.3f}" if len(values) < 2 else f"{mean:.3f} ± {(high - low) / 2:.3f}"


def head(r: dict[str, Any], name: str, key: str) -> tuple[float, float]:
    h = r["downstream"][f"{name}_head"]
    return h["clean_acc"], h["robust_acc"][key]


def by(records: list[dict[str, Any]], *paths: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        values = (axis_value(r, p) for p in paths)
        out[tuple(_hashable(v) for v in values)].append(r)
    for v in out.values():
        v.sort(key=lambda r: r["seed"])
    return dict(sorted(out.items()))


def dial(key: str) -> None:
    records, _ = records_of("sweeps/fashion_mnist_head_dial.yaml")
    groups = by(records, "downstream.weight_decay", "pretrain.eps")
    print(f"| head weight decay | pre-training | SLF clean | SLF robust {key} | ALF clean | ALF robust {key} ", end="")
    print("| ALF - SLF |")
    print("|---|---|---|---|---|---|---|")
    for (wd, eps), rs in groups.items():
        slf = [head(r, "clean", key) for r in rs]
        alf = [head(r, "adversarial", key) for r in rs]
        arm = "clean" if eps == 0 else f"AT {eps:g}"
        print(
            f"| {wd:g} | {arm} | {interval([a for a, _ in slf])} | {interval([b for _, b in slf])} | "
            f"{interval([a for a, _ in alf])} | {interval([b for _, b in alf])} | "
            f"{interval([b2 - b1 for (_, b1), (_, b2) in zip(slf, alf, strict=True)])} |"
        )
    print()
    print(f"SLF robust {key}, AT minus clean pre-training (paired over seeds):")
    print()
    print("| head weight decay | AT - clean | seeds |")
    print("|---|---|---|")
    for wd in sorted({k[0] for k in groups}):
        at, cl = groups[(wd, 0.1)], groups[(wd, 0.0)]
        diffs = [head(a, "clean", key)[1] - head(c, "clean", key)[1] for a, c in zip(at, cl, strict=True)]
        print(f"| {wd:g} | {interval(diffs)} | {len(diffs)} |")
    pre = {eps: [r["pretrain"] for r in rs] for (wd, eps), rs in groups.items() if wd == 0}
    for eps, ps in pre.items():
        print(
            f"\npre-trained model ({'clean' if eps == 0 else f'AT {eps:g}'}): clean "
            f"{interval([p['clean_acc'] for p in ps])}, robust {key} {interval([p['robust_acc'][key] for p in ps])}"
        )


def transfer(key: str) -> None:
    records, _ = records_of("sweeps/fashion_mnist_transfer.yaml")
    groups = by(records, "data.pretrain_classes", "pretrain.eps")
    print(
        f"| pre-trained on | heads on | pre-training | pre-trained robust {key} | SLF clean | SLF robust {key} | "
        f"ALF clean | ALF robust {key} | e2e AT on the head's classes: clean / robust {key} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    splits = sorted({k[0] for k in groups})
    for (seen, eps), rs in groups.items():
        other = next(s for s in splits if s != seen)
        ref = groups.get((other, 0.1), [])  # AT pre-trained on the head's classes: end-to-end AT on them
        slf = [head(r, "clean", key) for r in rs]
        alf = [head(r, "adversarial", key) for r in rs]
        e2e = (
            f"{interval([r['pretrain']['clean_acc'] for r in ref])} / "
            f"{interval([r['pretrain']['robust_acc'][key] for r in ref])}"
            if ref
            else "n/a"
        )
        print(
            f"| {','.join(map(str, seen))} | {','.join(map(str, other))} | "
            f"{'clean' if eps == 0 else f'AT {eps:g}'} | {interval([r['pretrain']['robust_acc'][key] for r in rs])} | "
            f"{interval([a for a, _ in slf])} | {interval([b for _, b in slf])} | {interval([a for a, _ in alf])} | "
            f"{interval([b for _, b in alf])} | {e2e} |"
        )
    print()
    for seen in splits:
        at, cl = groups[(seen, 0.1)], groups[(seen, 0.0)]
        diffs = [head(a, "clean", key)[1] - head(c, "clean", key)[1] for a, c in zip(at, cl, strict=True)]
        gap = [head(a, "adversarial", key)[1] - head(a, "clean", key)[1] for a in at]
        print(
            f"pre-trained on {','.join(map(str, seen))}: SLF robust {key} AT - clean (paired) {interval(diffs)}; "
            f"ALF - SLF on AT features {interval(gap)}"
        )
        print()
    secs = [r["timing_s"]["pretrain"] for rs in groups.values() for r in rs if r["config"]["pretrain"]["eps"] > 0]
    print(f"AT pre-training time per run (the e2e reference's cost; shared machine): {interval(secs)} s")


def purity(key: str) -> None:
    records, _ = records_of("sweeps/fashion_mnist_purity.yaml")
    groups = by(records, "pretrain.eps")
    print(
        f"| AT eps | pre-trained robust {key} | SLF clean | SLF robust {key} | top-1 share (learned dict) | "
        "top-1 share (pixels) | zero activations |"
    )
    print("|---|---|---|---|---|---|---|")
    for (eps,), rs in groups.items():
        print(
            f"| {eps:g} | {interval([r['pretrain']['robust_acc'][key] for r in rs])} | "
            f"{interval([head(r, 'clean', key)[0] for r in rs])} | "
            f"{interval([head(r, 'clean', key)[1] for r in rs])} | "
            f"{interval([r['purification']['top1_share_mean'] for r in rs])} | "
            f"{interval([r['purification_pixel']['top1_share_mean'] for r in rs])} | "
            f"{interval([r['sparsity']['zero_share'] for r in rs])} |"
        )
    print()
    y = f"downstream.clean_head.robust_acc.{key}"
    for x in ("purification.top1_share_mean", "purification_pixel.top1_share_mean", "sparsity.zero_share"):
        c = correlate(records, x, y)
        print(
            f"Spearman rho({x}, SLF robust {key}) = {c.rho:+.3f}, 95% bootstrap [{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], "
            f"{c.n} runs"
        )
        print()
    at = [r for r in records if r["config"]["pretrain"]["eps"] > 0]
    c = correlate(at, "purification.top1_share_mean", y)
    print(f"AT runs only (eps > 0): rho = {c.rho:+.3f} [{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], {c.n} runs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=["dial", "transfer", "purity"])
    ap.add_argument("--eps", type=float, default=0.1, help="the budget of the robust accuracies (default 0.1)")
    args = ap.parse_args(argv)
    {"dial": dial, "transfer": transfer, "purity": purity}[args.study](eps_key(args.eps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
