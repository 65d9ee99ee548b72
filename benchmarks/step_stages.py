"""Where a stacked adversarial pre-training step's wall time goes, stage by stage, without a profiler's overhead.

    python -m benchmarks.step_stages                      # the default config at S = 32
    python -m benchmarks.step_stages --config large --size 1

Each stage is one of ``robinherit.training.stacked``'s functions that ``pretrain_stacked`` calls once per step (the
data,
the random starts, PGD, the training step's gradients, the optimiser's step and the loss log), timed with
``time.perf_counter`` around every call. ``torch.profiler`` (``benchmarks.profile_step``) gives the operations
inside; its overhead per call inflates small operations, so its times are proportions, these are rates. The
rest of the step (the loop, centring, copying gradients) is the total less the stages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.train_step import DEFAULT, LARGE, run_batched
from robinherit.config import ExperimentConfig, with_updates
from robinherit.training import stacked as batched

# stage -> the function of robinherit.training.stacked that pretrain_stacked calls for it once per step
STAGES = {
    "data (next_stacked)": "next_stacked",
    "random starts": "stacked_random_start",
    "PGD": "pgd_from",
    "training gradients": "closed_form_grads",
    "optimiser and log": "_end_step",
}


@contextmanager
def timed_stages() -> Iterator[dict[str, list[float]]]:
    """Within the block, every call of a stage's function adds its seconds to that stage's list."""
    seconds: dict[str, list[float]] = defaultdict(list)
    originals = {name: getattr(batched, name) for name in STAGES.values()}

    def timer(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage].append(time.perf_counter() - t0)

        return call

    for stage, name in STAGES.items():
        setattr(batched, name, timer(stage, originals[name]))
    try:
        yield seconds
    finally:
        for name, fn in originals.items():
            setattr(batched, name, fn)


def stages(cfg: ExperimentConfig, size: int, steps: int) -> tuple[float, dict[str, float]]:
    """(milliseconds per step in all, milliseconds per step of each stage) over ``steps`` steps of a stack of
    ``size``, after a 3-step warm-up. The total includes building the stack and its streams, once."""
    run_batched(cfg, 3, size)
    with timed_stages() as seconds:
        t0 = time.perf_counter()
        run_batched(cfg, steps, size)
        total = time.perf_counter() - t0
    return 1e3 * total / steps, {stage: 1e3 * sum(seconds[stage]) / steps for stage in STAGES}


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("default", "large"), default="default", help="benchmarks.train_step's")
    parser.add_argument("--size", type=int, default=32, help="stack size S")
    parser.add_argument("--steps", type=int, default=60, help="timed training steps")
    args = parser.parse_args(argv)
    cfg = with_updates(ExperimentConfig(), **(DEFAULT if args.config == "default" else LARGE))
    total, per_stage = stages(cfg, args.size, args.steps)
    n = cfg.pretrain.batch_size * args.size
    print(f"{args.config} config, S = {args.size}: {total:.2f} ms per step, {1e3 * n / total:.0f} samples/s")
    for stage, ms in per_stage.items():
        print(f"{stage:22s} {ms:7.2f} ms")
    print(f"{'rest':22s} {total - sum(per_stage.values()):7.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
