"""What the pipeline asks of an encoder, and the encoders by name (``model.encoder``).

An encoder is an ``nn.Module`` with ``features(x) -> (n, feature_dim)`` on flat inputs, a pre-training head
(``head``, applied by ``forward``) and ``freeze()``. Everything beyond that is declared, never inferred from its
class: ``capabilities`` names the fast paths it fits, and ``first_layer()`` the linear first layer that
purification reads. Code that has a faster or exact path for some encoders asks :func:`supports`; every other
encoder takes the generic autograd path, so a new encoder runs everywhere without declaring anything.

Capabilities (each one a promise about the module's structure, which the path then reads):

- ``closed_form``: h = act(W (x - c), b) with one unit of ``models.units.UNITS`` (``weight()`` (m, d),
  ``threshold()`` (m,), ``center``, ``cfg.activation``, a linear ``head``), so the input and weight gradients
  have closed forms (``robinherit.ops.closed_form``) and heads on it train as one stack.
- ``stackable``: also the parameters ``W`` and ``b`` that the stacked pre-training (``robinherit.training.stacked``)
  trains many copies of at once.
- ``certifiable``: the same structure, which the certifier (``robinherit.evaluation.certify``) bounds exactly.

Optional too: ``export_weights()`` and ``load_weights(weights)``, what the results store keeps of a trained encoder
(default: its state dict).

A new encoder is a builder ``build(model_cfg, input_dim, n_outputs, image_shape, g, center) -> nn.Module`` and
one line ``ENCODERS["name"] = build``; ``model.encoder`` then accepts the name (docs/extending.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from robinherit import registry

CLOSED_FORM = "closed_form"
STACKABLE = "stackable"
CERTIFIABLE = "certifiable"
CAPABILITIES = frozenset({CLOSED_FORM, STACKABLE, CERTIFIABLE})


@dataclass(frozen=True)
class FirstLayer:
    """A linear first layer as purification reads it: one row per unit over its fan-in. ``kernel`` None: each row
    sees the whole (centred) input; (kh, kw): rows are conv filters over c x kh x kw patches of the image."""

    weight: Tensor  # (units, fan_in)
    kernel: tuple[int, int] | None = None


@runtime_checkable
class Encoder(Protocol):
    """The interface every stage uses (attacks, heads, evaluation and the generic pre-training loops)."""

    capabilities: frozenset[str]
    head: nn.Module  # the pre-training head, on the features; ``forward`` applies it

    @property
    def feature_dim(self) -> int: ...

    def features(self, x: Tensor) -> Tensor: ...

    def forward(self, x: Tensor) -> Tensor: ...

    def freeze(self) -> nn.Module: ...

    def first_layer(self) -> FirstLayer | None: ...


# (model_cfg: config.ModelConfig, input_dim, n_outputs, image_shape (c, h, w) or None, init generator or None,
# input centre or None) -> encoder. This module is a leaf (the config reads ENCODERS), so it names no config type.
Builder = Callable[..., nn.Module]

# model.encoder -> builder, or "module:function" of one, imported when first built. The shipped nets are named so:
# they read the config's types, and the config reads this registry's names, so this module imports none of them.
# A new encoder is one entry here (or in a plugin, robinherit.plugins).
ENCODERS = registry.ENCODERS


def encoder_builder(name: str) -> Builder:
    """The builder of ``model.encoder=name`` (a config.EncoderKind member or its name)."""
    return ENCODERS[getattr(name, "value", name)]


def supports(model: nn.Module, capability: str) -> bool:
    """Whether ``model`` declares ``capability`` (one of ``CAPABILITIES``); undeclared means the generic path."""
    if capability not in CAPABILITIES:
        raise ValueError(f"no capability '{capability}'; capabilities: {', '.join(sorted(CAPABILITIES))}")
    return capability in getattr(model, "capabilities", ())


def first_layer(model: nn.Module) -> FirstLayer | None:
    """``model.first_layer()`` where the encoder has one, else None (purification then has nothing to read)."""
    read = getattr(model, "first_layer", None)
    return read() if read is not None else None


def linear(fan_in: int, fan_out: int, g: torch.Generator | None, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` with N(0, 1 / fan_in) weights drawn from ``g`` and zero bias, built without the default
    initialisation, which would draw from (and so move) torch's global random stream."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(fan_out, fan_in, generator=g) / math.sqrt(fan_in))
        if bias:
            layer.bias.zero_()
    return layer
