"""Losses as pure tensor functions, per example (shape (n,)) so attacks can maximise them one by one."""

from __future__ import annotations

from collections.abc import Callable

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
    a = F.normalize(a, dim=1, eps=1e-12)
    b = F.normalize(b, dim=1, eps=1e-12)
    # The (2n, 2n) similarity matrix in three (n, n) blocks: no concatenation, and no gradient work for
    # the b-b block when b is held fixed (the partner view inside an attack). About 2x faster on CPU.
    self_pair = torch.eye(n, dtype=torch.bool, device=a.device)  # an embedding is never its own negative
    ab = a @ b.T / temperature  # (n, n), positives on the diagonal
    aa = (a @ a.T / temperature).masked_fill(self_pair, -torch.inf)  # (n, n)
    bb = (b @ b.T / temperature).masked_fill(self_pair, -torch.inf)  # (n, n)
    pos = ab.diagonal()  # (n,)
    loss_a = torch.logaddexp(ab.logsumexp(dim=1), aa.logsumexp(dim=1)) - pos  # anchors a_i
    loss_b = torch.logaddexp(ab.logsumexp(dim=0), bb.logsumexp(dim=1)) - pos  # anchors b_i
    return 0.5 * (loss_a + loss_b)


# ---- closed-form gradients with respect to the logits, for the fast paths ----

# loss(logits, targets) -> (per-example loss (..., n), its gradient with respect to logits (..., n, K))
LossGrad = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _bce_grad(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if logits.shape[-1] == 1:  # one task: the mean over it and the division by 1 are exact, so skip both passes
        return loss[..., 0], torch.sigmoid(logits) - targets
    return loss.mean(dim=-1), (torch.sigmoid(logits) - targets) / logits.shape[-1]


def _multilabel_margin_grad(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    signs = 2 * targets - 1
    loss, idx = (signs * logits).min(dim=-1)  # the worst task carries the whole gradient
    grad = torch.zeros_like(logits).scatter_(-1, idx[..., None], signs.gather(-1, idx[..., None]))
    return loss, grad


def _cross_entropy_grad(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    logp = torch.log_softmax(logits, dim=-1)
    loss = -logp.gather(-1, labels[..., None]).squeeze(-1)
    grad = logp.exp().scatter_add_(-1, labels[..., None], -torch.ones_like(logits[..., :1]))
    return loss, grad


def _class_margin_grad(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    true = logits.gather(-1, labels[..., None])
    other, idx = logits.scatter(-1, labels[..., None], -torch.inf).max(dim=-1)
    grad = torch.zeros_like(logits).scatter_(-1, labels[..., None], 1.0)
    grad.scatter_add_(-1, idx[..., None], -torch.ones_like(true))
    return true.squeeze(-1) - other, grad


# The losses above that have a closed-form gradient (the closed-form paths of robinherit.ops.closed_form and
# robinherit.training.stacked use them), keyed by the function itself.
LOSS_GRADS: dict[Callable[[Tensor, Tensor], Tensor], LossGrad] = {
    multilabel_bce: _bce_grad,
    multilabel_margin: _multilabel_margin_grad,
    cross_entropy: _cross_entropy_grad,
    class_margin: _class_margin_grad,
}
