"""How the learned-dictionary purity proxy reads with the atom count, and what fitting the dictionary costs.

For the first stored run of each pre-training budget in a results store (default: the Fashion-MNIST head-dial
sweep's), refits the dictionary on the same centred pre-training inputs with each atom count (a fresh, empty
cache, so the fit is timed) and prints the encoders' top-1 share on it beside the fit's seconds:

    .venv/bin/python scripts/dictionary_atoms.py --store results/sweeps/fashion_mnist_head_dial.db --atoms 16,32,64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from robinherit.config import build_config
from robinherit.data.sources import build_sources
from robinherit.evaluation.dictionary import cached_dictionary, measure_learned
from robinherit.runs.experiment import frozen_encoder
from robinherit.runs.store import ResultStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="results/sweeps/fashion_mnist_head_dial.db")
    ap.add_argument("--atoms", default="16,32,64")
    ap.add_argument("--method", default="ica")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ["ROBINHERIT_CACHE"] = tempfile.mkdtemp(prefix="robinherit-atoms-")  # time real fits, not hits
    store = ResultStore(args.store, read_only=True)
    firsts: dict[float, dict] = {}
    for r in sorted(store.runs(), key=lambda r: r["seed"]):
        firsts.setdefault(r["config"]["pretrain"]["eps"], r)
    recs = [rec for _, rec in sorted(firsts.items())]
    cfgs = [build_config(rec["config"]) for rec in recs]
    sources = build_sources(cfgs)  # the data set is read once for all budgets
    encoders = {
        c.pretrain.eps: frozen_encoder(c, store.artifact(rec["run_id"], "encoder"), src)
        for c, rec, src in zip(cfgs, recs, sources, strict=True)
    }
    samples = sources[0].centred_pretrain_inputs()  # every budget pre-trains on the same inputs
    print("| atoms | fit s | " + " | ".join(f"top-1 share, pretrain eps {e:g}" for e in sorted(encoders)) + " |")
    print("|---|---|" + "---|" * len(encoders))
    for k in [int(a) for a in args.atoms.split(",")]:
        t0 = time.perf_counter()
        m_hat, hit = cached_dictionary(samples, k, args.method, seed=0)
        fit = time.perf_counter() - t0
        assert not hit
        shares = [
            measure_learned(enc.weight().detach().cpu(), m_hat).summary()["top1_share_mean"]
            for enc in encoders.values()
        ]
        print(f"| {k} | {fit:.1f} | " + " | ".join(f"{s:.3f}" for s in shares) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
