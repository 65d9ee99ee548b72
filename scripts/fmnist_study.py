"""Tables of the Fashion-MNIST study (docs/realdata.md) from the stores of its three sweeps, mean and 95%
t-interval over seeds, with paired differences where the claim is a difference:

    .venv/bin/python scripts/fmnist_study.py dial        # sweeps/fashion_mnist_head_dial.yaml
    .venv/bin/python scripts/fmnist_study.py transfer    # sweeps/fashion_mnist_transfer.yaml
    .venv/bin/python scripts/fmnist_study.py purity      # sweeps/fashion_mnist_purity.yaml
    .venv/bin/python scripts/fmnist_study.py contrastive # sweeps/fashion_mnist_{,cnn_}contrastive.yaml
    .venv/bin/python scripts/fmnist_study.py units       # the purity sweeps of both encoders and the contrastive
                                                         # ones: which unit measure predicts inheritance (+ figure)
    .venv/bin/python scripts/fmnist_study.py sources     # sweeps/fashion_mnist_transfer_sources.yaml
    .venv/bin/python scripts/fmnist_study.py head-dial   # the clean head's norm bound on the AT contrastive
                                                         # encoders of both sweeps: can a clean head close ALF - SLF?

Each reads the runs its sweep stored (run the sweep first: `robinherit sweep fashion_mnist_head_dial`) and
prints Markdown. Robust accuracy is at l-inf 0.1 (``--eps``), the record's ``robust_acc``: PGD-20, or the
per-example worst case of PGD and AutoAttack's components where the config ran them.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robinherit.analysis.correlate import correlate
from robinherit.analysis.plots import _hashable, axis_value
from robinherit.analysis.stats import t_interval
from robinherit.config import HeadKind, build_config, with_updates
from robinherit.data.sources import build_source
from robinherit.evaluation.units import unit_measures
from robinherit.records import eps_key
from robinherit.runs.experiment import evaluate_model, fit_head, frozen_encoder
from robinherit.runs.store import ResultStore
from robinherit.runs.sweep import records_of

PURITY_SWEEPS = {"two-layer": "sweeps/fashion_mnist_purity.yaml", "CNN": "sweeps/fashion_mnist_cnn_purity.yaml"}
CONTRASTIVE_SWEEPS = {
    "two-layer": "sweeps/fashion_mnist_contrastive.yaml",
    "CNN": "sweeps/fashion_mnist_cnn_contrastive.yaml",
}
MEASURES = {
    "purification.top1_share_mean": "learned-dictionary top-1 share",
    "units.class_selectivity_mean": "class selectivity",
    "units.feature_count_median": "activation-dictionary feature count",
    "units.unit_shift_mean": "per-unit shift (robustness of single units)",
    "units.representation_shift": "representation shift",
}


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


class RunCache:
    """Values measured once per run and kept as JSON beside the store (``<store>.<name>.json``), written after each
    new value so an interrupted study keeps what it measured."""

    def __init__(self, store: Path, name: str):
        self.path = Path(f"{store}.{name}.json")
        self.values = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
        if not isinstance(self.values.get(key), dict):
            self.values[key] = measure()
            self.path.write_text(json.dumps(self.values, indent=1, sort_keys=True))
        return self.values[key]


def with_units(spec: str, eps: float) -> list[dict[str, Any]]:
    """The sweep's records, each with ``units``: the unit measures of its frozen encoder on the first 100 test
    images at l-inf ``eps`` (``robinherit.evaluation.units.unit_measures``, as ``robinherit audit`` reports them).
    Measured once per run and kept beside the store (``<store>.units.json``), keyed by run id and budget."""
    records, store = records_of(spec)
    cache, db = RunCache(store, "units"), ResultStore(store, read_only=True)

    def measure(r: dict[str, Any]) -> dict[str, float]:
        cfg = build_config(r["config"])
        encoder = frozen_encoder(cfg, db.artifact(r["run_id"], "encoder"))
        source = build_source(cfg)
        _, test = source.test_splits(cfg)
        return unit_measures(
            encoder.features, test.x, test.y, eps=eps, norm=cfg.eval.norm, seed=cfg.seed, clip=source.clip
        )

    for r in records:
        r["units"] = cache.get(f"{r['run_id']}@{eps:g}", lambda r=r: measure(r))
    return records


def contrastive(key: str) -> None:
    print(
        f"| encoder | pre-training | SLF clean | SLF robust {key} | ALF clean | ALF robust {key} | ALF - SLF | "
        f"representation shift {key} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    diffs: dict[tuple[str, str], list[float]] = {}
    for enc, spec in CONTRASTIVE_SWEEPS.items():
        records = with_units(spec, float(key))
        groups = by(records, "pretrain.eps", "pretrain.adversarial_view")
        seen: set[str] = set()
        arms: dict[str, list[dict[str, Any]]] = {}
        for (eps, view), rs in groups.items():
            ids = ",".join(r["run_id"] for r in rs)
            if ids in seen:  # clean pre-training: the view setting is inert, the same runs twice
                continue
            seen.add(ids)
            arm = "clean" if eps == 0 else f"AT {eps:g}, {view} view{'s' if view == 'both' else ''}"
            arms[arm] = rs
            slf = [head(r, "clean", key) for r in rs]
            alf = [head(r, "adversarial", key) for r in rs]
            print(
                f"| {enc} | {arm} | {interval([a for a, _ in slf])} | {interval([b for _, b in slf])} | "
                f"{interval([a for a, _ in alf])} | {interval([b for _, b in alf])} | "
                f"{interval([b2 - b1 for (_, b1), (_, b2) in zip(slf, alf, strict=True)])} | "
                f"{interval([r['units']['representation_shift'] for r in rs])} |"
            )
        for arm, rs in arms.items():
            if arm != "clean":
                pairs = zip(rs, arms["clean"], strict=True)
                diffs[(enc, arm)] = [head(a, "clean", key)[1] - head(c, "clean", key)[1] for a, c in pairs]
    print(f"\nSLF robust {key}, adversarial minus clean contrastive pre-training (paired, 95% t-interval):\n")
    print("| encoder | AT arm | difference | interval |")
    print("|---|---|---|---|")
    for (enc, arm), d in diffs.items():
        mean, low, high = t_interval(d)
        print(f"| {enc} | {arm} | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] |")


def units(key: str) -> None:
    y = f"downstream.clean_head.robust_acc.{key}"
    print("| runs | measure | rho, all runs [95% bootstrap] | rho, AT runs only [95% bootstrap] | n all / AT |")
    print("|---|---|---|---|---|")
    pooled: dict[str, list[dict[str, Any]]] = {}
    for enc, spec in PURITY_SWEEPS.items():
        records = with_units(spec, float(key))
        pooled[f"{enc} purity sweep"] = records
        _unit_rows(f"{enc}, AT budgets 0-0.15", records, y)
    contrastive_by_encoder = {enc: with_units(spec, float(key)) for enc, spec in CONTRASTIVE_SWEEPS.items()}
    _unit_rows("contrastive (both encoders)", [r for rs in contrastive_by_encoder.values() for r in rs], y)
    for enc, records in contrastive_by_encoder.items():
        _unit_rows(f"contrastive, {enc}", records, y)
    print()
    for label, records in pooled.items():
        groups = by(records, "pretrain.eps")
        print(f"{label}: per AT budget, mean over seeds")
        print(f"| AT eps | SLF robust {key} | " + " | ".join(MEASURES.values()) + " |")
        print("|---|---|" + "---|" * len(MEASURES))
        for (eps,), rs in groups.items():
            cells = [interval([axis_value(r, m) for r in rs]) for m in MEASURES]
            print(f"| {eps:g} | {interval([head(r, 'clean', key)[1] for r in rs])} | " + " | ".join(cells) + " |")
        print()
    figure_runs = dict(pooled)
    for enc, records in contrastive_by_encoder.items():  # each run once (the clean arm is stored under both views)
        figure_runs[f"{enc} contrastive"] = list({r["run_id"]: r for r in records}.values())
    _units_figure(figure_runs, y)


def _unit_rows(label: str, records: list[dict[str, Any]], y: str) -> None:
    at = [r for r in records if r["config"]["pretrain"]["eps"] > 0]
    for m, name in MEASURES.items():
        if any(axis_value(r, m) is None for r in records):
            continue
        c, ca = correlate(records, m, y), correlate(at, m, y)
        print(
            f"| {label} | {name} | {c.rho:+.2f} [{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}] | "
            f"{ca.rho:+.2f} [{ca.ci95[0]:+.2f}, {ca.ci95[1]:+.2f}] | {c.n} / {ca.n} |"
        )


SHORT = {
    "purification.top1_share_mean": "first-layer top-1 share\n(learned dictionary)",
    "units.class_selectivity_mean": "class selectivity",
    "units.feature_count_median": "feature count\n(activation dictionary)",
    "units.unit_shift_mean": "unit shift\n(one unit attacked)",
    "units.representation_shift": "representation shift",
}


def _units_figure(pooled: dict[str, list[dict[str, Any]]], y: str) -> None:
    """One panel per unit measure: each run's measure against its SLF robust accuracy, by family and encoder,
    coloured by the AT budget (docs/figures/fmnist_units.{png,svg,pdf})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robinherit.analysis.plots import save_figure

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(2.9 * len(MEASURES), 3.3), sharey=True, layout="constrained")
    markers = dict(zip(pooled, "os^v", strict=False))
    for ax, m in zip(axes, MEASURES, strict=True):
        for label, records in pooled.items():
            xs = [axis_value(r, m) for r in records]
            ys = [axis_value(r, y) for r in records]
            cs = [r["config"]["pretrain"]["eps"] for r in records]
            sc = ax.scatter(xs, ys, c=cs, cmap="viridis", marker=markers[label], label=label, vmin=0, vmax=0.15,
                            edgecolors="k", linewidths=0.3)  # fmt: skip
        ax.set_xlabel(SHORT[m], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"SLF robust accuracy, l-inf {y.split('robust_acc.')[1]}", fontsize=8)
    axes[0].legend(fontsize=6, loc="lower right")
    fig.colorbar(sc, ax=axes, label="AT budget (l-inf)", shrink=0.9)
    for path in save_figure(fig, "docs/figures/fmnist_units"):
        print(f"figure: {path}")


