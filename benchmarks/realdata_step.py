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
                   net ``pretrain_supervised`` runs a stack of one (``batched.pretrain_one``), closed-form PGD input
                   gradients and closed-form weight gradients in one function, fused Adam;
  CNN (``fashion_mnist``: conv [16, 32], feature width 64, threshold 0):
    (c) reference  ``benchmarks.reference_real.ReferenceConvNet``, the layers of ``robinherit.convnet.ConvNet``,
                   + autograd PGD and an autograd training step;
    (d) toolkit    ``experiment.pretrain`` for this config: the generic loop of ``pretrain_supervised`` (there is no
                   closed form for the conv net: ``attacks.pgd`` on an autograd closure, autograd training step,
                   per-tensor Adam).

Reference and toolkit start from the same initial weights (both draw them from the seed's ``init`` stream), see the
same batches and draw the same attack random starts, so they compute the same iterates up to float rounding
(``tests/test_benchmarks.py`` checks this). Neither clips the attack to [0, 1]: the toolkit's pre-training attack
does not (its evaluation attacks do), and the reference follows it so both do the same work.

Every path first runs 2 untimed steps (warm-up: lazy imports, allocator, first optimiser step); then ``--repeats``
rounds, each timing ``--steps`` steps of every path in turn (interleaved, so slow spells of a shared machine hit all
paths alike), and the best round per path is kept (other load only ever slows a run down). Rows give samples/s by wall
clock and by this process's CPU time; ``ratio_two_layer`` is (b)/(a) and ``ratio_cnn`` is (d)/(c), by wall clock
(``_cpu``: by CPU time). Each timed run builds its model and optimiser, as a run does, so that cost is in the
timing; building the data source (the training mean) is not.

    python -m benchmarks.realdata_step                      # table
    python -m benchmarks.realdata_step --json               # one JSON object
    python -m benchmarks.realdata_step --steps 1 --repeats 1 --batch-size 8  # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.reference_real import ReferenceConvNet, ReferenceTwoLayer
from benchmarks.reference_real import train as reference_train
from benchmarks.train_step import commit
from robinherit.config import EncoderKind, ExperimentConfig, load_config, with_updates
from robinherit.datasets import ArrayDataset
from robinherit.experiment import build_encoder, pretrain
from robinherit.seeding import generator
from robinherit.sources import ArraySource, _arrays

IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10
CONFIGS = {"two_layer": "fashion_mnist_two_layer", "cnn": "fashion_mnist"}


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
    return _arrays(cfg, ds)


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


def run_reference(cfg: ExperimentConfig, source: ArraySource, steps: int) -> torch.nn.Module:
    """``steps`` steps of the plain reference for ``cfg``: the same batches and attack random starts."""
    model = reference_model(cfg, source)
    stream = source.pretrain_stream(cfg, torch.device("cpu"))
    images = cfg.model.encoder == EncoderKind.conv

    def sample():
        batch = stream.next()
        return (batch.x.reshape(-1, *source.image_shape) if images else batch.x), batch.y

    p = cfg.pretrain
    g = generator(cfg.seed, "pretrain-attack")
    reference_train(model, sample, steps, p.eps, p.attack_steps, p.lr, g)
    return model


def time_paths(paths: dict[str, Callable[[int], object]], steps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per step of each path: one untimed warm-up run each, then ``repeats`` rounds that time
    ``steps`` steps of every path in turn; the best round per path."""
    for run in paths.values():
        run(2)
    best = {name: (math.inf, math.inf) for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            w0, c0 = time.perf_counter(), time.process_time()
            run(steps)
            wall, cpu = (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def bench(steps: int, repeats: int, n_train: int = 10_000, batch_size: int | None = None) -> dict:
    """The four rows and the two ratios (see the module docstring); ``batch_size`` replaces the configs' 128."""
    ds = random_images(n_train)
    paths: dict[str, Callable[[int], object]] = {}
    batch = {}
    for family in CONFIGS:
        cfg = config(family, **({} if batch_size is None else {"pretrain.batch_size": batch_size}))
        source = source_for(cfg, ds)
        batch[family] = cfg.pretrain.batch_size
        paths[f"{family}/reference"] = lambda n, c=cfg, s=source: run_reference(c, s, n)
        paths[f"{family}/toolkit"] = lambda n, c=cfg, s=source: run_toolkit(c, s, n)
    load_before = os.getloadavg()
    best = time_paths(paths, steps, repeats)
    rows = []
    for name, (wall, cpu) in best.items():
        family, path = name.split("/")
        rows.append(
            {
                "model": family,
                "path": path,
                "seconds_per_step": wall,
                "samples_per_s": batch[family] / wall,
                "samples_per_cpu_s": batch[family] / cpu,
            }
        )

    def pick(family: str, path: str) -> dict:
        return next(r for r in rows if r["model"] == family and r["path"] == path)

    out: dict = {}
    for family in CONFIGS:
        ref, tk = pick(family, "reference"), pick(family, "toolkit")
        out[f"reference_{family}_samples_per_s"] = ref["samples_per_s"]
        out[f"toolkit_{family}_samples_per_s"] = tk["samples_per_s"]
        out[f"ratio_{family}"] = tk["samples_per_s"] / ref["samples_per_s"]
        out[f"ratio_{family}_cpu"] = tk["samples_per_cpu_s"] / ref["samples_per_cpu_s"]
    return {
        **out,
        "steps": steps,
        "repeats": repeats,
        "batch_size": batch["two_layer"],
        "input_shape": list(IMAGE_SHAPE),
        "n_train": n_train,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "commit": commit(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--steps", type=int, default=10, help="pre-training steps per timed run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds; the best is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--batch-size", type=int, default=None, help="replaces the configs' 128 (smoke runs)")
    parser.add_argument("--n-train", type=int, default=10_000, help="random training images batches are drawn from")
    args = parser.parse_args(argv)
    if min(args.steps, args.repeats, args.n_train, args.batch_size or 1) < 1:
        parser.error("--steps, --repeats, --batch-size and --n-train must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench(args.steps, args.repeats, args.n_train, args.batch_size)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"commit {result['commit']}, torch {result['torch']}, {result['threads']} threads, "
        f"{args.steps} steps x {args.repeats} rounds, load {result['load_average_before'][0]:.2f}"
    )
    print(f"{'model':10} {'path':10} {'s/step':>8} {'samples/s':>10} {'samples/cpu-s':>14} {'x ref':>6}")
    for r in result["rows"]:
        ratio = r["samples_per_s"] / result[f"reference_{r['model']}_samples_per_s"]
        print(
            f"{r['model']:10} {r['path']:10} {r['seconds_per_step']:>8.4f} {r['samples_per_s']:>10.0f} "
            f"{r['samples_per_cpu_s']:>14.0f} {ratio:>6.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
