"""When a setting is inert: it cannot act on a run, so it is left out of the run's id. Each config field that is
inert for some runs names its rule here beside its type (``field(..., identity=inert.supervised)``); a rule reads
the whole config ``c`` (an ``ExperimentConfig``) and says True where the field cannot change what the run computes.
"""

from __future__ import annotations

from typing import Any

from robinherit.config.enums import AutoAttackSet, EncoderKind, HeadKind, Method, Protocol


def supervised(c: Any) -> bool:
    return c.pretrain.method == Method.supervised  # the contrastive settings


def clean(c: Any) -> bool:
    return c.pretrain.eps == 0  # the inner maximisation's settings


def supervised_or_clean(c: Any) -> bool:
    return supervised(c) or clean(c)


def no_adversarial_head(c: Any) -> bool:
    return HeadKind.adversarial not in c.downstream.heads


def set_by_epochs(c: Any) -> bool:
    return c.downstream.epochs is not None


def not_conv(c: Any) -> bool:
    return c.model.encoder != EncoderKind.conv


def no_autoattack(c: Any) -> bool:
    return c.eval.autoattack == AutoAttackSet.none


def no_extra_attacks(c: Any) -> bool:
    """Only PGD evaluates the run: how further attacks are scheduled cannot act on it."""
    return no_autoattack(c) and not c.eval.attacks


def synthetic(c: Any) -> bool:
    return not c.is_real  # the real-data evaluation settings


def synthetic_or_not_conv(c: Any) -> bool:
    return synthetic(c) or not_conv(c)


def not_mnist1d(c: Any) -> bool:
    return c.data.source != "mnist1d"


def not_relabel(c: Any) -> bool:
    return c.data.protocol != Protocol.relabel


def not_class_split(c: Any) -> bool:
    return c.data.protocol != Protocol.class_split


def not_label_free_split(c: Any) -> bool:
    return not_class_split(c) or c.pretrain.method != Method.contrastive
