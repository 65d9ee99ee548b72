"""Adversarial contrastive pre-training: the closed-form and stacked paths against autograd, in one process.

Every path runs RoCL-style pre-training (l2 PGD-5 on one view, batch 256) of ``configs/contrastive.yaml``, and the
paths are interleaved, ``--repeats`` times each, keeping each one's best wall and process CPU time per model and
step:

  autograd            ``pretraining.pretrain_contrastive(fast=False)``: autograd attack and training step (the
                      reference every ratio is taken against)
  closed_form_attack  ``pretraining.pretrain_contrastive_generic``: the closed-form InfoNCE attack
                      (``closed_form.InfoNCEViewLoss``), autograd training step (the default before the stacked path)
  closed_form_step    ``pretraining.pretrain_contrastive``, the default for one model: a stack of one, closed-form
                      attack and training step (``stacked.contrastive_grads``)
  stacked_S           ``stacked.pretrain_contrastive_stacked`` with S models (seeds 0..S-1) in one stack; its time
                      is divided by S, so it compares with one model's step

Only the pre-training call is timed (worlds, streams and models are built before the clock starts).

    python -m benchmarks.contrastive_step [--steps 40] [--repeats 6] [--sizes 8,32] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from robinherit.config import ExperimentConfig, load_config, with_updates
from robinherit.models.stacked import StackedTwoLayer
from robinherit.models.two_layer import TwoLayerNet, build_model
from robinherit.runs.provenance import git_commit
from robinherit.seeding import generator
from robinherit.training.pretraining import pretrain_contrastive, pretrain_contrastive_generic
from robinherit.training.stacked import pretrain_contrastive_stacked
from robinherit.world.sparse_coding import BatchStream, make_world

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "contrastive.yaml"


def _parts(cfg: ExperimentConfig) -> tuple[BatchStream, TwoLayerNet]:
    world = make_world(cfg.data, cfg.seed)
    model = build_model(cfg.data.d, cfg.model, cfg.data.n_tasks, generator(cfg.seed, "init"))
    return BatchStream(world, cfg.pretrain.batch_size, cfg.seed), model


def single(fn: Callable[..., object]) -> Callable[[ExperimentConfig], Callable[[], object]]:
    """A path that trains one model: prepared, then ``run()`` times only the pre-training."""

    def prepare(cfg: ExperimentConfig) -> Callable[[], object]:
        stream, model = _parts(cfg)
        return lambda: fn(model, stream, cfg)

    return prepare


def stacked(size: int) -> Callable[[ExperimentConfig], Callable[[], object]]:
    def prepare(cfg: ExperimentConfig) -> Callable[[], object]:
        cfgs = [with_updates(cfg, seed=s) for s in range(size)]
        streams, models = zip(*(_parts(c) for c in cfgs), strict=True)
        net = StackedTwoLayer(models)
        return lambda: pretrain_contrastive_stacked(net, streams, cfgs)

    return prepare


def paths(sizes: Sequence[int]) -> dict[str, tuple[Callable[[ExperimentConfig], Callable[[], object]], int]]:
    """name -> (prepare(cfg) -> run, models trained per run)."""
    out = {
        "autograd": (single(lambda m, s, c: pretrain_contrastive(m, s, c, fast=False)), 1),
        "closed_form_attack": (
            single(lambda m, s, c: pretrain_contrastive_generic(m, s, c, closed_form_attack=True)),
            1,
        ),
        "closed_form_step": (single(pretrain_contrastive), 1),
    }
    out.update({f"stacked_{n}": (stacked(n), n) for n in sizes})
    return out


def seconds_per_step(
    cfg: ExperimentConfig, repeats: int, sizes: Sequence[int] = (8, 32), cpu: dict[str, float] | None = None
) -> dict[str, float]:
    """Best wall seconds per model and step of each path, the paths interleaved so that drift hits all alike.
    ``cpu``, where given, receives the best process CPU seconds per model and step too (on a shared machine the
    wall clock also counts the time other jobs hold the cores)."""
    todo = paths(sizes)
    warm = with_updates(cfg, **{"pretrain.steps": 2})
    for prepare, _ in todo.values():
        prepare(warm)()
    best = dict.fromkeys(todo, float("inf"))
    best_cpu = dict.fromkeys(todo, float("inf"))
    for _ in range(repeats):
        for name, (prepare, models) in todo.items():
            run = prepare(cfg)
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            per = cfg.pretrain.steps * models
            best[name] = min(best[name], (time.perf_counter() - t0) / per)
            best_cpu[name] = min(best_cpu[name], (time.process_time() - c0) / per)
    if cpu is not None:
        cpu.update(best_cpu)
    return best


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="pre-training steps per timed run")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--sizes", default="8,32", help="stack sizes S, comma-separated ('' for none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    cfg = with_updates(load_config(CONFIG), **{"pretrain.steps": args.steps})
    cpu: dict[str, float] = {}
    best = seconds_per_step(cfg, args.repeats, sizes, cpu)
    ref, ref_cpu = best["autograd"], cpu["autograd"]
    out = {
        **{f"{k}_ms_per_step": 1e3 * v for k, v in best.items()},
        "x_autograd": {k: ref / v for k, v in best.items()},
        "cpu_ms_per_step": {k: 1e3 * v for k, v in cpu.items()},
        "cpu_x_autograd": {k: ref_cpu / v for k, v in cpu.items()},
        "threads": torch.get_num_threads(),
        "commit": git_commit(),
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"per model and step, best of {args.repeats} runs of {args.steps} steps, {out['threads']} thread(s)")
    print(f"{'path':>20}  {'wall ms':>8}  {'x autograd':>10}  {'CPU ms':>8}  {'x autograd':>10}")
    for name, v in best.items():
        print(f"{name:>20}  {1e3 * v:8.2f}  {ref / v:9.2f}x  {1e3 * cpu[name]:8.2f}  {ref_cpu / cpu[name]:9.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
