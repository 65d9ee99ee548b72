"""Adversarial pre-training throughput on Fashion-MNIST-sized inputs: the toolkit's real-data paths vs plain PyTorch.

In one process, on random inputs in [0, 1] shaped like Fashion-MNIST (1 x 28 x 28, flat d = 784, 10 classes,
uniform random labels; 10,000 training images by default, ``--n-train``; no data files are read), times steps of
supervised l-inf PGD-3 adversarial pre-training at eps 0.1 (cross-entropy, Adam, batch 128) with the settings of
the two shipped Fashion-MNIST configs:

  two-layer (``fashion_mnist_two_layer``: 784 -> 128 symmetric thresholded ReLU units, threshold 0.1, rows not
  normalised, linear head):
    (a) reference  ``benchmarks.reference_real.ReferenceTwoLayer`` + autograd PGD and an autograd training step;
    (b) toolkit    ``experiment.pretrain`` on the source ``run_experiment`` builds for this config (an
                   ``ArraySource`` over the random arrays, its ``BatchStream.from_arrays`` stream): for the two-layer
                   net ``pretrain_supervised`` runs a stack of one (``stacked.pretrain_one``), closed-form PGD input
                   gradients and closed-form weight gradients in one function, fused Adam;
  CNN (``fashion_mnist``: conv [16, 32], feature width 64, threshold 0):
    (c) reference  ``benchmarks.reference_real.ReferenceConvNet``, the layers of ``robinherit.models.conv.ConvNet``,
                   + autograd PGD and an autograd training step;
    (d) toolkit    ``experiment.pretrain`` for this config: the generic loop of ``pretrain_supervised`` (there is no
                   closed form for the conv net: ``attacks.pgd`` on an autograd closure, autograd training step,
                   per-tensor Adam);
    (e) compiled   with ``--compile``: (c) with the reference CNN's forward wrapped in ``torch.compile`` (default
                   backend, inductor). Its untimed warm-up compiles (a graph each for the attack's forward with input
                   gradients, its last forward without, and the training step's); a fresh model in each timed run
                   reuses those graphs. The warm-up's wall time less its two steps at the timed rate is reported
                   apart as ``compile_s``. Where compiling fails (no C compiler, an unsupported operator), the row
                   says why and the other paths run on.

Reference and toolkit start from the same initial weights (both draw them from the seed's ``init`` stream), see the
same batches and draw the same attack random starts, so they compute the same iterates up to float rounding
(``tests/test_benchmarks.py`` checks this). Neither clips the attack to [0, 1]: the toolkit's pre-training attack
does not (its evaluation attacks do), and the reference follows it so both do the same work.

Every path first runs 2 untimed steps (warm-up: lazy imports, allocator, first optimiser step); then ``--repeats``
rounds (default 5), each timing ``--steps`` CNN steps (default 10) and ``--two-layer-steps`` two-layer steps
(default 5 x ``--steps``: that step is ~20x cheaper) of every path in turn, the order reversed every other round
(interleaved, so slow spells of a shared machine hit all paths alike). The best round per path is kept (other load
only ever slows a run down). Rows give samples/s by wall clock and by this process's CPU time; ``ratio_two_layer``
is (b)/(a) and ``ratio_cnn`` is (d)/(c) of the best rounds by wall clock (``_cpu``: by CPU time);
``ratio_<model>_rounds`` are each round's own ratio, its two runs back to back, and ``_median_of_rounds`` their
median: on a loaded machine their spread says how far to trust the best-of ratio. Each timed run builds its model
and optimiser, as a run does, so that cost is in the timing; building the data source (the training mean) is not.
With ``--compile``, ``ratio_cnn_compiled`` is (e)/(c) of the best rounds, beside ``compile_s`` and ``compile_error``.

Beside each path's samples/s: GFLOP/s and their share of the machine's fp32 matmul peak, measured in the same run
by ``benchmarks.train_step.matmul_peak`` (square matmuls of 1024 and 2048, best of about a second, by wall clock).
A step's FLOPs are counted once per family, by ``torch.utils.flop_counter.FlopCounterMode`` on one step of its
reference at the run's batch size, divided by that batch size: the convolutions and matrix products (forward, and
backward as autograd runs it) of the PGD iterations (each a forward and the input gradient's backward), the forward
that scores the last iterate, and the training step's forward and backward (weight gradients, and input
gradients down to the first layer's output). Elementwise work, the loss and Adam are not counted. Every path of a
family computes the same step, so its GFLOP/s is its samples/s times that count.

On a machine shared with other jobs, ``OMP_NUM_THREADS=1`` (or ``--threads 1``) avoids torch's threads spinning
against each other, which otherwise dominates both paths.

    python -m benchmarks.realdata_step                      # table
    python -m benchmarks.realdata_step --json               # one JSON object
    python -m benchmarks.realdata_step --steps 1 --repeats 1 --batch-size 8  # a smoke run (seconds)
    python -m benchmarks.realdata_step --compile            # with the compiled reference CNN
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.reference_real import ReferenceConvNet, ReferenceTwoLayer
from benchmarks.reference_real import train as reference_train
from benchmarks.timing import best, interleaved
from benchmarks.train_step import matmul_peak
from robinherit.config import EncoderKind, ExperimentConfig, load_config, with_updates
from robinherit.data.datasets import ArrayDataset
from robinherit.data.sources import ArraySource, array_source
from robinherit.runs.experiment import build_encoder, pretrain
from robinherit.runs.provenance import git_commit
from robinherit.seeding import generator

IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10
CONFIGS = {"two_layer": "fashion_mnist_two_layer", "cnn": "fashion_mnist"}
WARMUP = 2  # untimed steps per path before the rounds: lazy imports, the allocator, compiling


def random_images(n_train: int, n_test: int = 64, seed: int = 0) -> ArrayDataset:
    """Uniform [0, 1] inputs shaped like Fashion-MNIST (flat, d = 784) with uniform labels of 10 classes."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(IMAGE_SHAPE)
    return ArrayDataset(
        name="random-28x28",
        x_train=torch.rand(n_train, d, generator=g),
        y_train=torch.randint(0, N_CLASSES, (n_train,), generator=g),
        x_test=torch.rand(n_test, d, generator=g),
        y_test=torch.randint(0, N_CLASSES, (n_test,), generator=g),
        image_shape=IMAGE_SHAPE,
        n_classes=N_CLASSES,
    )


