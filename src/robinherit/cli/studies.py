"""The commands about many runs: reproduce, sweep, plot, correlate, export."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer

from robinherit.analysis.tables import (
    claims_table,
    sweep_summary,
    timing_table,
)
from robinherit.cli import (
    DEFAULT_STORE,
    app,
    console,
    fail,
    out,
    parse_seeds,
    progress_bar,
    require_devices,
    user_errors,
)
from robinherit.paths import get_path
from robinherit.runs.sweep import BATCH as SWEEP_BATCH


@app.command()
@user_errors
def reproduce(
    quick: bool = typer.Option(
        False, "--quick", help="3 seeds, half the test set, shorter contrastive runs (the README's demo)"
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", help="number of seeds (default: 3 with --quick, else 5)", min=1, show_default=False
    ),
    out_dir: Path = typer.Option(Path("results/reproduce"), "--out", help="folder for claims.json and reports"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store: finished runs are reused, so reruns resume"),
    set_: list[str] = typer.Option([], "--set", help="override a path in every base config, e.g. model.threshold=0"),
    claims: str = typer.Option("all", help="which claims to check: all, or numbers such as 1-4 or 1,3,5"),
    workers: int = typer.Option(
        min(2, os.cpu_count() or 1),
        min=1,
        help="processes for the pre-training runs and derived results (1: all in this process)",
    ),
) -> None:
    """Check every claim of docs/theory.md across seeds; write claims.json, report.html and report.md."""
    from robinherit.reproduce import CLAIMS, ReproduceSettings, write_claims
    from robinherit.reproduce import reproduce as run_reproduce
    from robinherit.reproduce.report import write_report
    from robinherit.runs.store import ResultStore

    numbers = sorted({spec.number for spec in CLAIMS.values()})  # the registry as it is now, extensions included
    asked = numbers if claims == "all" else (parse_seeds(claims, "--claims") or [])
    unknown = sorted(set(asked) - set(numbers))
    if unknown or not asked:
        what = f"names no claim {', '.join(map(str, unknown))}" if unknown else "names no claim"
        raise fail(f"--claims '{claims}' {what}; claims are numbered {', '.join(map(str, numbers))}, or use all")
    wanted = tuple(sorted(set(asked)))
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out '{out_dir}' is a file; reproduce writes a folder (claims.json, report.html, report.md)")
    n = seeds or (3 if quick else 5)
    settings = ReproduceSettings(
        seeds=tuple(range(n)), quick=quick, overrides=tuple(set_), claims=wanted, workers=workers
    )
    # validate configs and overrides, and the device they ask for, before any compute
    require_devices([settings.base(fam).device for fam in settings.families()])
    db = ResultStore(store)
    with progress_bar(False) as bar:
        task = bar.add_task("reproduce", total=None)

        def on_progress(what: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=what)

        result = run_reproduce(settings, db, progress=on_progress)
    t_report = time.perf_counter()
    claims_path = write_claims(result, out_dir)
    html_path, md_path = write_report(result, db, out_dir)
    report_s = time.perf_counter() - t_report
    out.print(claims_table(result.claims))
    stages = {**result.timing["stages"], "report and figures": report_s, "total": result.timing["wall"] + report_s}
    out.print(timing_table(stages, f"where the time went (the work inside: {md_path.name})"))
    out.print(f"wrote {claims_path}, {html_path}, {md_path}")


# a sweep or run of more runs than this asks for --yes: a typo in a grid or a seed range should not start days of work
MANY_RUNS = 1000


@app.command()
@user_errors
def sweep(
    spec: str = typer.Argument(
        ..., help="sweep spec YAML, or a shipped spec's name, e.g. sweeps/supervised_eps_threshold.yaml"
    ),
    backend: str = typer.Option("local", help="local (process pool here) or ray (Ray tasks on a cluster)"),
    workers: int | None = typer.Option(None, help="runs in flight (default: all CPUs here / 2x the cluster's)"),
    address: str | None = typer.Option(None, help="Ray cluster address; 'auto' finds `ray start --head`"),
    store: Path | None = typer.Option(None, help="results store (default: the spec's store, else results/runs.db)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and how many are stored; run nothing"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    batch: int = typer.Option(
        SWEEP_BATCH, min=1, help="encoders per task (with every run on each); shape-sharing ones pre-train as one stack"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="override a config path in every run, e.g. --set device=cuda (not a path the spec sweeps)"
    ),
    yes: bool = typer.Option(False, "--yes", help=f"run a sweep of more than {MANY_RUNS:,} runs"),
) -> None:
    """Run a sweep: every grid/random point x seed not yet in the store (killed sweeps resume); a spec with
    `audit:` audits its encoder once per point instead."""
    from robinherit.runs.store import ResultStore
    from robinherit.runs.sweep import Backend, load_sweep, run_sweep

    try:
        backend_kind = Backend(backend)
    except ValueError:
        raise fail(f"--backend '{backend}' is not one of: {', '.join(b.value for b in Backend)}") from None
    sw = load_sweep(spec).with_overrides(set_)
    db_path = store or sw.spec.store or DEFAULT_STORE
    if sw.spec.audit is not None:
        if backend_kind != Backend.local:
            raise fail(f"--backend {backend}: an audit sweep's audits run in this process, one after another")
        _audit_sweep(sw, db_path, dry_run=dry_run, quiet=quiet)
        return
    cfgs = sw.configs()  # every point validated before the store is touched or anything runs
    if not dry_run and backend_kind == Backend.local:  # a Ray cluster's GPUs are its workers', not this machine's
        require_devices(c.device for c in cfgs)
    if not dry_run and len(cfgs) > MANY_RUNS and not yes:
        raise fail(
            f"sweep '{sw.spec.name}' expands to {len(cfgs):,} runs, more than {MANY_RUNS:,}; check it with --dry-run, "
            "then rerun with --yes to run them all"
        )
    db = ResultStore(db_path)
    if dry_run:
        _list_runs(sw, [(c, c.config_hash()) for c in cfgs], db, db_path)
        return
    with progress_bar(quiet) as bar:
        task = bar.add_task(sw.spec.name, total=len(cfgs))

        def on_progress(rep: Any) -> None:
            bar.update(task, completed=rep.skipped + rep.ran + rep.taken + len(rep.failed))

        rep = run_sweep(
            cfgs, db, backend=backend_kind, workers=workers, address=address, on_progress=on_progress, batch=batch
        )
    _summarise(sw, rep, db_path, "run")


def _summarise(sw: Any, rep: Any, db_path: Path, what: str) -> None:
    """The sweep's summary line, then each failed run (or audit) and exit 1 if any failed."""
    out.print(sweep_summary(sw.spec.name, rep, db_path), highlight=False, soft_wrap=True)
    if rep.failed:
        for run_id, err in rep.failed:
            console.print(f"[red]{what} {run_id} failed:[/] {err}", highlight=False, soft_wrap=True)
        raise fail(
            f"{len(rep.failed)} of {rep.total} {what}s failed (nothing stored for them); fix and rerun to resume"
        )


