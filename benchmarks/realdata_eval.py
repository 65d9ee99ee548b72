"""Real-data evaluation and heads: the toolkit's paths against the plain ways of doing the same work, in one process.

On random Fashion-MNIST-shaped data (1 x 28 x 28 in [0, 1], 10 classes; no data files are read), with the shipped
``fashion_mnist`` config's CNN briefly pre-trained (``--pretrain-steps``, clean, so the attacks have work to do):

  cascade      AutoAttack's components after PGD (``robust_eval``, ``eval.per_attack: false``): each attack only on
               the examples still correct.  Reference: the same attacks, each on every example
               (``eval.per_attack: true``, how the toolkit evaluated before).
  clean head   the SLF head on features computed once (``training.heads.train_head``, clean).  Reference: the same
               head with the encoder run on every minibatch of every epoch, as a plain training loop does.

Each pair runs ``--repeats`` times, interleaved (``benchmarks.timing.interleaved``); rows give seconds per call
(best round) and the ratio reference / toolkit, with every round's own ratio beside it.

    python -m benchmarks.realdata_eval                 # table
    python -m benchmarks.realdata_eval --json          # one JSON object
    python -m benchmarks.realdata_eval --n-test 50 --pretrain-steps 5 --repeats 1   # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks.timing import best, interleaved
from robinherit.config import HeadKind, load_config, with_updates
from robinherit.data.datasets import ArrayDataset
from robinherit.data.sources import array_source
from robinherit.evaluation.robust import robust_eval
from robinherit.models.two_layer import LinearHead
from robinherit.ops.losses import class_margin, cross_entropy
from robinherit.runs.experiment import build_encoder, pretrain
from robinherit.seeding import generator
from robinherit.training.heads import batches, head_steps, train_head
from robinherit.training.optim import make_stepper


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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--pretrain-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config("fashion_mnist", [f"pretrain.steps={args.pretrain_steps}", "pretrain.eps=0"])
    cfg = with_updates(cfg, **{"downstream.n_train": args.n_train, "eval.n_test": args.n_test})
    source = array_source(cfg, fashion_like(args.n_train, args.n_test))
    encoder = build_encoder(cfg, source)
    pretrain(encoder, source.pretrain_stream(cfg, torch.device("cpu")), cfg, source)
    encoder.freeze().eval()
    train, (_, test) = source.downstream_train(cfg), source.test_splits(cfg)
    head = train_head(encoder, encoder.feature_dim, 10, train.x, train.y, HeadKind.clean, cfg.downstream,
                      norm=cfg.eval.norm, g=generator(0, "bench"))  # fmt: skip

    def evaluate(per_attack: bool):
        ecfg = cfg.eval.model_copy(update={"per_attack": per_attack})

        def run(k: int) -> None:
            for _ in range(k):
                robust_eval(head, test.x, test.y, class_margin, ecfg, n_classes=10, image_shape=(1, 28, 28),
                            g=generator(0, "eval"), seed=0, tag="b", clip=(0.0, 1.0))  # fmt: skip

        return run

    def heads(cached: bool):
        def run(k: int) -> None:
            for _ in range(k):
                if cached:
                    train_head(encoder, encoder.feature_dim, 10, train.x, train.y, HeadKind.clean, cfg.downstream,
                               norm=cfg.eval.norm, g=generator(0, "h"))  # fmt: skip
                else:
                    slf_plain(encoder, train.x, train.y, cfg.downstream, generator(0, "h"))

        return run

    pairs = {"cascade": (evaluate(False), evaluate(True)), "clean head": (heads(True), heads(False))}
    out: dict = {"n_test": args.n_test, "n_train": args.n_train}
    for name, (fast, plain) in pairs.items():
        times = interleaved({"toolkit": fast, "reference": plain}, {"toolkit": 1, "reference": 1}, args.repeats,
                            warmup=0)  # fmt: skip
        rounds = [r[0] / t[0] for t, r in zip(times["toolkit"], times["reference"], strict=True)]
        out[name] = {
            "toolkit_s": best(times["toolkit"])[0],
            "reference_s": best(times["reference"])[0],
            "ratio": best(times["reference"])[0] / best(times["toolkit"])[0],
            "ratio_rounds": rounds,
            "ratio_median_of_rounds": statistics.median(rounds),
        }
    if args.json:
        print(json.dumps(out))
    else:
        for name in pairs:
            r = out[name]
            print(f"{name:11s} toolkit {r['toolkit_s']:8.2f} s  reference {r['reference_s']:8.2f} s  "
                  f"ratio {r['ratio']:.2f}x (rounds {', '.join(f'{v:.2f}' for v in r['ratio_rounds'])})")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
