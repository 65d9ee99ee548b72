"""Adversarial pre-training throughput: a plain reference vs the toolkit's single-model and batched paths.

In one process, for the default config (d=64, m=128, batch 256, l2 PGD-5) and a large one (d=m=512), times

  (a) reference  ``benchmarks.reference``: nn.Module + autograd PGD, written the obvious way;
  (b) single     ``pretraining.pretrain_supervised`` (what ``run_experiment`` uses: a stack of one, closed-form
                 attack and weight gradients); ``generic`` is the same with ``fast=False`` (closed-form attack
                 gradients, autograd training step: the loop every other model takes);
  (c) batched    ``stacked.pretrain_stacked`` with S models in one stack (S = 1, 8, 32);
  (c') with ``--compile``, single and batched again with ``ROBINHERIT_COMPILE=1`` (the adversarial step
                 compiled by torch.compile; compiling happens in the untimed warm-up);
  (d) data only  drawing the batches of the largest S's streams and nothing else: every path pays this, so
                 its samples/s is a ceiling for the batched path at that S;
  (e) matmuls only  the matrix products of the stacked adversarial step at the largest S, on fixed tensors,
                 and nothing else (no data, no elementwise work): the arithmetic's own ceiling on this machine.
                 Data and products run one after the other, so 1 / (1/data + 1/matmuls) bounds any path
                 at that S (printed as "ceiling");

and prints samples/s (total over the S models), the ratio to (a), achieved GFLOP/s and the share of the
machine's matmul peak, measured here with one large fp32 matmul. Each path is timed ``--repeats`` times, in
rounds that interleave the paths (``benchmarks.timing.interleaved``), and the best time kept (other load on the
machine only ever slows a run down).

    python -m benchmarks.train_step            # table
    python -m benchmarks.train_step --json     # one JSON object
    python -m benchmarks.train_step --device cuda --sizes 1,32,128,512 --skip-large   # on a GPU

With ``--device cuda`` every path, the reference included, runs on the GPU (the data streams draw on the host and
copy each batch over, as training does), and each timed run waits for the GPU's queue to drain before the clock
stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.reference import ReferenceNet
from benchmarks.reference import train as reference_train
from benchmarks.timing import best, interleaved, steps_for, sync
from robinherit.config import ExperimentConfig, with_updates
from robinherit.models.stacked import StackedTwoLayer
from robinherit.models.two_layer import build_model
from robinherit.ops.closed_form import back_through_head
from robinherit.runs.provenance import git_commit
from robinherit.seeding import generator
from robinherit.training.pretraining import pretrain_supervised
from robinherit.training.stacked import pretrain_stacked
from robinherit.world.sparse_coding import BatchStream, make_world, next_stacked

DEFAULT = {"data.d": 64, "model.width": 128, "pretrain.batch_size": 256, "pretrain.attack_steps": 5}
LARGE = {"data.d": 512, "model.width": 512, "pretrain.batch_size": 256, "pretrain.attack_steps": 5}


def _fewest(rounds: list[float | None]) -> float | None:
    """The fewest page faults per step over the rounds, None where the kernel did not count them."""
    return None if None in rounds else min(rounds)


def flops_per_sample(cfg: ExperimentConfig) -> float:
    """Matmul FLOPs of one adversarial training step, per example: each PGD step a forward (x W^T) and an
    input gradient (g W), the final loss evaluation of the best point, and the training step's forward and
    weight gradient; head terms (m x K) included. Elementwise work is not counted."""
    d, m, k, a = cfg.data.d, cfg.model.width, cfg.data.n_tasks, cfg.pretrain.attack_steps
    per_pass = 2 * d * m + 2 * m * k  # forward of one example
    return per_pass * (2 * a + 1 + 2)


def matmul_peak(seconds: float = 1.0, device: str = "cpu") -> tuple[float, float]:
    """Best fp32 GFLOP/s of a square matmul on ``device`` (sizes 1024 and 2048, and 4096 on a GPU): by wall
    clock, by CPU time (the latter means little on a GPU, where the host only waits)."""
    wall = cpu = 0.0
    sizes = (1024, 2048, 4096) if torch.device(device).type == "cuda" else (1024, 2048)
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b  # warm-up
        sync(device)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(sizes):
            w1, c1 = time.perf_counter(), time.process_time()
            a @ b
            sync(device)
            w, c = time.perf_counter() - w1, time.process_time() - c1
            wall = max(wall, 2 * n**3 / w / 1e9)
            cpu = max(cpu, 2 * n**3 / max(c, 1e-9) / 1e9 * torch.get_num_threads())
    return wall, cpu


def _streams(cfg: ExperimentConfig, seeds: range) -> list[BatchStream]:
    return [BatchStream(make_world(cfg.data, s), cfg.pretrain.batch_size, s, device=cfg.device) for s in seeds]


def run_reference(cfg: ExperimentConfig, steps: int) -> None:
    stream = _streams(cfg, range(1))[0]
    model = ReferenceNet(cfg.data.d, cfg.model.width, cfg.data.n_tasks, cfg.model.threshold, generator(0, "init"))
    model = model.to(cfg.device)

    def sample():
        batch = stream.next()
        return batch.x, batch.y

    reference_train(model, sample, steps, cfg.pretrain.eps, cfg.pretrain.attack_steps, cfg.pretrain.lr)


def run_single(cfg: ExperimentConfig, steps: int, fast: bool = True) -> None:
    c = with_updates(cfg, **{"pretrain.steps": steps})
    stream = _streams(c, range(1))[0]
    model = build_model(c.data.d, c.model, c.data.n_tasks, generator(0, "init")).to(c.device)
    pretrain_supervised(model, stream, c, fast=fast)


def run_batched(cfg: ExperimentConfig, steps: int, size: int) -> StackedTwoLayer:
    """``steps`` steps of a stack of ``size`` models (seeds 0 .. size - 1); the trained stack."""
    cfgs = [with_updates(cfg, **{"pretrain.steps": steps, "seed": s}) for s in range(size)]
    streams = _streams(cfgs[0], range(size))
    net = StackedTwoLayer([build_model(c.data.d, c.model, c.data.n_tasks, generator(c.seed, "init")) for c in cfgs])
    pretrain_stacked(net.to(cfgs[0].device), streams, cfgs)
    return net


def compiled(run: Callable[[int], None]) -> Callable[[int], None]:
    """``run`` with ``ROBINHERIT_COMPILE=1`` (the adversarial step compiled by torch.compile). The first call
    per shape compiles; the untimed warm-up (``timing.steps_for``) takes that, so the timed runs do not."""

    def go(steps: int) -> None:
        old = os.environ.get("ROBINHERIT_COMPILE")
        os.environ["ROBINHERIT_COMPILE"] = "1"
        try:
            run(steps)
        finally:
            if old is None:
                del os.environ["ROBINHERIT_COMPILE"]
            else:
                os.environ["ROBINHERIT_COMPILE"] = old

    return go


def run_data_only(cfg: ExperimentConfig, steps: int, size: int) -> None:
    """Only the batches of S streams, drawn as the stacked path draws them (``sparse_coding.next_stacked``; what
    every path draws before any training): the data's own ceiling."""
    streams = _streams(cfg, range(size))
    for _ in range(steps):
        next_stacked(streams)


