"""Real-data evaluation and heads: the toolkit's paths against the plain ways of doing the same work, in one process.

On random Fashion-MNIST-shaped data (1 x 28 x 28 in [0, 1], 10 classes; no data files are read), with the shipped
``fashion_mnist`` config's CNN briefly pre-trained (``--pretrain-steps``, clean, so the attacks have work to do):

  cascade      AutoAttack's components after PGD (``robust_eval``, ``eval.per_attack: false``): each attack only on
               the examples still correct.  Reference: the same attacks, each on every example
               (``eval.per_attack: true``, how the toolkit evaluated before).
  clean head   the SLF head on features computed once (``training.heads.train_head``, clean).  Reference: the same
               head with the encoder run on every minibatch of every epoch, as a plain training loop does.
  chunked eval the pre-trained CNN's whole evaluation as a run does it (``runs.experiment.evaluate_model``: PGD-20,
               the self-checks, AutoAttack's cascade) with ``eval.batch_size`` 500, the shipped config's (every
               attack and check runs 500 examples at a time; ``--eval-batch-size``).  Reference: the same evaluation
               with ``eval.batch_size`` null, every example at once.

The cascade pair attacks 300 test images and the chunked pair 1,000, the shipped config's ``eval.n_test``
(``--n-test`` sets both). Each pair runs ``--repeats`` times, interleaved (``benchmarks.timing.interleaved``); rows
give seconds per call (best round) and the ratio reference / toolkit, with every round's own ratio beside it.

The chunked pair also says whether its two evaluations agree. PGD with one l-inf random start draws its starts
chunk after chunk from the one generator, so every example sees the same attack either way: the clean accuracy and
PGD's robust accuracy at every budget must be equal (``pgd_equal``). AutoAttack's components draw a seed per chunk,
so the worst case over every attack need only agree within one binomial standard error of the two accuracies' mean
(``binomial_se``, ``worst_case_within_one_se``); both records' accuracies are in the output.

    python -m benchmarks.realdata_eval                 # table
    python -m benchmarks.realdata_eval --json          # one JSON object
    python -m benchmarks.realdata_eval --n-test 50 --pretrain-steps 5 --repeats 1   # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from types import SimpleNamespace

import torch

from benchmarks.timing import best, interleaved
from robinherit.config import HeadKind, load_config, with_updates
from robinherit.data.datasets import ArrayDataset
from robinherit.data.sources import Split, array_source
from robinherit.evaluation.robust import robust_eval
from robinherit.models.two_layer import LinearHead
from robinherit.ops.losses import class_margin, cross_entropy
from robinherit.runs.experiment import build_encoder, evaluate_model, pretrain
from robinherit.seeding import generator
from robinherit.training.heads import batches, head_steps, train_head
from robinherit.training.optim import make_stepper

# test images per pair (``--n-test`` sets both): the chunked evaluation pays where a whole test set's activations
# outgrow the caches, so it is timed at the size the shipped config evaluates
N_TEST = {"cascade": 300, "chunked eval": 1000}


def fashion_like(n_train: int, n_test: int, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, 784, generator=g)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    x[torch.arange(len(y)), y * 78] = 1.0  # a learnable pixel per class, so heads reach a real accuracy
    return ArrayDataset("fashion_like", x[:n_train], y[:n_train], x[n_train:], y[n_train:], (1, 28, 28), 10)


def slf_plain(encoder, x, y, cfg, g) -> LinearHead:
    """The plain SLF loop: the frozen encoder runs on every minibatch of every epoch."""
    head = LinearHead(encoder, encoder.feature_dim, 10).eval()
    step = make_stepper(head.linear.parameters(), cfg, head_steps(x.shape[0], cfg))
    for rows in batches(x.shape[0], cfg, g):
        with torch.no_grad():
            feats = encoder.features(x[rows])
        step(cross_entropy(head.linear(feats), y[rows]).mean())
    return head


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000, help="training images (the heads' split)")
    ap.add_argument(
        "--n-test",
        type=int,
        default=None,
        help=f"test images of the cascade and chunked-eval pairs (default {N_TEST['cascade']} and "
        f"{N_TEST['chunked eval']})",
    )
    ap.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="the chunked-eval pair's eval.batch_size (default: the shipped fashion_mnist config's)",
    )
    ap.add_argument("--pretrain-steps", type=int, default=50, help="clean pre-training steps of the CNN")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds per pair; the best is kept")
    ap.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    args = ap.parse_args(argv)
    sizes = (args.n_train, args.n_test, args.eval_batch_size, args.pretrain_steps, args.repeats)
    if any(v is not None and v < 1 for v in sizes):
        ap.error("--n-train, --n-test, --eval-batch-size, --pretrain-steps and --repeats must be at least 1")
    return args


def setup(args: argparse.Namespace) -> SimpleNamespace:
    """The config, the briefly pre-trained and frozen CNN, its SLF head, the heads' training split and each pair's
    test split: the source's own for the cascade, images drawn apart for the chunked evaluation (so that its size
    leaves the other pairs' data as they were)."""
    n_test = {name: args.n_test or n for name, n in N_TEST.items()}
    cfg = load_config("fashion_mnist", [f"pretrain.steps={args.pretrain_steps}", "pretrain.eps=0"])
    cfg = with_updates(cfg, **{"downstream.n_train": args.n_train, "eval.n_test": n_test["cascade"]})
    source = array_source(cfg, fashion_like(args.n_train, n_test["cascade"]))
    encoder = build_encoder(cfg, source)
    pretrain(encoder, source.pretrain_stream(cfg, torch.device("cpu")), cfg, source)
    encoder.freeze().eval()
    train, (_, test) = source.downstream_train(cfg), source.test_splits(cfg)
    head = train_head(encoder, encoder.feature_dim, 10, train.x, train.y, HeadKind.clean, cfg.downstream,
                      norm=cfg.eval.norm, g=generator(0, "bench"))  # fmt: skip
    chunked = fashion_like(0, n_test["chunked eval"], seed=1)
    return SimpleNamespace(
        cfg=cfg, source=source, encoder=encoder, head=head, train=train, test=test, n_test=n_test,
        # the pre-training task's test split as the same_task protocol makes it: the images and their classes
        pre_test=Split(chunked.x_test, chunked.y_test, 10),
        batch_size=args.eval_batch_size or cfg.eval.batch_size,
    )  # fmt: skip


