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
