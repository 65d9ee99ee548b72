"""Losses as pure tensor functions, per example (shape (n,)) so attacks can maximise them one by one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def multilabel_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """(n, K) logits and {0, 1} targets -> (n,) binary cross-entropy averaged over the K tasks."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)


def multilabel_margin(logits: Tensor, targets: Tensor) -> Tensor:
    """(n,) smallest signed margin over tasks: > 0 iff every task is classified correctly."""
    return ((2 * targets - 1) * logits).amin(dim=1)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """(n, C) logits and (n,) class indices -> (n,) cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


def class_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """(n,) logit of the true class minus the largest other logit: > 0 iff correct."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -torch.inf).amax(dim=1)
    return true - other


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE / NT-Xent of SimCLR (Chen et al. 2020), per example: (n, k), (n, k) -> (n,).

    ``a[i]`` and ``b[i]`` are two views of example i; every other embedding of either view in the batch
    is a negative (2n - 2 of them). Embeddings are compared by cosine similarity / ``temperature``.
    Example i's loss is the mean of the two directions (anchor a_i, positive b_i) and (anchor b_i,
    positive a_i), so the mean over i is SimCLR's batch loss. Per example so that attacks can maximise
    it (RoCL, Kim et al. 2020); note that example i's loss also depends on the other examples.
    """
    n = a.shape[0]
    e = F.normalize(torch.cat([a, b]), dim=1, eps=1e-12)  # (2n, k)
    sim = e @ e.T / temperature  # (2n, 2n)
    # An embedding is never its own negative.
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim.device), -torch.inf)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)  # (2n,) index of positive
    per_anchor = F.cross_entropy(sim, partner, reduction="none")  # (2n,)
    return 0.5 * (per_anchor[:n] + per_anchor[n:])
