"""Why claim 4 averages over downstream tasks: how much the adversarial-head gap varies between the tasks of
one seed, and between seeds' task means, on clean (non-robust) features.

Uses reproduce's own pieces: the clean supervised runs of quick mode (run or loaded from the store), and the
same extra downstream tasks (``reproduce.extra_task``) claim 4 averages over; task 0 is the run's own.

    .venv/bin/python scripts/claim4_tasks.py --seeds 0-5 --tasks 4 --store results/claim4_tasks.db
"""

from __future__ import annotations

import argparse

import numpy as np

from robinherit.cli import parse_seeds
from robinherit.reproduce import AuxJob, ReproduceSettings, extra_task, pair_configs, run_aux, task_gaps
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-5")
    parser.add_argument("--tasks", type=int, default=4, help="downstream tasks per seed, the run's own included")
    parser.add_argument("--store", default="results/claim4_tasks.db")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    store = ResultStore(args.store)
    base = ReproduceSettings(seeds=tuple(seeds), quick=True).base("supervised")
    _, clean = pair_configs(base, seeds)
    records = run_many_or_load(clean, store)
    jobs = [
        AuxJob(
            "downstream_task",
            f"{c.config_hash()}/{i}",
            f"seed {c.seed} task {i}",
            extra_task,
            lambda c=c, i=i: (c, store.artifact(c.config_hash(), "encoder"), i),
        )
        for c in clean
        for i in range(1, args.tasks)
    ]
    aux = run_aux(store, jobs, args.workers, tick=lambda _what: None)
    gaps = [
        task_gaps(rec, [aux["downstream_task", f"{c.config_hash()}/{i}"] for i in range(1, args.tasks)])
        for c, rec in zip(clean, records, strict=True)
    ]
    print("| seed | gap per task (adversarial - clean head, robust acc at eps 0.25) | mean |")
    print("|---|---|---|")
    for c, g in zip(clean, gaps, strict=True):
        print(f"| {c.seed} | {', '.join(f'{x:.3f}' for x in g)} | {np.mean(g):.3f} |")
    within = np.sqrt(np.mean([np.var(g, ddof=1) for g in gaps]))
    between = np.std([np.mean(g) for g in gaps], ddof=1)
    print(f"\nsd between the tasks of one seed (pooled): {within:.3f}")
    print(f"sd between seeds' {args.tasks}-task means: {between:.3f}")
    print(f"sd between seeds with one task (the run's own): {np.std([g[0] for g in gaps], ddof=1):.3f}")


if __name__ == "__main__":
    main()
