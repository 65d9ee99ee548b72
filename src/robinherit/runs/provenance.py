"""Package versions and the git commit, recorded with every result."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch


def versions() -> dict[str, str]:
    """The software a record was computed with, and torch's CPU thread count: multi-threaded reductions sum in
    another order with another count, so a run's numbers are bit for bit the same only at the same count (1 and 2
    threads give runs whose robust accuracies differ by a few test examples after hundreds of training steps)."""
    return {**_packages(), "torch_threads": str(torch.get_num_threads())}


@functools.cache
def _packages() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("robinherit", "torch", "numpy", "pydantic", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@functools.cache
def git_commit() -> str:
    """HEAD of the checkout the package runs from, with ``-dirty`` for uncommitted changes; else "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
