"""``robinherit atlas``: where each claim holds across the synthetic world's knobs (docs/atlas.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from robinherit.cli import app, fail, out, parse_seeds, progress_bar, user_errors


@app.command()
@user_errors
def atlas(
    spec: str = typer.Argument(
        ..., help="atlas spec YAML, or a shipped atlas's name: atlas_small, atlas_full, atlas_overcomplete"
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="output folder (default: results/atlas/<name>)"),
    store: Path | None = typer.Option(None, help="results store (default: the spec's, else <out>/runs.db)"),
    workers: int | None = typer.Option(None, help="runs in flight (1: in this process; default: all CPUs here)"),
    backend: str = typer.Option("local", help="local (process pool here) or ray (Ray tasks on a cluster)"),
    seeds: str | None = typer.Option(None, help="seeds instead of the spec's, e.g. 0,1,2 or 0-4"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Run an atlas: every cell's clean and adversarial pre-training runs (from the store where stored), the
    claims' paired statistics per cell, and the map, the table and the boundary in words."""
    from robinherit.reproduce.atlas import atlas as run_atlas
    from robinherit.runs.sweep import Backend

    try:
        backend_kind = Backend(backend)
    except ValueError:
        raise fail(f"--backend '{backend}' is not one of: {', '.join(b.value for b in Backend)}") from None
    seed_list = parse_seeds(seeds)
    with progress_bar(quiet) as bar:
        task = bar.add_task("atlas runs", total=None)
        res = run_atlas(
            spec,
            out_dir,
            store,
            seeds=tuple(seed_list) if seed_list else None,
            workers=workers,
            backend=backend_kind,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for sentence in res.boundary:
        out.print(f"- {sentence}", highlight=False, soft_wrap=True)
    out.print(
        f"{res.runs.total} runs ({res.runs.ran} computed, {res.runs.total - res.runs.ran} from the store), "
        f"{res.seconds:.0f} s; wrote {len(res.files)} files under {res.files[0].parent}",
        highlight=False,
        soft_wrap=True,
    )
    if res.runs.failed:
        raise fail(f"{len(res.runs.failed)} runs failed (their cells lack those seeds); fix and rerun to resume")
