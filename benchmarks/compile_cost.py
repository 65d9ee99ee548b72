"""Whether compiling the adversarial step pays: one model of ``configs/supervised.yaml`` pre-trained for N steps,
eager and with ``ROBINHERIT_COMPILE=1`` (cold and warm inductor cache), each in a fresh process, as a run is.

    python -m benchmarks.compile_cost --steps 2000,6000 [--json]

Each row is the pre-training's wall time in its own process (imports and model set-up excluded; compiling
included, since a run pays it). The cache is a fresh temporary directory (``TORCHINDUCTOR_CACHE_DIR``): the first
compiled process fills it (cold), the next ones read it (warm). From two lengths the script fits a per-step cost
and a fixed cost per process for each mode, and prints the length above which a warm-cache compiled run is
faster than an eager one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(steps: int) -> float:
    """Seconds of ``steps`` pre-training steps of one model in this process (the child's job)."""
    from robinherit.config import load_config, with_updates
    from robinherit.models.two_layer import build_model
    from robinherit.seeding import generator
    from robinherit.training.pretraining import pretrain_supervised
    from robinherit.world.sparse_coding import BatchStream, make_world

    cfg = with_updates(load_config(ROOT / "src/robinherit/configs/supervised.yaml"), **{"pretrain.steps": steps})
    model = build_model(cfg.data.d, cfg.model, cfg.data.n_tasks, generator(0, "init"))
    stream = BatchStream(make_world(cfg.data, 0), cfg.pretrain.batch_size, 0)
    t0 = time.perf_counter()
    pretrain_supervised(model, stream, cfg)
    return time.perf_counter() - t0


def in_fresh_process(steps: int, compile_: bool, cache: str, threads: int) -> float:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]))
    env.pop("ROBINHERIT_COMPILE", None)
    if compile_:
        env["ROBINHERIT_COMPILE"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_cost", "--child", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(out.stdout.strip().splitlines()[-1])


def fit(lengths: list[int], seconds: list[float]) -> tuple[float, float]:
    """(fixed s, s per step) through the first and last points."""
    per_step = (seconds[-1] - seconds[0]) / (lengths[-1] - lengths[0])
    return seconds[0] - per_step * lengths[0], per_step


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="2000,6000", help="pre-training lengths, comma-separated (two or more)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process (a sweep worker has one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(one_run(args.child))
        return
    lengths = sorted({int(s) for s in args.steps.split(",")})
    if len(lengths) < 2:
        raise SystemExit("--steps needs two lengths or more to separate the fixed cost from the per-step cost")
    with tempfile.TemporaryDirectory() as cache:
        cold = in_fresh_process(lengths[0], True, cache, args.threads)
        eager = [in_fresh_process(n, False, cache, args.threads) for n in lengths]
        warm = [in_fresh_process(n, True, cache, args.threads) for n in lengths]
    (e0, e1), (w0, w1) = fit(lengths, eager), fit(lengths, warm)
    breakeven = (w0 - e0) / (e1 - w1) if e1 > w1 else float("inf")
    result = {
        "steps": lengths,
        "eager_s": eager,
        "compiled_warm_s": warm,
        "compiled_cold_s": {str(lengths[0]): cold},
        "eager_ms_per_step": 1e3 * e1,
        "compiled_ms_per_step": 1e3 * w1,
        "compiled_fixed_s_warm": w0 - e0,
        "breakeven_steps_warm": breakeven,
        "threads": args.threads,
    }
    if args.json:
        print(json.dumps(result))
        return
    for n, e, w in zip(lengths, eager, warm, strict=True):
        print(f"{n:>7} steps: eager {e:7.2f} s, compiled (warm cache) {w:7.2f} s")
    print(f"compiled, cold cache, {lengths[0]} steps: {cold:.2f} s")
    print(
        f"per step: eager {1e3 * e1:.2f} ms, compiled {1e3 * w1:.2f} ms; a compiled process pays {w0 - e0:.1f} s more "
        f"up front (warm cache); compiling pays above {breakeven:.0f} steps"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
