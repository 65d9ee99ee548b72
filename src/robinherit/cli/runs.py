"""The commands about single runs: run, runs, show, config, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from robinherit.analysis.tables import (
    print_crosscheck,
    print_models,
    print_record,
    runs_table,
    summary_line,
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
from robinherit.errors import DataError


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
    yes: bool = typer.Option(False, "--yes", help="run more than 1,000 seeds"),
) -> None:
    """Run one experiment per seed on any data source (answered from the store when it already has it)."""
    from robinherit.config import load_config, with_updates
    from robinherit.runs.schedule import run_or_load
    from robinherit.runs.store import ResultStore

    cfg = load_config(config, set_)
    seed_list = parse_seeds(seeds) or [cfg.seed]
    if len(seed_list) > 1000 and not yes:
        raise fail(f"--seeds '{seeds}' asks for {len(seed_list):,} runs, more than 1,000; rerun with --yes to run them")
    require_devices([cfg.device])
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
        try:
            run_id = cfg.config_hash()
        except DataError as err:  # a file-based data set's id holds its files' fingerprint: none without the files
            print(f"# run_id: not known without the data files ({str(err).split(';')[0]})")
        else:
            print(f"# run_id: {run_id} (hash of the settings that change this run's numbers)")
        print(yaml.safe_dump(resolved, sort_keys=False), end="")


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


@app.command("audit")
@user_errors
def audit_cmd(
    encoder: str = typer.Argument(
        ...,
        help="path/file.py:callable or package.module:callable (returning an nn.Module: inputs -> features (n, m)), "
        "a registered encoder name with --weights, or a stored run id",
    ),
    data: str | None = typer.Option(None, "--data", help="a shipped config (fashion_mnist, digits, ...) or YAML file"),
    weights: Path | None = typer.Option(None, "--weights", help="a state dict for the encoder (torch.save)"),
    set_: list[str] = typer.Option([], "--set", help="override a config path: --set eval.n_test=200"),
    json_out: bool = typer.Option(False, "--json", help="print the audit's record as JSON, nothing else"),
    store: Path = typer.Option(DEFAULT_STORE, help="results store (SQLite file)"),
    force: bool = typer.Option(False, help="audit again even if the store has this encoder and these settings"),
) -> None:
    """The inheritance audit of any encoder: clean (SLF) and adversarial (ALF) heads on its frozen features, their
    robust accuracy, and measures of the units they read; stored like a run."""
    from robinherit.auditing import audit
    from robinherit.config import parse_overrides
    from robinherit.paths import flatten
    from robinherit.runs.store import ResultStore

    db = ResultStore(store)
    updates = flatten(parse_overrides(set_))
    rec = audit(encoder, data, weights=weights, store=db, force=force, updates=updates).to_dict()
    if json_out:
        print(json.dumps(rec), flush=True)
        return
    enc = rec["encoder"]
    out.print(
        f"[bold]audit {rec['run_id']}[/] {enc['class']} ({enc['parameters']:,} parameters, {enc['feature_dim']} "
        f"features, sha256 {enc['sha256'][:12]}) on {rec['dataset'].get('name', '?')}",
        highlight=False,
        soft_wrap=True,
    )
    print_models(out, {**({"classifier": rec["pretrain"]} if "pretrain" in rec else {}), **rec["downstream"]})
    if rec.get("units"):
        out.print("units: " + ", ".join(f"{k} {v:.3f}" for k, v in rec["units"].items()), highlight=False)