def sources(key: str) -> None:
    records, _ = records_of("sweeps/fashion_mnist_transfer_sources.yaml")
    groups = by(records, "data.pretrain_classes", "pretrain.method", "pretrain.eps")
    print(f"| held-out classes | pre-training | on | SLF clean | SLF robust {key} | seeds |")
    print("|---|---|---|---|---|---|")
    for (seen, method, eps), rs in groups.items():
        held = [c for c in range(10) if c not in seen]
        on = "every training image, no labels" if method == "contrastive" else f"classes {seen[0]}-{seen[-1]}"
        slf = [head(r, "clean", key) for r in rs]
        print(
            f"| {held[0]}-{held[-1]} | {method}, {'clean' if eps == 0 else f'AT {eps:g}'} | {on} | "
            f"{interval([a for a, _ in slf])} | {interval([b for _, b in slf])} | {len(rs)} |"
        )
    print(f"\nSLF robust {key} on the held-out classes, paired over seeds (95% t-interval):\n")
    print("| held-out | comparison | difference | interval |")
    print("|---|---|---|---|")
    for seen in sorted({k[0] for k in groups}):
        held = [c for c in range(10) if c not in seen]

        def slf(method: str, eps: float, seen=seen) -> list[float]:
            return [head(r, "clean", key)[1] for r in groups[(seen, method, eps)]]

        for label, a, b in (
            ("supervised AT - supervised clean", slf("supervised", 0.1), slf("supervised", 0.0)),
            ("contrastive AT - contrastive clean", slf("contrastive", 0.1), slf("contrastive", 0.0)),
            ("contrastive AT (all images) - supervised AT (seen classes)", slf("contrastive", 0.1),
             slf("supervised", 0.1)),
        ):  # fmt: skip
            mean, low, high = t_interval([u - v for u, v in zip(a, b, strict=True)])
            print(f"| {held[0]}-{held[-1]} | {label} | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] |")