def cascade_pair(s: SimpleNamespace) -> tuple:
    def evaluate(per_attack: bool):
        ecfg = s.cfg.eval.model_copy(update={"per_attack": per_attack})

        def run(k: int) -> None:
            for _ in range(k):
                robust_eval(s.head, s.test.x, s.test.y, class_margin, ecfg, n_classes=10, image_shape=(1, 28, 28),
                            g=generator(0, "eval"), seed=0, tag="b", clip=(0.0, 1.0))  # fmt: skip

        return run

    return evaluate(False), evaluate(True)


def heads_pair(s: SimpleNamespace) -> tuple:
    def heads(cached: bool):
        def run(k: int) -> None:
            for _ in range(k):
                if cached:
                    train_head(s.encoder, s.encoder.feature_dim, 10, s.train.x, s.train.y, HeadKind.clean,
                               s.cfg.downstream, norm=s.cfg.eval.norm, g=generator(0, "h"))  # fmt: skip
                else:
                    slf_plain(s.encoder, s.train.x, s.train.y, s.cfg.downstream, generator(0, "h"))

        return run

    return heads(True), heads(False)


def chunked_pair(s: SimpleNamespace, records: dict[str, dict]) -> tuple:
    """The pre-trained CNN's evaluation as a run does it (``evaluate_model``), ``s.batch_size`` examples at a time
    and all at once; each path's last record goes to ``records``."""

    def evaluate(path: str, batch_size: int | None):
        cfg = with_updates(s.cfg, **{"eval.n_test": len(s.pre_test.y), "eval.batch_size": batch_size})

        def run(k: int) -> None:
            for _ in range(k):
                records[path] = evaluate_model(cfg, s.encoder, s.pre_test, s.source, "pretrain")

        return run

    return evaluate("toolkit", s.batch_size), evaluate("reference", None)


