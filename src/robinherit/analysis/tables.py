"""Result records as text for the terminal: one run's headline numbers, the list of stored runs, the claims of a
reproduce, and a run's certified / PGD / ART-PGD cross-check. The command line prints these; they only read the
record layout of ``robinherit.runs.experiment`` (and of ``reproduce``'s claims and ``analysis.crosscheck``).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from robinherit.paths import flatten


def summary_line(rec: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a record: purity and clean-head robust accuracy at each eps."""
    pur = rec["purification"]
    heads = rec["downstream"]
    return {
        "run_id": rec["run_id"],
        "seed": rec["seed"],
        "method": rec["config"]["pretrain"]["method"],
        "pretrain_eps": rec["config"]["pretrain"]["eps"],
        "top1_share_mean": pur["top1_share_mean"],
        "frac_pure_0.5": pur["frac_pure"]["0.5"],
        **{
            f"{h}.{k}": v
            for h, r in heads.items()
            for k, v in [("clean", r["clean_acc"]), *[(f"rob@{e}", a) for e, a in r["robust_acc"].items()]]
        },
    }


def print_record(out: Console, rec: dict[str, Any], cached: bool) -> None:
    """One run: its purity line, robust (and certified) accuracy of every model per eps, and its warnings."""
    pur = rec["purification"]
    where = " (from store)" if cached else f" ({rec['timing_s']['total']:.1f} s)"
    name = rec.get("dataset", {}).get("name", "synthetic")
    ref = pur.get("reference", "true dictionary")
    out.print(
        f"[bold]run {rec['run_id']}[/] {name} seed {rec['seed']}{where}: top-1 share mean "
        f"{pur['top1_share_mean']:.3f} ({ref}), pure@0.5 {pur['frac_pure']['0.5']:.0%}, "
        f"N_eff median {pur['neff_median']:.2f}, dead {pur['dead_nodes']}"
    )
    print_models(out, {"pre-trained model": rec["pretrain"], **rec["downstream"]})


def print_models(out: Console, rows: dict[str, dict[str, Any]]) -> None:
    """Robust (and certified) accuracy of every model per eps, the attacks behind it, and each model's warnings."""
    eps = list(next(iter(rows.values()))["robust_acc"])
    table = Table("model", "accuracy", *[f"eps {e}" for e in eps])
    for name, r in rows.items():
        table.add_row(name, "robust", *[f"{r['robust_acc'][e]:.3f}" for e in eps])
        if r.get("certified_acc"):
            table.add_row("", "certified", *[f"{r['certified_acc'][e]:.3f}" for e in eps])
    out.print(table)
    attacks = next(iter(rows.values())).get("attacks", [])
    if len(attacks) > 1:
        out.print("robust accuracy: per-example worst case of " + ", ".join(attacks))
    for name, r in rows.items():
        for w in r.get("warnings", []):
            out.print(f"[yellow]warning ({name}):[/] {w}", highlight=False, soft_wrap=True)


def runs_table(records: list[dict[str, Any]]) -> Table:
    """One row per stored run: id, seed, pre-training, purity, the clean head's clean and robust accuracy, time."""
    # run ids are what `show` takes: never wrap or cut them, let the robust column wrap instead
    run_id_col = Column("run_id", no_wrap=True, min_width=16)
    table = Table(run_id_col, "seed", "method", "eps", "top-1", "clean", "robust (clean head, per eps)", "s", "differs")
    differs = settings_that_differ(records)
    for rec in records:
        cfg = rec["config"]
        ch = rec["downstream"].get("clean_head") or next(iter(rec["downstream"].values()))
        rob = " ".join(f"{e}:{a:.2f}" for e, a in ch["robust_acc"].items())
        audit = rec.get("kind") == "audit"  # an audit pre-trained nothing: its encoder came from elsewhere
        top1 = rec.get("purification", {}).get("top1_share_mean")
        table.add_row(
            rec["run_id"],
            str(rec["seed"]),
            "audit" if audit else cfg["pretrain"]["method"],
            "-" if audit else str(cfg["pretrain"]["eps"]),
            "-" if top1 is None else f"{top1:.3f}",
            f"{ch['clean_acc']:.3f}",
            rob,
            f"{rec['timing_s']['total']:.1f}",
            differs[rec["run_id"]],
        )
    return table