def config(family: str, steps: int = 1, **updates) -> ExperimentConfig:
    """The shipped config of ``family`` (two_layer or cnn) with ``steps`` pre-training steps."""
    return with_updates(load_config(CONFIGS[family]), **{"pretrain.steps": steps, **updates})


def source_for(cfg: ExperimentConfig, ds: ArrayDataset) -> ArraySource:
    """The source ``run_experiment`` builds for ``cfg`` when its data set is ``ds`` (splits, training mean)."""
    return array_source(cfg, ds)


def reference_model(cfg: ExperimentConfig, source: ArraySource) -> ReferenceTwoLayer | ReferenceConvNet:
    """The reference network of ``cfg``'s encoder, initialised from the seed's ``init`` stream as the toolkit's is."""
    g = generator(cfg.seed, "init")
    m = cfg.model
    if cfg.model.encoder == EncoderKind.conv:
        return ReferenceConvNet(
            source.image_shape, m.conv.channels, m.width, source.pretrain_outputs, m.threshold, source.center, g
        )
    return ReferenceTwoLayer(source.d, m.width, source.pretrain_outputs, m.threshold, source.center, g)


def run_toolkit(cfg: ExperimentConfig, source: ArraySource, steps: int) -> torch.nn.Module:
    """``steps`` steps of ``run_experiment``'s pre-training stage for ``cfg`` on ``source``; the trained encoder."""
    c = with_updates(cfg, **{"pretrain.steps": steps})
    model = build_encoder(c, source)
    pretrain(model, source.pretrain_stream(c, torch.device("cpu")), c, source)
    return model