def run_matmuls_only(cfg: ExperimentConfig, steps: int, size: int) -> None:
    """The matrix products of ``size`` stacked adversarial training steps and nothing else, on fixed tensors: per
    PGD step the forward (x W^T, then the head) and the input gradient (through the head, then W), the final
    loss's forward, and the training step's forward and weight gradients, at the stacked path's shapes."""
    n, d, m, k = cfg.pretrain.batch_size, cfg.data.d, cfg.model.width, cfg.data.n_tasks
    g, dev = torch.Generator().manual_seed(0), cfg.device

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dev)

    x, w, v, c = randn(size, n, d), randn(size, m, d), randn(size, k, m), randn(size, 1, k)
    g_logits, g_u = randn(size, n, k), randn(size, n, m)
    for _ in range(steps):
        for _ in range(cfg.pretrain.attack_steps):
            h = x @ w.transpose(1, 2)
            torch.baddbmm(c, h, v.transpose(1, 2))
            back_through_head(g_logits, v)
            g_u @ w
        h = x @ w.transpose(1, 2)  # the best point's loss
        torch.baddbmm(c, h, v.transpose(1, 2))
        h = x @ w.transpose(1, 2)  # the training step
        torch.baddbmm(c, h, v.transpose(1, 2))
        g_logits.transpose(1, 2) @ h
        back_through_head(g_logits, v)
        g_u.transpose(1, 2) @ x


