"""Command line: ``robinherit run | runs | show | config`` (and the commands of later stages).

Errors a user can fix (config, data, store, non-finite loss) print one paragraph and exit with code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robinherit.analysis.tables import (
    claims_table,
    print_crosscheck,
    print_record,
    runs_table,
    summary_line,
    sweep_summary,
    timing_table,
)
from robinherit.errors import RobinheritError
from robinherit.paths import get_path
from robinherit.runs.sweep import BATCH as SWEEP_BATCH

app = typer.Typer(
    help="robinherit: robustness inheritance and feature purification experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

DEFAULT_STORE = Path("results/runs.db")
F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _process() -> None:
    # This process is robinherit's own: it takes the allocator setting of the compute paths
    # (robinherit.training.allocator) and the installed plugins (robinherit.plugins) before any command reads a
    # config. Library calls set neither, so a notebook's process stays as it was.
    from robinherit.plugins import load_entry_points
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()
    user_errors(load_entry_points)()


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def user_errors(fn: F) -> F:
    """Turn a RobinheritError into a one-paragraph message and exit code 2 (no traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RobinheritError as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            # said here, inside the command: the framework would otherwise end a Ctrl-C with a bare exit 130
            typer.echo("interrupted; finished runs are in the store, rerun the same command to resume", err=True)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def require_devices(devices: Iterable[str]) -> None:
    """Fail before anything is stored or run when a config asks for a CUDA device that torch cannot see."""
    wanted = sorted({d for d in devices if d.startswith("cuda")})
    if not wanted:
        return
    import torch

    if not torch.cuda.is_available():
        raise fail(f"device={wanted[0]} but torch sees no CUDA GPU here; use --set device=cpu")
    count = torch.cuda.device_count()
    for d in wanted:
        if ":" in d and int(d.split(":")[1]) >= count:
            raise fail(f"device={d} but torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}; pick one of those")


def parse_seeds(text: str | None, option: str = "--seeds") -> list[int] | None:
    """ "0,1,2" or "0-4" -> list of seeds (or of the numbers of ``option``, which error messages name)."""
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                if int(hi) < int(lo):  # "3-1" would silently select nothing (and run the config's seed instead)
                    raise fail(f"{option} '{text}': the range {part.strip()} is empty; write ranges low-high, e.g. 0-4")
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                seeds.append(int(part))
    except ValueError:
        raise fail(f"{option} '{text}' is not a list of integers; use e.g. {option} 0,1,2 or {option} 0-4") from None
    if any(s < 0 for s in seeds):
        raise fail(f"{option} '{text}' has a negative number; they are >= 0")
    if any(s > 2**63 - 1 for s in seeds):
        raise fail(f"{option} '{text}' has a number above 2**63 - 1, the largest a results store keeps")
    return seeds


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )


@app.command()
@user_errors
def run(
    config: str = typer.Argument(
        ..., help="YAML config, or the name of a shipped one: supervised, contrastive, digits, mnist1d, ..."
    ),
    set_: list[str] = typer.Option([], "--set", help="override a config path: --set pretrain.eps=0.25"),
    seeds: str | None = typer.Option(None, help="comma list or range of seeds, e.g. 0,1,2 or 0-4"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON record per seed, nothing else"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store (SQLite file)"),
    force: bool = typer.Option(False, help="run again even if the store has this config and seed"),
) -> None:
    """Run one experiment per seed on any data source (answered from the store when it already has it)."""
    from robinherit.config import load_config, with_updates
    from robinherit.runs.budget import check_fits
    from robinherit.runs.schedule import run_or_load
    from robinherit.runs.store import ResultStore

    cfg = load_config(config, set_)
    seed_list = parse_seeds(seeds) or [cfg.seed]
    require_devices([cfg.device])
    check_fits([cfg])
    db = ResultStore(store)  # opened first: a bad store fails before any compute
    with progress_bar(json_out) as bar:
        for seed in seed_list:
            c = with_updates(cfg, seed=seed)
            task = bar.add_task(f"seed {seed}", total=c.pretrain.steps)

            def on_progress(stage: str, done: int, total: int, task: Any = task, seed: int = seed) -> None:
                bar.update(task, completed=done, total=total, description=f"seed {seed}: {stage}")

            rec, cached = run_or_load(c, db, force=force, progress=on_progress)
            bar.remove_task(task)
            if json_out:
                print(json.dumps(rec), flush=True)
            else:
                print_record(out, rec, cached)