def run_reference(cfg: ExperimentConfig, source: ArraySource, steps: int, compiled: bool = False) -> torch.nn.Module:
    """``steps`` steps of the plain reference for ``cfg``: the same batches and attack random starts. ``compiled``
    wraps the model's forward in ``torch.compile`` (default backend); dynamo guards on the forward's code and its
    tensors' shapes, not on the model instance, so a fresh model reuses what an earlier run compiled."""
    model = reference_model(cfg, source)
    if compiled:
        model.forward = torch.compile(model.forward)
    reference_steps(cfg, source, model, steps)
    return model


def reference_steps(cfg: ExperimentConfig, source: ArraySource, model, steps: int) -> None:
    """``steps`` steps of the reference loop on ``model``, from the seed's own batch and attack streams."""
    stream = source.pretrain_stream(cfg, torch.device("cpu"))
    images = cfg.model.encoder == EncoderKind.conv

    def sample():
        batch = stream.next()
        return (batch.x.reshape(-1, *source.image_shape) if images else batch.x), batch.y

    p = cfg.pretrain
    g = generator(cfg.seed, "pretrain-attack")
    reference_train(model, sample, steps, p.eps, p.attack_steps, p.lr, g)


def flops_per_sample(cfg: ExperimentConfig, source: ArraySource) -> float:
    """FLOPs per example of one adversarial training step, counted by ``FlopCounterMode`` on one step of the
    reference (see the module docstring for what it counts)."""
    model = reference_model(cfg, source)  # built outside the counter: its shape probe is not part of a step
    counter = FlopCounterMode(display=False)
    with counter:
        reference_steps(cfg, source, Unhooked(model), 1)
    return counter.get_total_flops() / cfg.pretrain.batch_size


class Unhooked:
    """``model`` with its own forward called directly (its layers still run as modules). The counter's module
    tracker hooks the inputs of every module call, and autograd.grad cannot run through such a hook on a leaf
    tensor, which the attack's iterate is; the products counted are the same."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward(x)

    def parameters(self):
        return self.model.parameters()


def warm_up(run: Callable[[int], object], steps: int = 2) -> tuple[float | None, str | None]:
    """Wall seconds of ``run``'s first ``steps`` steps (compiling included), or (None, why) if they raised."""
    t0 = time.perf_counter()
    try:
        run(steps)
    except Exception as e:  # whatever stops compiling (no C compiler, an unsupported operator) ends only this path
        lines = str(e).strip().splitlines()
        return None, f"{type(e).__name__}: {lines[0] if lines else 'no message'}"
    return time.perf_counter() - t0, None


