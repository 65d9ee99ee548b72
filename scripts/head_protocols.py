"""Head training protocols on the same frozen encoders: robust accuracy and time per head of the full-batch heads
the synthetic configs had, minibatch epochs at a constant rate, and the shipped minibatch epochs with cosine decay.

The encoders are reproduce's full-mode runs (AT and clean, supervised and contrastive; run or loaded from the
store); every head is trained as ``experiment.fit_head`` trains the run's own and evaluated at l2 ``--eps`` with the
config's PGD (steps, restarts, test set).

    .venv/bin/python scripts/head_protocols.py --seeds 0-4 --store /tmp/s_full_final.db

docs/performance.md ("Item 4 again") has the table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robinherit.cli import parse_seeds
from robinherit.config import HeadKind, load_config, with_updates
from robinherit.data.sources import SyntheticSource
from robinherit.evaluation.robust import evaluate
from robinherit.ops.losses import class_margin
from robinherit.reproduce import pair_configs
from robinherit.reproduce.jobs import encoder_weights
from robinherit.runs.experiment import fit_head, frozen_encoder
from robinherit.runs.schedule import run_many_or_load
from robinherit.runs.store import ResultStore
from robinherit.seeding import generator
from robinherit.world.sparse_coding import make_world

PROTOCOLS = {
    "full batch, 300 steps": {  # what the synthetic configs had
        "downstream.epochs": None,
        "downstream.batch_size": None,
        "downstream.steps": 300,
        "downstream.lr_schedule": "constant",
    },
    "25 epochs of 256, constant": {
        "downstream.epochs": 25,
        "downstream.batch_size": 256,
        "downstream.lr_schedule": "constant",
    },
    "25 epochs of 128, cosine": {
        "downstream.epochs": 25,
        "downstream.batch_size": 128,
        "downstream.lr_schedule": "cosine",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--store", default="results/head_protocols.db")
    parser.add_argument("--eps", type=float, default=0.25)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a reproduce worker runs
    seeds = parse_seeds(args.seeds)
    store = ResultStore(args.store)
    rows = []
    for family in ("supervised", "contrastive"):
        at, clean = pair_configs(load_config(family), seeds)
        run_many_or_load(at + clean, store)  # the encoders, pre-trained here where the store lacks them
        for arm, cfgs in (("AT", at), ("clean", clean)):
            # each seed's source, stored encoder and test split, built once for every head kind and protocol
            parts = []
            for cfg in cfgs:
                source = SyntheticSource(make_world(cfg.data, cfg.seed), cfg.seed)
                parts.append((cfg, source, frozen_encoder(cfg, encoder_weights(store, cfg), source)))
            for kind in (HeadKind.adversarial, HeadKind.clean):
                for name, over in PROTOCOLS.items():
                    accs, secs = [], []
                    for cfg, source, enc in parts:
                        c = with_updates(cfg, **over)
                        t0 = time.perf_counter()
                        head = fit_head(c, enc, source, kind)
                        secs.append(time.perf_counter() - t0)
                        _, test = source.test_splits(c)  # the run's own downstream test split
                        res = evaluate(
                            head,
                            test.x,
                            test.y,
                            class_margin,
                            eps_grid=(args.eps,),
                            norm=c.eval.norm,
                            steps=c.eval.steps,
                            restarts=c.eval.restarts,
                            g=generator(c.seed, f"eval-{kind.value}"),
                            certify=False,
                        )
                        accs.append(next(iter(res.robust_acc.values())))
                    rows.append((family, arm, kind.value, name, accs, secs))
                    print(
                        f"{family:11} {arm:5} {kind.value:11} {name:27} mean {np.mean(accs):.3f}  "
                        f"seeds {' '.join(f'{a:.3f}' for a in accs)}  {np.mean(secs):.2f} s/head",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