@app.command()
@user_errors
def runs(
    store: Path = typer.Option(DEFAULT_STORE, help="results store"), json_out: bool = typer.Option(False, "--json")
):
    """List stored runs."""
    from robinherit.runs.store import ResultStore

    if not store.exists():
        raise fail(f"results store '{store}' does not exist; run an experiment first or pass --store")
    records = ResultStore(store, read_only=True).runs()
    if json_out:
        for rec in records:
            print(json.dumps(summary_line(rec)))
        return
    out.print(runs_table(records))
    out.print(f"{len(records)} runs in {store}")


@app.command()
@user_errors
def show(
    run_id: str = typer.Argument(..., help="run id (a unique prefix is enough)"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store"),
) -> None:
    """Print one stored run as JSON."""
    from robinherit.runs.store import ResultStore

    if not store.exists():
        raise fail(f"results store '{store}' does not exist; pass --store")
    rec = ResultStore(store, read_only=True).find(run_id)
    if rec is None:
        raise fail(f"no run '{run_id}' in {store}; `robinherit runs --store {store}` lists the stored ids")
    print(json.dumps(rec, indent=2))


@app.command("config")
@user_errors
def config_cmd(
    config: str | None = typer.Argument(None, help="YAML config or a shipped config's name (default: all defaults)"),
    set_: list[str] = typer.Option([], "--set", help="override a config path"),
    json_out: bool = typer.Option(False, "--json"),
    explain: bool = typer.Option(False, "--explain", help="every path with its type, value, default and meaning"),
) -> None:
    """Print the resolved config with every default filled in (``--explain``: what each setting means)."""
    from robinherit.config import explain_config, load_config

    cfg = load_config(config, set_)
    if explain:  # plain lines, so a narrow terminal or a pipe never cuts a path
        rows = explain_config(cfg)
        width = max(len(r[0]) for r in rows)
        for path, kind, value, default, description in rows:
            changed = "" if value == default else f"  (default {default})"
            print(f"{path:<{width}}  {value}{changed}\n{'':<{width}}  {kind}: {description}")
        return
    resolved = cfg.resolved()
    if json_out:
        print(json.dumps(resolved, indent=2))
    else:
        print(f"# run_id: {cfg.config_hash()} (hash of the settings that change this run's numbers)")
        print(yaml.safe_dump(resolved, sort_keys=False), end="")


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
) -> None:
    """Run a sweep: every grid/random point x seed not yet in the store (killed sweeps resume)."""
    from robinherit.runs.store import ResultStore
    from robinherit.runs.sweep import Backend, load_sweep, run_sweep

    try:
        backend_kind = Backend(backend)
    except ValueError:
        raise fail(f"--backend '{backend}' is not one of: {', '.join(b.value for b in Backend)}") from None
    sw = load_sweep(spec).with_overrides(set_)
    cfgs = sw.configs()  # every point validated before the store is touched or anything runs
    db_path = store or sw.spec.store or DEFAULT_STORE
    if not dry_run and backend_kind == Backend.local:  # a Ray cluster's GPUs are its workers', not this machine's
        require_devices(c.device for c in cfgs)
    db = ResultStore(db_path)
    if dry_run:
        stored = db.run_ids()
        for cfg in cfgs:
            mark = "stored" if cfg.config_hash() in stored else "to run"
            point = {p: get_path(cfg.resolved(), p) for p in [*sw.spec.grid, *sw.spec.random]}
            out.print(f"{cfg.config_hash()}  seed {cfg.seed}  {point}  {mark}", highlight=False, soft_wrap=True)
        out.print(f"{len(cfgs)} runs, {sum(c.config_hash() in stored for c in cfgs)} stored, in {db_path}")
        return
    with progress_bar(quiet) as bar:
        task = bar.add_task(sw.spec.name, total=len(cfgs))

        def on_progress(rep: Any) -> None:
            bar.update(task, completed=rep.skipped + rep.ran + rep.taken + len(rep.failed))

        rep = run_sweep(
            cfgs, db, backend=backend_kind, workers=workers, address=address, on_progress=on_progress, batch=batch
        )
    out.print(sweep_summary(sw.spec.name, rep, db_path), highlight=False, soft_wrap=True)
    if rep.failed:
        for run_id, err in rep.failed:
            console.print(f"[red]run {run_id} failed:[/] {err}", highlight=False, soft_wrap=True)
        raise fail(f"{len(rep.failed)} of {rep.total} runs failed (nothing stored for them); fix and rerun to resume")


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
    out_file: Path | None = typer.Option(None, "--out", help="output stem; .png and .svg are written"),
    title: str | None = typer.Option(None, help="figure title"),
) -> None:
    """Phase diagram of a metric over config paths, with mean and interval over seeds (PNG and SVG)."""
    from robinherit.analysis.plots import Interval, Kind, XScale, filter_records
    from robinherit.analysis.plots import plot as draw
    from robinherit.runs.sweep import records_of

    for name, value, enum in (("--kind", kind, Kind), ("--interval", interval, Interval), ("--xscale", xscale, XScale)):
        if value not in {e.value for e in enum}:
            raise fail(f"{name} '{value}' is not one of: {', '.join(e.value for e in enum)}")
    records, _ = records_of(source, store)
    records = filter_records(records, where)
    stem = out_file or Path("results/figures") / "_".join(p.replace(".", "-") for p in (y, x, hue) if p)
    files, cells = draw(records, x=x, y=y, hue=hue, kind=kind, interval=interval, out=stem, title=title, xscale=xscale)
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


