"""Adversarial contrastive pre-training: the closed-form InfoNCE attack gradient against autograd, one process.

Both run ``pretraining.pretrain_contrastive`` on ``configs/contrastive.yaml`` (RoCL-style l2 PGD-5 on one view,
batch 256), with ``fast=True`` (``fused.InfoNCEViewLoss``) and ``fast=False`` (autograd through InfoNCE),
interleaved, ``--repeats`` times each; the best time per step of each is kept.

    python -m benchmarks.contrastive_step [--steps 40] [--repeats 6] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from robinherit.config import ExperimentConfig, load_config, with_updates
from robinherit.data import BatchStream, make_world
from robinherit.models import build_model
from robinherit.pretraining import pretrain_contrastive
from robinherit.seeding import generator

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "contrastive.yaml"


def run(cfg: ExperimentConfig, fast: bool) -> None:
    world = make_world(cfg.data, cfg.seed)
    model = build_model(cfg.data.d, cfg.model, cfg.data.n_tasks, generator(cfg.seed, "init"))
    pretrain_contrastive(model, BatchStream(world, cfg.pretrain.batch_size, cfg.seed), cfg, fast=fast)


def seconds_per_step(cfg: ExperimentConfig, repeats: int) -> dict[str, float]:
    """Best wall seconds per step of each path, the paths interleaved so that drift hits both alike."""
    for fast in (True, False):
        run(with_updates(cfg, **{"pretrain.steps": 2}), fast)  # warm-up
    best = {"closed_form": float("inf"), "autograd": float("inf")}
    for _ in range(repeats):
        for name, fast in (("closed_form", True), ("autograd", False)):
            t0 = time.perf_counter()
            run(cfg, fast)
            best[name] = min(best[name], (time.perf_counter() - t0) / cfg.pretrain.steps)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="pre-training steps per timed run")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = with_updates(load_config(CONFIG), **{"pretrain.steps": args.steps})
    best = seconds_per_step(cfg, args.repeats)
    out = {**{f"{k}_ms_per_step": 1e3 * v for k, v in best.items()}, "speedup": best["autograd"] / best["closed_form"]}
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"closed form {out['closed_form_ms_per_step']:.1f} ms/step, autograd {out['autograd_ms_per_step']:.1f} "
        f"ms/step: {out['speedup']:.2f}x"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