DIAL_DECAYS = (0.0, 0.01, 0.1, 1.0, 3.0, 10.0)


def head_dial(key: str) -> None:
    """SLF robust accuracy on the AT (one view) contrastive encoders as the clean head's weight decay varies, beside
    ALF's: the heads are trained and evaluated exactly as in the run (``fit_head``, ``evaluate_model``), one per
    decay, and kept beside the store (``<store>.dial.json``)."""
    print(f"SLF clean / robust {key} per weight decay of the clean head; ALF clean / robust {key} as run\n")
    print("| encoder | seed | ALF | " + " | ".join(f"SLF, decay {d:g}" for d in DIAL_DECAYS) + " |")
    print("|---|---|---|" + "---|" * len(DIAL_DECAYS))
    for enc, spec in CONTRASTIVE_SWEEPS.items():
        records, store = records_of(spec)
        at = {r["run_id"]: r for r in records if r["config"]["pretrain"]["eps"] > 0}
        at = [r for r in at.values() if r["config"]["pretrain"]["adversarial_view"] == "one"]
        cache, db = RunCache(store, "dial"), ResultStore(store, read_only=True)
        for r in sorted(at, key=lambda r: r["seed"]):
            row = []
            for decay in DIAL_DECAYS:
                slf = cache.get(f"{r['run_id']}@{decay:g}", lambda r=r, d=decay, db=db: _slf_at(r, db, d, key))
                row.append(f"{slf['clean']:.3f} / {slf['robust']:.3f}")
            alf = head(r, "adversarial", key)
            print(f"| {enc} | {r['seed']} | {alf[0]:.3f} / {alf[1]:.3f} | " + " | ".join(row) + " |")


def _slf_at(record: dict[str, Any], db: ResultStore, decay: float, key: str) -> dict[str, float]:
    cfg = with_updates(build_config(record["config"]), **{"downstream.weight_decay": decay})
    encoder = frozen_encoder(cfg, db.artifact(record["run_id"], "encoder"))
    source = build_source(cfg)
    h = fit_head(cfg, encoder, source, HeadKind.clean)
    _, test = source.test_splits(cfg)
    out = evaluate_model(cfg, h, test, source, "clean")
    return {"clean": float(out["clean_acc"]), "robust": float(out["robust_acc"][key])}


STUDIES = {
    "dial": dial,
    "transfer": transfer,
    "purity": purity,
    "contrastive": contrastive,
    "units": units,
    "sources": sources,
    "head-dial": head_dial,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=list(STUDIES))
    ap.add_argument("--eps", type=float, default=0.1, help="the budget of the robust accuracies (default 0.1)")
    args = ap.parse_args(argv)
    STUDIES[args.study](eps_key(args.eps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
