"""Encoders are asked what they can do (models.encoder), never checked by class; model.encoder takes any name of
ENCODERS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robinherit.config import EncoderKind, build_config
from robinherit.errors import ConfigError
from robinherit.models import encoder
from robinherit.models.conv import ConvNet
from robinherit.models.encoder import CAPABILITIES, ENCODERS, encoder_builder, first_layer, supports
from robinherit.models.two_layer import TwoLayerNet
from robinherit.ops.closed_form import fused_loss
from robinherit.ops.losses import cross_entropy


def _nets() -> tuple[TwoLayerNet, ConvNet]:
    cfg = build_config({"data": {"source": "digits"}, "model": {"width": 4, "conv": {"channels": [2]}}}).model
    g = torch.Generator().manual_seed(0)
    return encoder_builder("two_layer")(cfg, 64, 3, (1, 8, 8), g, None), encoder_builder("conv")(
        cfg, 64, 3, (1, 8, 8), g, None
    )


def test_the_shipped_nets_declare_their_capabilities_and_first_layers():
    two, conv = _nets()
    assert all(supports(two, c) for c in CAPABILITIES) and not any(supports(conv, c) for c in CAPABILITIES)
    assert first_layer(two).kernel is None and torch.equal(first_layer(two).weight, two.weight())
    assert first_layer(conv).kernel == (3, 3) and first_layer(conv).weight.shape == (2, 9)
    assert (two.feature_dim, conv.feature_dim) == (4, 4)
    assert first_layer(nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="no capability 'closed_from'"):
        supports(two, "closed_from")


def test_a_fast_path_follows_the_declaration_not_the_class():
    two, _ = _nets()
    y = torch.zeros(5, dtype=torch.long)
    assert fused_loss(two, cross_entropy, y) is not None
    two.capabilities = frozenset()  # an instance that declares nothing takes the generic path
    assert fused_loss(two, cross_entropy, y) is None


def test_model_encoder_takes_any_registered_name(monkeypatch):
    monkeypatch.setitem(ENCODERS, "two_layer_again", ENCODERS["two_layer"])
    cfg = build_config({"model": {"encoder": "two_layer_again"}})
    assert cfg.model.encoder == "two_layer_again"
    # the shipped names read back as EncoderKind members, with the same run ids as before
    assert build_config({"model": {"encoder": "two_layer"}}).model.encoder is EncoderKind.two_layer
    assert build_config({"model": {"encoder": "two_layer"}}).config_hash() == build_config({}).config_hash()
    with pytest.raises(ConfigError, match=r"model.encoder='mlp' is not an encoder; allowed values: two_layer, conv"):
        build_config({"model": {"encoder": "mlp"}})
    with pytest.raises(KeyError, match="no encoder 'mlp'"):
        encoder.encoder_builder("mlp")