def bench(
    steps: int,
    repeats: int,
    n_train: int = 10_000,
    batch_size: int | None = None,
    two_layer_steps: int | None = None,
    compile: bool = False,
) -> dict:
    """The rows and ratios (see the module docstring); ``batch_size`` replaces the configs' 128; the two-layer rows
    time ``two_layer_steps`` (default ``5 * steps``) steps a round, the CNN rows ``steps``; ``compile`` adds the
    compiled reference CNN."""
    ds = random_images(n_train)
    paths: dict[str, Callable[[int], object]] = {}
    per_round: dict[str, int] = {}
    batch, flops, cfgs, sources = {}, {}, {}, {}
    family_steps = {"two_layer": two_layer_steps or 5 * steps, "cnn": steps}
    for family in CONFIGS:
        cfg = cfgs[family] = config(family, **({} if batch_size is None else {"pretrain.batch_size": batch_size}))
        source = sources[family] = source_for(cfg, ds)
        batch[family] = cfg.pretrain.batch_size
        flops[family] = flops_per_sample(cfg, source)
        paths[f"{family}/reference"] = lambda n, c=cfg, s=source: run_reference(c, s, n)
        paths[f"{family}/toolkit"] = lambda n, c=cfg, s=source: run_toolkit(c, s, n)
        per_round[f"{family}/reference"] = per_round[f"{family}/toolkit"] = family_steps[family]
    warm_s, compile_error = None, None
    if compile:
        compiled = partial(run_reference, cfgs["cnn"], sources["cnn"], compiled=True)
        warm_s, compile_error = warm_up(compiled, WARMUP)
        if compile_error is None:
            paths["cnn/compiled"], per_round["cnn/compiled"] = compiled, steps
    peak, peak_cpu = matmul_peak()
    load_before = os.getloadavg()
    times = interleaved(paths, per_round, repeats, warmup=WARMUP)
    rows = [timed_row(name, rounds, per_round[name], batch, flops, peak) for name, rounds in times.items()]
    out = ratios(rows)
    if compile:
        out.update(compiled_fields(rows, warm_s, compile_error))
    return {
        **out,
        "flops_per_sample": flops,
        "matmul_peak_gflops": peak,
        "matmul_peak_gflops_by_cpu_time": peak_cpu,
        "steps": family_steps,
        "repeats": repeats,
        "batch_size": batch["two_layer"],
        "input_shape": list(IMAGE_SHAPE),
        "n_train": n_train,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "commit": git_commit(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }


def timed_row(name: str, rounds: list, steps: int, batch: dict, flops: dict, peak: float) -> dict:
    """One path's row from its rounds' (wall, CPU) seconds per step: the best round's rates, and its GFLOP/s with
    the FLOPs of its family's step (the same step on every path of a family) and their share of ``peak``."""
    family, path = name.split("/")
    wall, cpu = best(rounds)
    gflops = batch[family] / wall * flops[family] / 1e9
    return {
        "model": family,
        "path": path,
        "steps_per_round": steps,
        "seconds_per_step": wall,
        "samples_per_s": batch[family] / wall,
        "samples_per_cpu_s": batch[family] / cpu,
        "gflops": gflops,
        "share_of_peak": gflops / peak,
        "rounds_seconds_per_step": [w for w, _ in rounds],
    }


def pick(rows: list[dict], family: str, path: str) -> dict:
    return next(r for r in rows if r["model"] == family and r["path"] == path)


def ratios(rows: list[dict]) -> dict:
    """Per family: the reference's and the toolkit's samples/s and GFLOP/s, toolkit / reference of the best rounds
    (by wall clock and CPU time), each round's own ratio (its two runs back to back) and their median."""
    out: dict = {}
    for family in CONFIGS:
        ref, tk = pick(rows, family, "reference"), pick(rows, family, "toolkit")
        out[f"reference_{family}_samples_per_s"] = ref["samples_per_s"]
        out[f"toolkit_{family}_samples_per_s"] = tk["samples_per_s"]
        out[f"reference_{family}_gflops"] = ref["gflops"]
        out[f"toolkit_{family}_gflops"] = tk["gflops"]
        out[f"ratio_{family}"] = tk["samples_per_s"] / ref["samples_per_s"]
        out[f"ratio_{family}_cpu"] = tk["samples_per_cpu_s"] / ref["samples_per_cpu_s"]
        # each round's own ratio (its two runs back to back): their spread shows what the load did to the best-of
        paired = [r / t for r, t in zip(ref["rounds_seconds_per_step"], tk["rounds_seconds_per_step"], strict=True)]
        out[f"ratio_{family}_rounds"] = paired
        out[f"ratio_{family}_median_of_rounds"] = statistics.median(paired)
    return out


def compiled_fields(rows: list[dict], warm_s: float | None, error: str | None) -> dict:
    """The compiled path's summary. Its row was timed like the others and gains ``compile_s``: the warm-up's wall
    time less its steps at the timed rate, what compiling itself took. Where compiling failed, a row with the error
    is appended to ``rows`` instead."""
    if error is not None:
        rows.append({"model": "cnn", "path": "compiled", "error": error})
        return {"compiled_cnn_samples_per_s": None, "compiled_cnn_gflops": None, "ratio_cnn_compiled": None,
                "compile_s": None, "compile_error": error}  # fmt: skip
    row = pick(rows, "cnn", "compiled")
    row["compile_s"] = max(0.0, warm_s - WARMUP * row["seconds_per_step"])
    return {
        "compiled_cnn_samples_per_s": row["samples_per_s"],
        "compiled_cnn_gflops": row["gflops"],
        "ratio_cnn_compiled": row["samples_per_s"] / pick(rows, "cnn", "reference")["samples_per_s"],
        "compile_s": row["compile_s"],
        "compile_error": None,
    }


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--steps", type=int, default=10, help="CNN steps per timed run (default 10)")
    parser.add_argument(
        "--two-layer-steps", type=int, default=None, help="two-layer steps per timed run (default 5 x --steps)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds; the best is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--batch-size", type=int, default=None, help="replaces the configs' 128 (smoke runs)")
    parser.add_argument("--n-train", type=int, default=10_000, help="random training images batches are drawn from")
    parser.add_argument(
        "--compile", action="store_true", help="also time the reference CNN with its forward compiled by torch.compile"
    )
    args = parser.parse_args(argv)
    sizes = (args.steps, args.repeats, args.n_train, args.batch_size, args.two_layer_steps)
    if any(v is not None and v < 1 for v in sizes):
        parser.error("--steps, --two-layer-steps, --repeats, --batch-size and --n-train must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench(args.steps, args.repeats, args.n_train, args.batch_size, args.two_layer_steps, args.compile)
    if args.json:
        print(json.dumps(result))
        return
    print_table(result)


def print_table(result: dict) -> None:
    print(
        f"commit {result['commit']}, torch {result['torch']}, {result['threads']} threads, {result['repeats']} "
        f"rounds, load average {result['load_average_before'][0]:.2f} before, "
        f"{result['load_average_after'][0]:.2f} after"
    )
    print(
        f"measured fp32 matmul peak: {result['matmul_peak_gflops']:.1f} GFLOP/s "
        f"(by CPU time: {result['matmul_peak_gflops_by_cpu_time']:.1f}); MFLOP per example and step: "
        + ", ".join(f"{family} {v / 1e6:.2f}" for family, v in result["flops_per_sample"].items())
    )
    print(
        f"{'model':10} {'path':10} {'steps':>5} {'s/step':>8} {'samples/s':>10} {'samples/cpu-s':>14} "
        f"{'GFLOP/s':>8} {'% peak':>7}"
    )
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['model']:10} {r['path']:10} could not compile, path skipped: {r['error']}")
            continue
        print(
            f"{r['model']:10} {r['path']:10} {r['steps_per_round']:>5} {r['seconds_per_step']:>8.4f} "
            f"{r['samples_per_s']:>10.0f} {r['samples_per_cpu_s']:>14.0f} {r['gflops']:>8.2f} "
            f"{100 * r['share_of_peak']:>6.1f}%"
        )
    for family in CONFIGS:
        print(
            f"{family}: toolkit / reference {result[f'ratio_{family}']:.2f} (best of rounds), "
            f"{result[f'ratio_{family}_cpu']:.2f} (by CPU time), "
            f"{result[f'ratio_{family}_median_of_rounds']:.2f} (median of the rounds' own ratios)"
        )
    if result.get("ratio_cnn_compiled") is not None:
        print(
            f"cnn: compiled / reference {result['ratio_cnn_compiled']:.2f} (best of rounds); compiling took "
            f"{result['compile_s']:.1f} s, outside the timed steps"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
