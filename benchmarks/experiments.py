"""Whole experiments: ``run_many_or_load`` (batched pre-training) vs one ``run_experiment`` per config.

The configs are those of ``reproduce --quick``'s supervised family (adversarial and clean pre-training,
one per seed); stage times come from the records' ``timing_s``. Without a store, nothing is cached.

    python -m benchmarks.experiments --seeds 4 [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robinherit.config import load_config, with_updates
from robinherit.runs.experiment import run_experiment
from robinherit.runs.schedule import run_many_or_load

QUICK = ("pretrain.steps=1000", "downstream.steps=150", "downstream.n_train=1000", "eval.n_test=500")


def stage_times(records: list[dict]) -> dict[str, float]:
    return {k: sum(r["timing_s"][k] for r in records) for k in ("pretrain", "downstream", "eval")}


def main(argv: list[str] | None = None) -> None:
    from robinherit.training.allocator import keep_freed_memory

    keep_freed_memory()  # timed as robinherit's own processes (CLI, workers) run the paths: allocator set
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per arm (adversarial, clean)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    base = load_config("configs/supervised.yaml", QUICK)
    cfgs = [with_updates(base, **{"pretrain.eps": e, "seed": s}) for e in (0.25, 0.0) for s in range(args.seeds)]

    out = {}
    for name, run in (
        ("batched", lambda: run_many_or_load(cfgs, None)),
        ("plain", lambda: [run_experiment(c)[0] for c in cfgs]),
    ):
        w0, c0 = time.perf_counter(), time.process_time()
        recs = run()
        out[name] = {
            "wall_s": time.perf_counter() - w0,
            "cpu_s": time.process_time() - c0,
            "stages_s": stage_times(recs),
            "pretrain_samples": sum(c.pretrain.steps * c.pretrain.batch_size for c in cfgs),
        }
    if args.json:
        print(json.dumps(out))
        return
    for name, r in out.items():
        st = r["stages_s"]
        print(
            f"{name:8} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  pretrain {st['pretrain']:6.1f} s "
            f"({r['pretrain_samples'] / st['pretrain']:.0f} samples/s)  downstream {st['downstream']:6.1f} s  "
            f"eval {st['eval']:6.1f} s"
        )


if __name__ == "__main__":
    main()