@app.command()
@user_errors
def evaluate(
    target: str = typer.Argument(
        ..., help="a stored run id (a unique prefix), a YAML config or a shipped config's name (run if not stored)"
    ),
    set_: list[str] = typer.Option([], "--set", help="override a config path (with a config TARGET)"),
    seeds: str | None = typer.Option(None, help="seeds of a config TARGET, e.g. 0,1,2 or 0-4"),
    head: str = typer.Option("clean", help="downstream head to evaluate: clean or adversarial"),
    crosscheck: bool = typer.Option(False, "--crosscheck", help="also attack with ART's PGD (the crosscheck extra)"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object per run, nothing else"),
) -> None:
    """Certified, PGD and (with --crosscheck) ART-PGD robust accuracy of a run's head, with self-checks.

    The encoder comes from the store; the head is retrained exactly as in the run. Exit code 1 when
    certified <= PGD <= ART-PGD + 0.01 fails at some eps.
    """
    from robinherit.analysis.crosscheck import check_run
    from robinherit.config import HeadKind, load_config, packaged_files, with_updates
    from robinherit.runs.schedule import run_or_load
    from robinherit.runs.store import ResultStore

    if head not in {h.value for h in HeadKind}:
        raise fail(f"--head '{head}' is not one of: {', '.join(h.value for h in HeadKind)}")
    is_config = Path(target).suffix.lower() in {".yaml", ".yml"} or Path(target).is_file()
    if is_config or target in packaged_files("configs"):
        cfg = load_config(target, set_)
        require_devices([cfg.device])
        db = ResultStore(store)
        records = [run_or_load(with_updates(cfg, seed=s), db)[0] for s in parse_seeds(seeds) or [cfg.seed]]
    else:
        if not store.exists():
            raise fail(f"results store '{store}' does not exist; pass --store, or a YAML config as TARGET")
        db = ResultStore(store, read_only=True)
        rec = db.find(target)
        if rec is None:
            raise fail(f"'{target}' is neither a config file nor a run id in {store}; `robinherit runs` lists ids")
        records = [rec]
    failed = False
    for rec in records:
        enc = db.artifact(rec["run_id"], "encoder")
        if enc is None:
            raise fail(f"run {rec['run_id']} has no stored encoder weights; rerun it with `robinherit run --force`")
        if head not in rec["config"]["downstream"]["heads"]:
            raise fail(f"run {rec['run_id']} was configured without a {head} head; pick --head from its heads")
        rep = check_run(rec, enc, head=head, art=crosscheck)
        failed |= bool(rep["violations"])
        if json_out:
            print(json.dumps(rep), flush=True)
            continue
        print_crosscheck(out, rep, head, crosscheck)
    if failed:
        raise typer.Exit(code=1)


@app.command(hidden=True)
def real(
    config: str = typer.Argument(..., help="real-data YAML config, e.g. configs/digits.yaml"),
    set_: list[str] = typer.Option([], "--set", help="override a config path"),
    seeds: str | None = typer.Option(None, help="seeds"),
    json_out: bool = typer.Option(False, "--json"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store (SQLite file)"),
    force: bool = typer.Option(False),
) -> None:
    """Renamed: real data runs with `robinherit run` like every other source (this alias goes in the next release)."""
    console.print("[yellow]`robinherit real` is now `robinherit run` (one pipeline for every data source).[/]")
    run(config, set_, seeds, json_out, store, force)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted; finished runs are in the store, rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
