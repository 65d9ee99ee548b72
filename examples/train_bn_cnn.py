"""Train the example encoder of ``examples/bn_cnn.py`` the way a researcher trains their own model: a plain PyTorch
loop, PGD adversarial training (Madry et al. 2018) at l-inf ``--eps`` on Fashion-MNIST with a linear classifier on
the 64 features, batch norm in training mode. It saves the encoder's state dict (for ``robinherit audit --weights``)
and the whole classifier's (encoder + linear layer), then the audit reads both:

    python examples/train_bn_cnn.py --out results/bn_cnn            # AT at 0.1; --eps 0 trains it cleanly
    robinherit audit examples/bn_cnn.py:encoder --weights results/bn_cnn/encoder.pt --data fashion_mnist

    # from Python, with the classifier's own robustness beside the heads (the record's ``pretrain``)
    import robinherit, torch
    from examples.bn_cnn import encoder
    enc, clf = encoder(), torch.nn.Sequential(encoder(), torch.nn.Linear(64, 10))
    enc.load_state_dict(torch.load("results/bn_cnn/encoder.pt", weights_only=True))
    clf.load_state_dict(torch.load("results/bn_cnn/classifier.pt", weights_only=True))
    rec = robinherit.audit(enc, data="fashion_mnist", classifier=clf)

The data come from the toolkit's loader (the files Debian's ``dataset-fashion-mnist`` installs, or ``--root``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bn_cnn import encoder

from robinherit.data.datasets import LoadSpec, load_dataset


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """l-inf PGD on the cross-entropy from a random start, step 2.5 eps / steps, kept in [0, 1]."""
    delta = (torch.rand_like(x) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/bn_cnn"))
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--attack-steps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", type=Path, default=None, help="folder of the Fashion-MNIST files")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)  # a script of its own: the global generator is its to seed
    ds = load_dataset("fashion_mnist", LoadSpec(args.root))
    x = ds.x_train.reshape(-1, 1, 28, 28)
    enc = encoder(args.seed)
    model = nn.Sequential(enc, nn.Linear(64, ds.n_classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, x.shape[0], (args.batch_size,))
        xb, yb = x[idx], ds.y_train[idx]
        if args.eps > 0:
            model.eval()  # the attack reads batch norm's running statistics, as at test time
            xb = pgd(model, xb, yb, args.eps, args.attack_steps)
        model.train()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        acc = (model(ds.x_test.reshape(-1, 1, 28, 28)).argmax(1) == ds.y_test).float().mean().item()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(enc.state_dict(), args.out / "encoder.pt")
    torch.save(model.state_dict(), args.out / "classifier.pt")
    print(f"{args.steps} steps in {time.perf_counter() - t0:.0f} s; clean test accuracy {acc:.3f}; saved in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
