"""An encoder of your own, as `robinherit audit` takes it: a small CNN with batch norm and dropout for 28 x 28
grey images (MNIST, Fashion-MNIST) that returns 64 features per image.

    robinherit audit examples/bn_cnn.py:encoder --data fashion_mnist --set eval.n_test=200

The audit calls ``encoder()`` (no arguments), feeds the module images (n, 1, 28, 28) in [0, 1] and reads its output
as features (n, 64). Add ``--weights FILE`` to audit trained weights (a state dict saved with
``torch.save(model.state_dict(), FILE)``); without it the module keeps its seeded random initialisation, the same
weights at every call, so a repeated audit is answered from the results store. The audit leaves the module as it
found it: its batch-norm statistics, modes and gradient flags.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BNConvNet(nn.Module):
    """Three conv blocks (conv, batch norm, ReLU; the first two max-pooled), global average pooling, dropout."""

    def __init__(self, width: int = 16, features: int = 64, dropout: float = 0.1):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, width),
            nn.MaxPool2d(2),  # 14 x 14
            *block(width, 2 * width),
            nn.MaxPool2d(2),  # 7 x 7
            *block(2 * width, features),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),  # active in training mode only; the audit reads the module in eval mode
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def encoder(seed: int = 0) -> nn.Module:
    """The CNN with PyTorch's default initialisation drawn from ``seed``, without touching the caller's global
    random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BNConvNet()