def bench_config(
    name: str, cfg: ExperimentConfig, sizes: tuple[int, ...], repeats: int, target_s: float, compile_: bool = False
) -> list[dict]:
    paths: list[tuple[str, int, Callable[[int], None]]] = [
        ("reference", 1, lambda n: run_reference(cfg, n)),
        ("single", 1, lambda n: run_single(cfg, n)),
        ("generic", 1, lambda n: run_single(cfg, n, fast=False)),
    ] + [("batched", s, lambda n, s=s: run_batched(cfg, n, s)) for s in sizes]
    if compile_:
        paths.append(("single+compile", 1, compiled(lambda n: run_single(cfg, n))))
        paths += [("batched+compile", s, compiled(lambda n, s=s: run_batched(cfg, n, s))) for s in sizes if s > 1]
    paths.append(("data only", max(sizes), lambda n: run_data_only(cfg, n, max(sizes))))
    paths.append(("matmuls only", max(sizes), lambda n: run_matmuls_only(cfg, n, max(sizes))))
    runs = {f"{path}/{size}": run for path, size, run in paths}
    steps = {name: steps_for(run, target_s, cfg.device) for name, run in runs.items()}
    faults: dict[str, list[float]] = {}
    times = interleaved(runs, steps, repeats, cfg.device, warmup=0, faults=faults)  # steps_for warmed them up
    rows = []
    flops = flops_per_sample(cfg)
    for path, size, _ in paths:
        wall, cpu = best(times[f"{path}/{size}"])
        sps = size * cfg.pretrain.batch_size / wall
        sps_cpu = size * cfg.pretrain.batch_size / cpu
        rows.append(
            {
                "config": name,
                "path": path,
                "S": size,
                "samples_per_s": sps,
                "samples_per_cpu_s": sps_cpu,
                "gflops": 0.0 if path == "data only" else sps * flops / 1e9,
                # fresh pages from the kernel per step (fewest of the rounds): large tensors above glibc's
                # mmap threshold are handed back and faulted in again on every allocation
                # (None where the kernel does not count page faults)
                "minor_faults_per_step": _fewest(faults[f"{path}/{size}"]),
            }
        )
    data, products = rows[-2], rows[-1]
    # data and products run one after the other in every path, so their times add: a bound, not a measurement
    ceiling = {key: 1 / (1 / data[key] + 1 / products[key]) for key in ("samples_per_s", "samples_per_cpu_s")}
    rows.append(
        {"config": name, "path": "ceiling", "S": data["S"], **ceiling, "gflops": ceiling["samples_per_s"] * flops / 1e9}
    )
    ref, ref_cpu = rows[0]["samples_per_s"], rows[0]["samples_per_cpu_s"]
    for r in rows:
        r["ratio"] = r["samples_per_s"] / ref
        r["ratio_cpu"] = r["samples_per_cpu_s"] / ref_cpu
    return rows


# rows that bound the training paths rather than train a model
BOUNDS = frozenset({"data only", "matmuls only", "ceiling"})