def _list_runs(sw: Any, points: list[tuple[Any, str]], db: Any, db_path: Path, what: str = "run") -> None:
    """``--dry-run``: every run (or audit) of the sweep, as (config, id), its swept values and whether the store
    has it."""
    stored = db.run_ids()
    for cfg, run_id in points:
        mark = "stored" if run_id in stored else f"to {what}"
        point = {p: get_path(cfg.resolved(), p) for p in [*sw.spec.grid, *sw.spec.random]}
        out.print(f"{run_id}  seed {cfg.seed}  {point}  {mark}", highlight=False, soft_wrap=True)
    out.print(f"{len(points)} {what}s, {sum(i in stored for _, i in points)} stored, in {db_path}")


def _audit_sweep(sw: Any, db_path: Path, *, dry_run: bool, quiet: bool) -> None:
    """An audit sweep: one audit of the spec's encoder per point, in this process
    (``robinherit.auditing.audit_sweep``)."""
    from robinherit.auditing import audit_sweep
    from robinherit.runs.audit_target import audit_points
    from robinherit.runs.store import ResultStore

    db = ResultStore(db_path)
    resolved = audit_points(sw, db)  # the encoder and every point checked before anything runs, resolved once
    if dry_run:
        _list_runs(sw, resolved[2], db, db_path, "audit")
        return
    require_devices(cfg.device for cfg, _ in resolved[2])
    with progress_bar(quiet) as bar:
        task = bar.add_task(sw.spec.name, total=len(resolved[2]))

        def on_progress(rep: Any) -> None:
            bar.update(task, completed=rep.skipped + rep.ran + len(rep.failed))

        rep = audit_sweep(sw, db, on_progress=on_progress, resolved=resolved)
    _summarise(sw, rep, db_path, "audit")


