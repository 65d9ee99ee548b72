"""Where one adversarial pre-training step's time goes: ``torch.profiler`` over a path of ``benchmarks.train_step``.

    python -m benchmarks.profile_step single      # or: reference, generic, batched8, batched32, head
    python -m benchmarks.profile_step single --steps 100 --top 15

``head`` is one step of an adversarial downstream head instead (a minibatch of 128, PGD through the frozen
encoder, as the synthetic configs train it). Prints the operations per step (every aten call, views included)
and the operations that take the most time, per step and per call. Profiling adds overhead to every call, so
these times are larger than the benchmark's; use them for proportions, not rates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

from benchmarks.train_step import DEFAULT, run_batched, run_reference, run_single
from robinherit.config import ExperimentConfig, HeadKind, with_updates
from robinherit.data.sources import SyntheticSource
from robinherit.runs.experiment import fit_head, frozen_encoder
from robinherit.world.sparse_coding import make_world


def paths(cfg: ExperimentConfig) -> dict[str, Callable[[int], None]]:
    return {
        "reference": lambda n: run_reference(cfg, n),
        "single": lambda n: run_single(cfg, n),
        "generic": lambda n: run_single(cfg, n, fast=False),
        "batched8": lambda n: run_batched(cfg, n, 8),
        "batched32": lambda n: run_batched(cfg, n, 32),
        "head": lambda n: run_head(cfg, n),
    }


def run_head(cfg: ExperimentConfig, steps: int) -> None:
    """``steps`` minibatch steps (128 examples) of an adversarial head on the config's freshly initialised encoder."""
    c = with_updates(cfg, **{"downstream.epochs": None, "downstream.batch_size": 128, "downstream.steps": steps})
    source = SyntheticSource(make_world(c.data, c.seed), c.seed)
    fit_head(c, frozen_encoder(c, None, source), source, HeadKind.adversarial)


def profile_path(run: Callable[[int], None], steps: int) -> list[tuple[str, float, float, float]]:
    """(op, microseconds per step, calls per step, microseconds per call), most time first."""
    run(3)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(steps)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return [(e.key, e.self_cpu_time_total / steps, e.count / steps, e.self_cpu_time_total / e.count) for e in events]


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", choices=sorted(paths(ExperimentConfig())))
    parser.add_argument("--steps", type=int, default=100, help="profiled training steps")
    parser.add_argument("--top", type=int, default=20, help="operations to list")
    args = parser.parse_args(argv)
    rows = profile_path(paths(with_updates(ExperimentConfig(), **DEFAULT))[args.path], args.steps)
    total_us, calls = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{args.path}: {total_us:.0f} us of operations and {calls:.0f} calls per step")
    for name, per_step, calls, per_call in rows[: args.top]:
        print(f"{name:45s} {per_step:8.1f} us/step {calls:6.1f} calls/step {per_call:7.1f} us/call")


if __name__ == "__main__":
    main(sys.argv[1:])