def trains(row: dict) -> bool:
    """Whether ``row`` times a training path (not one of the bounds of ``BOUNDS``)."""
    return row["path"] not in BOUNDS


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.train_step`` (tests check ``scripts/gpu_perf.sh``'s calls on it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the best is kept")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long one timed run lasts")
    parser.add_argument("--skip-large", action="store_true", help="only the default config")
    parser.add_argument(
        "--compile", action="store_true", help="also time the paths with ROBINHERIT_COMPILE=1 (compiles first)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (every path, the reference included)")
    parser.add_argument(
        "--sizes", default="1,8,32", help="stack sizes S of the batched path on the default config (comma-separated)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = tuple(sorted({int(s) for s in args.sizes.split(",")}))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch here; run on a GPU machine or leave it out")

    peak, peak_cpu = matmul_peak(device=args.device)
    base = with_updates(ExperimentConfig(), device=args.device)
    rows = bench_config("default", with_updates(base, **DEFAULT), sizes, args.repeats, args.seconds, args.compile)
    if not args.skip_large:
        rows += bench_config("large", with_updates(base, **LARGE), (1, 8), args.repeats, args.seconds, args.compile)
    top = max(sizes)

    def pick(config: str, path: str, size: int = 1) -> dict:
        return next(r for r in rows if r["config"] == config and r["path"] == path and r["S"] == size)

    large = [r for r in rows if r["config"] == "large" and trains(r)]
    result = {
        "reference_samples_per_s": pick("default", "reference")["samples_per_s"],
        "single_samples_per_s": pick("default", "single")["samples_per_s"],
        "batched_samples_per_s": {str(s): pick("default", "batched", s)["samples_per_s"] for s in sizes if s > 1},
        # drawing the largest stack's batches alone (S = 32 by default): a ceiling for any training path at that S
        "ceiling_S": top,
        "data_only_samples_per_s": pick("default", "data only", top)["samples_per_s"],
        # the step's matrix products alone at that S, and the bound data + products put on any path there
        "matmuls_only_samples_per_s": pick("default", "matmuls only", top)["samples_per_s"],
        "ceiling_samples_per_s": pick("default", "ceiling", top)["samples_per_s"],
        **(
            {
                "compiled_single_samples_per_s": pick("default", "single+compile")["samples_per_s"],
                "compiled_batched_samples_per_s": {
                    str(s): pick("default", "batched+compile", s)["samples_per_s"] for s in sizes if s > 1
                },
            }
            if args.compile
            else {}
        ),
        "matmul_peak_gflops": peak,
        "matmul_peak_gflops_by_cpu_time": peak_cpu,
        # the best training path on the large config (its rows, bounds included, are in "rows")
        "large_config_gflops": max((r["gflops"] for r in large), default=None),
        "commit": git_commit(),
        "device": args.device if args.device == "cpu" else f"{args.device} ({torch.cuda.get_device_name(args.device)})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"commit {result['commit']}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s (by CPU time: {peak_cpu:.1f})")
    print(
        f"{'config':8} {'path':15} {'S':>3} {'samples/s':>10} {'x ref':>6} {'GFLOP/s':>8} {'% peak':>7} "
        f"{'samples/cpu-s':>14} {'x ref':>6} {'faults/step':>11}"
    )
    for r in rows:
        print(
            f"{r['config']:8} {r['path']:15} {r['S']:>3} {r['samples_per_s']:>10.0f} {r['ratio']:>6.2f} "
            f"{r['gflops']:>8.1f} {100 * r['gflops'] / peak:>6.1f}% "
            f"{r['samples_per_cpu_s']:>14.0f} {r['ratio_cpu']:>6.2f} "
            + (f"{r['minor_faults_per_step']:>11.0f}" if r.get("minor_faults_per_step") is not None else f"{'-':>11}")
        )


if __name__ == "__main__":
    main(sys.argv[1:])
