"""Downstream heads on a frozen pre-trained encoder.

A *clean* head is plain logistic regression on the features (standard linear fine-tuning, SLF); an
*adversarial* head is trained on PGD examples crafted through the frozen encoder (adversarial linear
fine-tuning, ALF). Robustness inheritance is the claim that SLF on adversarially pre-trained features is
already robust.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robinherit.attacks import pgd
from robinherit.config import DownstreamConfig, HeadKind, Norm
from robinherit.fused import attack_loss
from robinherit.losses import cross_entropy
from robinherit.models import LinearHead


def _train_clean(head: LinearHead, x: Tensor, y: Tensor, cfg: DownstreamConfig, **_: object) -> None:
    with torch.no_grad():
        feats = head.encoder.features(x)  # encoder frozen: compute the features once
    opt = torch.optim.Adam(head.linear.parameters(), lr=cfg.lr)
    for _step in range(cfg.steps):
        loss = cross_entropy(head.linear(feats), y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _train_adversarial(
    head: LinearHead,
    x: Tensor,
    y: Tensor,
    cfg: DownstreamConfig,
    *,
    norm: Norm,
    g: torch.Generator,
    clip: tuple[float, float] | None = None,
) -> None:
    opt = torch.optim.Adam(head.linear.parameters(), lr=cfg.lr)
    for _step in range(cfg.steps):
        x_adv = pgd(
            attack_loss(head, cross_entropy, y),  # closed-form input gradient at the head's current weights
            x,
            eps=cfg.eps,
            norm=norm,
            steps=cfg.attack_steps,
            generator=g,
            clip=clip,
        )
        loss = cross_entropy(head(x_adv), y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


HEAD_TRAINERS: dict[HeadKind, Callable[..., None]] = {
    HeadKind.clean: _train_clean,
    HeadKind.adversarial: _train_adversarial,
}


def train_head(
    encoder: nn.Module,
    width: int,
    n_classes: int,
    x: Tensor,
    y: Tensor,
    kind: HeadKind,
    cfg: DownstreamConfig,
    *,
    norm: Norm,
    g: torch.Generator,
    clip: tuple[float, float] | None = None,
) -> LinearHead:
    """Train a linear head of ``kind`` on frozen ``encoder`` features of (x, y)."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    head = LinearHead(encoder, width, n_classes).to(x.device)
    HEAD_TRAINERS[HeadKind(kind)](head, x, y, cfg, norm=norm, g=g, clip=clip)
    return head
