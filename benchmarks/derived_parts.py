"""Parts of a reproduce that have a faster form, each timed against the form it replaced, in one
process on one thread (as a reproduce worker runs):

  relaxation   ``certify.relaxation`` (one candidate line at a time) against the broadcast over (n, m, pairs,
               points) it replaced (``benchmarks.reference_certify``), on a run's pre-activation intervals;
  evaluation   a run's three evaluations (the pre-training network, the clean and the adversarial head, as
               ``experiment.finish_experiment`` makes them): with the broadcast relaxation and no memo (before),
               the loop and no memo, and the loop with the relaxation memo (now);
  heads        three adversarial (and three clean) heads on one encoder, as claim 4's extra tasks train them:
               ``downstream.train_head`` one by one against ``downstream.train_heads`` (a stack);
  pools        two stages of work on worker processes: a new pool per stage against ``sweep.shared_pools``.

Each path's results are compared with its reference's (``equal``: to the bit for the certifier, up to float
rounding for the stacked heads), so a speed-up that changed the answer would show.

    python -m benchmarks.derived_parts            # table
    python -m benchmarks.derived_parts --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import robinherit.evaluation.certify as certify
from benchmarks.reference_certify import broadcast_relaxation
from benchmarks.timing import best_per_call
from robinherit.config import ExperimentConfig, HeadKind, load_config
from robinherit.runs.experiment import evaluate_model, fit_head, pretrain_alone
from robinherit.runs.pool import local_pool, shared_pools
from robinherit.runs.provenance import git_commit
from robinherit.seeding import generator
from robinherit.training.heads import train_head, train_heads


def config(n_test: int, pretrain_steps: int, n_train: int) -> ExperimentConfig:
    """configs/supervised.yaml as quick mode runs it (``eval.n_test``), its encoder pre-trained for fewer steps."""
    return load_config(
        "supervised",
        overrides=[f"eval.n_test={n_test}", f"pretrain.steps={pretrain_steps}", f"downstream.n_train={n_train}"],
    )


def bench_certify(cfg: ExperimentConfig, repeats: int) -> dict[str, Any]:
    source, model, _, _ = pretrain_alone(cfg)
    train = source.downstream_train(cfg)
    heads = {k: fit_head(cfg, model, source, k, train) for k in cfg.downstream.heads}
    pre_test, down_test = source.test_splits(cfg)

    def three_evaluations() -> list[dict]:
        out = [evaluate_model(cfg, model, pre_test, source, "pretrain")]
        return out + [evaluate_model(cfg, h, down_test, source, k.value) for k, h in heads.items()]

    def run(relax: Callable, memo: bool) -> Callable[[], list[dict]]:
        """The three evaluations with ``relax`` as the relaxation, from an empty memo, or with no memo at all."""

        def go() -> list[dict]:
            real = certify.relaxation
            certify.relaxation = relax  # what the memo (or its stand-in) calls
            certify._MEMO.clear()
            if not memo:  # every evaluation computes its lines itself
                certify._MEMO.lines = lambda net, x, eps, norm: relax(  # type: ignore[method-assign]
                    net, *certify.preactivation_bounds(net, x, eps, norm)
                )
            try:
                return three_evaluations()
            finally:
                certify.relaxation = real
                vars(certify._MEMO).pop("lines", None)

        return go

    evals = {
        "broadcast, no memo (before)": run(broadcast_relaxation, memo=False),
        "loop, no memo": run(certify.relaxation, memo=False),
        "loop and memo (now)": run(certify.relaxation, memo=True),
    }
    results = {k: f() for k, f in evals.items()}
    ref = results["broadcast, no memo (before)"]
    eval_s = best_per_call(evals, repeats)

    net = certify.as_two_layer(model)
    x = net.centred(pre_test.x)
    lo, hi = certify.preactivation_bounds(net, x, 0.5, cfg.eval.norm)
    relax = {
        "broadcast (before)": lambda: broadcast_relaxation(net, lo, hi),
        "loop (now)": lambda: certify.relaxation(net, lo, hi),
    }
    same = all(torch.equal(a, b) for a, b in zip(relax["broadcast (before)"](), relax["loop (now)"](), strict=True))
    relax_s = best_per_call(relax, repeats)
    return {
        "relaxation": {"seconds": relax_s, "equal": same, "n": int(x.shape[0]), "m": int(net.W.shape[0]), "eps": 0.5},
        "evaluation": {"seconds": eval_s, "equal": all(r == ref for r in results.values())},
        "model": model,
        "source": source,
    }


def bench_heads(cfg: ExperimentConfig, model: torch.nn.Module, source: Any, repeats: int) -> dict[str, Any]:
    split = source.downstream_train(cfg)
    g = torch.Generator().manual_seed(0)
    ys = [split.y, torch.randint(0, 2, split.y.shape, generator=g), 1 - split.y]  # three label vectors
    kw = dict(norm=cfg.eval.norm)
    out: dict[str, Any] = {}
    for kind in (HeadKind.adversarial, HeadKind.clean):
        paths = {
            "one by one (before)": lambda kind=kind: [
                train_head(model, cfg.model.width, 2, split.x, y, kind, cfg.downstream, g=generator(0, f"h{s}"), **kw)
                for s, y in enumerate(ys)
            ],
            "stack (now)": lambda kind=kind: train_heads(
                model,
                cfg.model.width,
                2,
                split.x,
                ys,
                kind,
                cfg.downstream,
                gens=[generator(0, f"h{s}") for s in range(len(ys))],
                **kw,
            ),
        }
        heads = {k: f() for k, f in paths.items()}
        gap = max(
            float((a.linear.weight - b.linear.weight).abs().max().detach())
            for a, b in zip(heads["one by one (before)"], heads["stack (now)"], strict=True)
        )
        out[kind.value] = {"seconds": best_per_call(paths, repeats), "max_weight_difference": gap, "equal": gap < 1e-4}
    return out


def bench_pools(workers: int, repeats: int) -> dict[str, Any]:
    """Two stages, each one task per worker (as a reproduce's stages begin), on new pools or one shared pool."""

    def stages() -> set[int]:
        pids: set[int] = set()
        for _ in range(2):
            with local_pool(workers) as ex:
                pids |= {f.result() for f in [ex.submit(os.getpid) for _ in range(workers)]}
        return pids

    def shared() -> set[int]:
        with shared_pools():
            return stages()

    paths = {"a pool per stage (before)": stages, "shared pools (now)": shared}
    seconds = {}
    pids = {}
    for name, f in paths.items():  # processes, not arithmetic: timed alone, best of the repeats
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pids[name] = f()
            times.append(time.perf_counter() - t0)
        seconds[name] = min(times)
    # distinct worker processes that ran the tasks (with more than one worker, one may take a stage's every task)
    return {"seconds": seconds, "processes": {k: len(v) for k, v in pids.items()}, "workers": workers}


def bench(n_test: int, pretrain_steps: int, n_train: int, repeats: int, workers: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = config(n_test, pretrain_steps, n_train)
    cert = bench_certify(cfg, repeats)
    heads = bench_heads(cfg, cert.pop("model"), cert.pop("source"), repeats)
    return {
        **cert,
        "heads": heads,
        "pools": bench_pools(workers, repeats),
        "n_test": n_test,
        "n_train": n_train,
        "repeats": repeats,
        "commit": git_commit(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument("--n-test", type=int, default=500, help="test points (quick mode's 500)")
    parser.add_argument("--n-train", type=int, default=2000, help="head training examples (the configs' 2,000)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="the encoder's pre-training steps")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument("--workers", type=int, default=2, help="pool workers")
    args = parser.parse_args(argv)
    if min(args.n_test, args.n_train, args.pretrain_steps, args.repeats, args.workers) < 1:
        parser.error("--n-test, --n-train, --pretrain-steps, --repeats and --workers must be at least 1")
    result = bench(args.n_test, args.pretrain_steps, args.n_train, args.repeats, args.workers)
    if args.json:
        print(json.dumps(result))
        return
    print(f"commit {result['commit']}, torch {result['torch']}, one thread, best of {args.repeats} rounds")
    sections = [
        ("relaxation", result["relaxation"]),
        ("a run's three evaluations", result["evaluation"]),
        ("three adversarial heads", result["heads"]["adversarial"]),
        ("three clean heads", result["heads"]["clean"]),
        ("two stages on worker pools", result["pools"]),
    ]
    for title, sec in sections:
        first = next(iter(sec["seconds"].values()))
        equal = "" if "equal" not in sec else f"  (results equal: {sec['equal']})"
        print(f"{title}{equal}")
        for path, s in sec["seconds"].items():
            print(f"  {path:30} {s * 1e3:9.1f} ms  {first / s:5.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
