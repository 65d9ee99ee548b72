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
                   per-tensor Adam).

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
On a machine shared with other jobs, ``OMP_NUM_THREADS=1`` (or ``--threads 1``) avoids torch's threads spinning
against each other, which otherwise dominates both paths.

    python -m benchmarks.realdata_step                      # table
    python -m benchmarks.realdata_step --json               # one JSON object
    python -m benchmarks.realdata_step --steps 1 --repeats 1 --batch-size 8  # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable

import torch

from benchmarks.reference_real import ReferenceConvNet, ReferenceTwoLayer
from benchmarks.reference_real import train as reference_train
from benchmarks.timing import best, interleaved
from robinherit.config import EncoderKind, ExperimentConfig, load_config, with_updates
from robinherit.data.datasets import ArrayDataset
from robinherit.data.sources import ArraySource, array_source
from robinherit.runs.experiment import build_encoder, pretrain
from robinherit.runs.provenance import git_commit
from robinherit.seeding import generator

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


def bench(
    steps: int, repeats: int, n_train: int = 10_000, batch_size: int | None = None, two_layer_steps: int | None = None
) -> dict:
    """The four rows and the two ratios (see the module docstring); ``batch_size`` replaces the configs' 128;
    the two-layer rows time ``two_layer_steps`` (default ``5 * steps``) steps a round, the CNN rows ``steps``."""
    ds = random_images(n_train)
    paths: dict[str, Callable[[int], object]] = {}
    per_round: dict[str, int] = {}
    batch = {}
    family_steps = {"two_layer": two_layer_steps or 5 * steps, "cnn": steps}
    for family in CONFIGS:
        cfg = config(family, **({} if batch_size is None else {"pretrain.batch_size": batch_size}))
        source = source_for(cfg, ds)
        batch[family] = cfg.pretrain.batch_size
        paths[f"{family}/reference"] = lambda n, c=cfg, s=source: run_reference(c, s, n)
        paths[f"{family}/toolkit"] = lambda n, c=cfg, s=source: run_toolkit(c, s, n)
        per_round[f"{family}/reference"] = per_round[f"{family}/toolkit"] = family_steps[family]
    load_before = os.getloadavg()
    times = interleaved(paths, per_round, repeats)
    rows = []
    for name, rounds in times.items():
        family, path = name.split("/")
        wall, cpu = best(rounds)
        rows.append(
            {
                "model": family,
                "path": path,
                "steps_per_round": per_round[name],
                "seconds_per_step": wall,
                "samples_per_s": batch[family] / wall,
                "samples_per_cpu_s": batch[family] / cpu,
                "rounds_seconds_per_step": [w for w, _ in rounds],
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
        # each round's own ratio (its two runs back to back): their spread shows what the load did to the best-of
        paired = [r / t for r, t in zip(ref["rounds_seconds_per_step"], tk["rounds_seconds_per_step"], strict=True)]
        out[f"ratio_{family}_rounds"] = paired
        out[f"ratio_{family}_median_of_rounds"] = statistics.median(paired)
    return {
        **out,
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
    args = parser.parse_args(argv)
    sizes = (args.steps, args.repeats, args.n_train, args.batch_size, args.two_layer_steps)
    if any(v is not None and v < 1 for v in sizes):
        parser.error("--steps, --two-layer-steps, --repeats, --batch-size and --n-train must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench(args.steps, args.repeats, args.n_train, args.batch_size, args.two_layer_steps)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"commit {result['commit']}, torch {result['torch']}, {result['threads']} threads, {args.repeats} rounds, "
        f"load average {result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after"
    )
    print(f"{'model':10} {'path':10} {'steps':>5} {'s/step':>8} {'samples/s':>10} {'samples/cpu-s':>14}")
    for r in result["rows"]:
        print(
            f"{r['model']:10} {r['path']:10} {r['steps_per_round']:>5} {r['seconds_per_step']:>8.4f} "
            f"{r['samples_per_s']:>10.0f} {r['samples_per_cpu_s']:>14.0f}"
        )
    for family in CONFIGS:
        print(
            f"{family}: toolkit / reference {result[f'ratio_{family}']:.2f} (best of rounds), "
            f"{result[f'ratio_{family}_cpu']:.2f} (by CPU time), "
            f"{result[f'ratio_{family}_median_of_rounds']:.2f} (median of the rounds' own ratios)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
