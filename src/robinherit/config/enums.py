"""The closed sets of the experiment configuration: each setting that takes one of a few fixed values is one of
these Enums, so a wrong value is an error that lists the allowed ones."""

from __future__ import annotations

from enum import Enum


class Dictionary(str, Enum):
    orthogonal = "orthogonal"
    identity = "identity"
    overcomplete = "overcomplete"


class Sparsity(str, Enum):
    exact = "exact"
    bernoulli = "bernoulli"


class Values(str, Enum):
    sign = "sign"
    uniform = "uniform"


class Activation(str, Enum):
    """The shipped units (names of ``registry.UNITS``, which may hold more: ``model.activation`` takes any)."""

    sym_relu = "sym_relu"
    relu = "relu"


class Method(str, Enum):
    supervised = "supervised"
    contrastive = "contrastive"


class Norm(str, Enum):
    l2 = "l2"
    linf = "linf"


class AttackKind(str, Enum):
    pgd = "pgd"
    fgm = "fgm"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class LrSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"  # cosine decay from lr to 0 over the head's optimiser steps (Loshchilov & Hutter 2017)


class Augmentation(str, Enum):
    none = "none"
    noise = "noise"
    mask = "mask"
    feature_dropout = "feature_dropout"


class AdversarialView(str, Enum):
    one = "one"
    both = "both"


class HeadKind(str, Enum):
    clean = "clean"
    adversarial = "adversarial"


class EncoderKind(str, Enum):
    two_layer = "two_layer"
    conv = "conv"


class Protocol(str, Enum):
    same_task = "same_task"  # head on the pre-training labels (robust SSL benchmarks' SLF / ALF)
    relabel = "relabel"  # head on a derived task (digit parity, low/high class halves)
    class_split = "class_split"  # pre-train on some classes, head on the others (Shafahi et al. 2020)


class Relabel(str, Enum):
    parity = "parity"  # y mod 2 (digits: odd vs even)
    halves = "halves"  # y >= C/2


class AutoAttackSet(str, Enum):
    custom = "custom"  # APGD-CE, APGD-T (when >= 4 classes), Square: each run on its own, per-example worst case
    standard = "standard"  # torchattacks.AutoAttack(version="standard"): APGD-CE, APGD-T, FAB-T, Square
    none = "none"  # PGD only


class DictMethod(str, Enum):
    ica = "ica"  # FastICA (Hyvarinen & Oja 2000)
    dictionary_learning = "dictionary_learning"  # online dictionary learning (Mairal et al. 2009)
