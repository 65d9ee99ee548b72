"""Command line: ``robinherit run | runs | show | config`` (and the commands of later stages).

Errors a user can fix (config, data, store, non-finite loss) print one paragraph and exit with code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robinherit.errors import RobinheritError

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


# the commands register themselves on ``app`` when their modules are imported
from robinherit.cli import atlas, runs, studies  # noqa: E402, F401


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted; finished runs are in the store, rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