@app.command()
@user_errors
def plot(
    source: Path = typer.Argument(..., help="a results store (.db) or a sweep spec (.yaml: that sweep's runs)"),
    x: str = typer.Option(..., "--x", help="config path on the x axis, e.g. pretrain.eps"),
    y: str = typer.Option(..., "--y", help="metric path, e.g. downstream.clean_head.robust_acc.0.25"),
    hue: str | None = typer.Option(None, "--hue", help="config path: one line per value (heatmap: the rows)"),
    kind: str = typer.Option("line", help="line or heatmap"),
    interval: str = typer.Option("ci95", help="over seeds: ci95 (Student t), sd or range"),
    xscale: str = typer.Option("linear", help="x axis of a line plot: linear, log, symlog or category"),
    where: list[str] = typer.Option([], "--where", help="keep runs with PATH=VALUE, e.g. pretrain.method=supervised"),
    store: Path | None = typer.Option(None, help="store of a sweep spec (default: the spec's store)"),
    out_file: Path | None = typer.Option(None, "--out", help="output stem; .png (300 dpi), .svg and .pdf are written"),
    title: str | None = typer.Option(None, help="figure title"),
    xlabel: str | None = typer.Option(None, "--xlabel", help="x axis label (default: the config field's description)"),
    ylabel: str | None = typer.Option(None, "--ylabel", help="y axis label (default: the field's description or path)"),
) -> None:
    """Phase diagram of a metric over config paths, with mean and interval over seeds (PNG, SVG and PDF)."""
    from robinherit.analysis.plots import Interval, Kind, XScale, filter_records
    from robinherit.analysis.plots import plot as draw
    from robinherit.runs.sweep import records_of

    for name, value, enum in (("--kind", kind, Kind), ("--interval", interval, Interval), ("--xscale", xscale, XScale)):
        if value not in {e.value for e in enum}:
            raise fail(f"{name} '{value}' is not one of: {', '.join(e.value for e in enum)}")
    records, _ = records_of(source, store)
    records = filter_records(records, where)
    stem = out_file or Path("results/figures") / "_".join(p.replace(".", "-") for p in (y, x, hue) if p)
    files, cells = draw(
        records, x=x, y=y, hue=hue, kind=kind, interval=interval, out=stem, title=title, xscale=xscale,
        xlabel=xlabel, ylabel=ylabel,
    )  # fmt: skip
    out.print(
        f"{len(records)} runs, {len(cells)} points -> {', '.join(map(str, files))}", highlight=False, soft_wrap=True
    )


@app.command()
@user_errors
def correlate(
    source: Path = typer.Argument(..., help="a results store (.db) or a sweep spec (.yaml: that sweep's runs)"),
    x: str = typer.Option(..., "--x", help="metric path, e.g. purification.top1_share_mean"),
    y: str = typer.Option(..., "--y", help="metric path, e.g. downstream.clean_head.robust_acc.0.1"),
    color_by: str | None = typer.Option(None, "--color-by", help="config path that colours the points"),
    where: list[str] = typer.Option([], "--where", help="keep runs with PATH=VALUE, e.g. pretrain.method=supervised"),
    store: Path | None = typer.Option(None, help="store of a sweep spec (default: the spec's store)"),
    out_file: Path | None = typer.Option(None, "--out", help="figure stem; .png and .svg are written"),
    resamples: int = typer.Option(2000, min=100, help="bootstrap resamples of the runs"),
    title: str | None = typer.Option(None, help="figure title"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Spearman's rho between two metrics across runs, with a 95% bootstrap interval over runs, and a scatter."""
    from robinherit.analysis.correlate import correlate as corr
    from robinherit.analysis.correlate import scatter
    from robinherit.analysis.plots import filter_records
    from robinherit.runs.sweep import records_of

    records, _ = records_of(source, store)
    records = filter_records(records, where)
    c = corr(records, x, y, color_by=color_by, resamples=resamples)
    stem = out_file or Path("results/figures") / "_".join(["corr", *(p.replace(".", "-") for p in (y, x))])
    files = scatter(c, stem, color_by=color_by, title=title)
    if as_json:
        print(json.dumps({**c.summary(), "figures": [str(f) for f in files]}))
        return
    out.print(
        f"Spearman rho({x}, {y}) = {c.rho:+.3f}, 95% bootstrap interval [{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], "
        f"{c.n} runs (p = {c.p_value:.2g}) -> {', '.join(map(str, files))}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@user_errors
def export(
    source: Path | None = typer.Argument(None, help="store (.db) or sweep spec (.yaml); default: --store"),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet (parquet needs pyarrow)"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store"),
    out_file: Path | None = typer.Option(None, "--out", help="output file (default: the store's name + suffix)"),
) -> None:
    """The store as a tidy table: one row per run, config paths and metrics as columns."""
    from robinherit.analysis.export import Format
    from robinherit.analysis.export import export as write
    from robinherit.runs.sweep import records_of

    if fmt not in {f.value for f in Format}:
        raise fail(f"--format '{fmt}' is not one of: {', '.join(f.value for f in Format)}")
    if source is not None and source.suffix.lower() in {".yaml", ".yml"}:
        records, db_path = records_of(source, store if store != DEFAULT_STORE else None)
    else:
        records, db_path = records_of(source or store)
    target = out_file or db_path.with_suffix(f".{fmt}")
    path = write(records, fmt, target)
    out.print(f"{len(records)} runs -> {path}", highlight=False, soft_wrap=True)