# what every row already shows, or what never changes a run's numbers
_SHOWN = {"seed", "pretrain.method", "pretrain.eps", "data.root", "plugins", "device"}


def settings_that_differ(records: list[dict[str, Any]]) -> dict[str, str]:
    """Per run id, the settings in which the run differs from the most common value among ``records`` (so a
    200-step run among default ones says ``pretrain.steps=200``), beyond what the table shows already."""
    flat = {r["run_id"]: flatten(r["config"]) for r in records}
    paths = sorted({p for f in flat.values() for p in f} - _SHOWN)
    common = {}
    for p in paths:
        values = [json.dumps(f.get(p), sort_keys=True) for f in flat.values()]
        common[p] = max(set(values), key=values.count)
    out = {}
    for run_id, f in flat.items():
        diff = [f"{p}={_short(f.get(p))}" for p in paths if json.dumps(f.get(p), sort_keys=True) != common[p]]
        out[run_id] = " ".join(diff) if diff else "-"
    return out


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def claims_table(claims: list[dict[str, Any]]) -> Table:
    """The rows of claims.json: decision, effect, 95% interval, p value and seeds of each claim."""
    table = Table("#", "claim", "result", "effect", "95% CI", "p", "seeds")
    for c in claims:
        table.add_row(*_claim_cells(c))
    return table


def _claim_cells(c: dict[str, Any]) -> list[str]:
    """One row of the claims table: a claim that could not run says so, with its reason, instead of FAIL."""
    if c.get("status") == "not run":
        return [str(c["id"]), c["name"], "[yellow]NOT RUN[/]", c.get("reason", ""), c.get("fix", ""), "", ""]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lo, hi = c["ci95"]
    return [
        str(c["id"]),
        c["name"],
        "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]",
        num(c["effect"], "+.3f"),
        f"[{num(lo, '+.3f')}, {num(hi, '+.3f')}]",
        num(c["p_value"], ".2g"),
        str(c["n_seeds"]),
    ]


def timing_table(stages: dict[str, float], title: str) -> Table:
    """Wall seconds per stage."""
    times = Table("stage", "wall s", title=title)
    for name, secs in stages.items():
        times.add_row(name, f"{secs:.1f}")
    return times


def sweep_summary(name: str, rep: Any, store: Any) -> str:
    """What a finished sweep did (``rep``: its ``robinherit.runs.sweep.SweepReport``)."""
    return (
        f"sweep '{name}': {rep.total} runs; {rep.ran} ran, {rep.skipped} were already stored"
        + (f", {rep.taken} stored meanwhile by another sweep" if rep.taken else "")
        + f"; store {store}"
    )


def print_crosscheck(out: Console, rep: dict[str, Any], head: str, art: bool) -> None:
    """A run's head evaluated three ways (``analysis.crosscheck.check_run``): certified (best, IBP, CROWN), PGD and,
    with ``art``, ART-PGD per eps, then its warnings and sandwich violations."""
    out.print(
        f"[bold]run {rep['run_id']}[/] seed {rep['seed']}, pretrain.eps {rep['pretrain_eps']:g}, {head} head, "
        f"{rep['norm']}: clean {rep['clean_acc']:.3f}"
    )
    cols = ["eps", "certified", "IBP", "CROWN", "PGD"] + (["ART-PGD"] if art else [])
    table = Table(*cols)
    for k, pgd_acc in rep["robust_acc"].items():
        row = [k, *(f"{rep[c][k]:.3f}" for c in ("certified_acc", "certified_ibp", "certified_crown"))]
        row.append(f"{pgd_acc:.3f}")
        if art:
            row.append(f"{rep['art_robust_acc'][k]:.3f}")
        table.add_row(*row)
    out.print(table)
    for w in rep["warnings"]:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
    for v in rep["violations"]:
        out.print(f"[red]violation:[/] {v}", highlight=False)
    if not rep["violations"]:
        what = "certified <= PGD <= ART-PGD + 0.01" if art else "certified <= PGD"
        out.print(f"[green]ok:[/] {what} at every eps", highlight=False)


__all__ = [
    "claims_table",
    "print_crosscheck",
    "print_record",
    "runs_table",
    "summary_line",
    "sweep_summary",
    "timing_table",
]