def agreement(toolkit: dict, reference: dict, n: int) -> dict:
    """Whether chunked and whole evaluations agree: PGD's robust accuracies (and the clean accuracy) to the bit, and
    the worst case over every attack within one binomial standard error at every budget (AutoAttack's components
    draw a seed per chunk). The standard error is that of the two accuracies' mean on ``n`` examples."""
    pgd = {
        path: r.get("pgd_robust_acc", r["robust_acc"]) for path, r in (("toolkit", toolkit), ("reference", reference))
    }
    se = {}
    for key, ref in reference["robust_acc"].items():
        p = (ref + toolkit["robust_acc"][key]) / 2
        se[key] = math.sqrt(p * (1 - p) / n)
    return {
        "clean_acc": {"toolkit": toolkit["clean_acc"], "reference": reference["clean_acc"]},
        "pgd_robust_acc": pgd,
        "robust_acc": {"toolkit": toolkit["robust_acc"], "reference": reference["robust_acc"]},
        "pgd_equal": pgd["toolkit"] == pgd["reference"] and toolkit["clean_acc"] == reference["clean_acc"],
        "binomial_se": se,
        "worst_case_within_one_se": all(
            abs(toolkit["robust_acc"][k] - v) <= se[k] + 1e-12 for k, v in reference["robust_acc"].items()
        ),
    }


def time_pair(fast, plain, repeats: int) -> dict:
    """Seconds per call of each path (best round), reference / toolkit of the best rounds and of every round."""
    times = interleaved({"toolkit": fast, "reference": plain}, {"toolkit": 1, "reference": 1}, repeats, warmup=0)
    rounds = [r[0] / t[0] for t, r in zip(times["toolkit"], times["reference"], strict=True)]
    return {
        "toolkit_s": best(times["toolkit"])[0],
        "reference_s": best(times["reference"])[0],
        "ratio": best(times["reference"])[0] / best(times["toolkit"])[0],
        "ratio_rounds": rounds,
        "ratio_median_of_rounds": statistics.median(rounds),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    s = setup(args)
    records: dict[str, dict] = {}
    pairs = {"cascade": cascade_pair(s), "clean head": heads_pair(s), "chunked eval": chunked_pair(s, records)}
    out: dict = {"n_test": s.n_test["cascade"], "n_train": args.n_train}
    for name, (fast, plain) in pairs.items():
        out[name] = time_pair(fast, plain, args.repeats)
    n = s.n_test["chunked eval"]
    out["chunked eval"].update(
        {"n_test": n, "batch_size": s.batch_size, **agreement(records["toolkit"], records["reference"], n)}
    )
    if args.json:
        print(json.dumps(out))
    else:
        print_table(out)
    return out


def print_table(out: dict) -> None:
    for name in ("cascade", "clean head", "chunked eval"):
        r = out[name]
        print(f"{name:12s} toolkit {r['toolkit_s']:8.2f} s  reference {r['reference_s']:8.2f} s  "
              f"ratio {r['ratio']:.2f}x (rounds {', '.join(f'{v:.2f}' for v in r['ratio_rounds'])})")  # fmt: skip
    c = out["chunked eval"]
    tk, ref = c["robust_acc"]["toolkit"], c["robust_acc"]["reference"]
    print(
        f"chunked eval: {c['n_test']} examples, {c['batch_size']} at a time"
        + (" (one chunk)" if c["batch_size"] >= c["n_test"] else "")
        + f" against all at once; PGD's robust "
        f"accuracy {'equal' if c['pgd_equal'] else 'DIFFERS'}; worst case "
        + ", ".join(f"eps {k}: {tk[k]:.3f} vs {ref[k]:.3f} (se {c['binomial_se'][k]:.3f})" for k in ref)
        + (" (within one standard error)" if c["worst_case_within_one_se"] else " (NOT within one standard error)")
    )


if __name__ == "__main__":
    main()
