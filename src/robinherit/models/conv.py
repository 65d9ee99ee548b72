"""A small convolutional encoder for image data sets, with the same interface as ``models.TwoLayerNet``.

A few 3x3 conv layers (ReLU; stride 2 after the first, so the map shrinks), then a feature layer
h = act(V flatten(conv(x)), b) with the thresholded unit of ``robinherit.models.two_layer`` and a linear head.
Inputs arrive flat, (n, c*h*w), and are reshaped to the image shape here, so attacks, heads and
data pipelines treat both encoders alike. Purification is read off the first conv layer's filters
(``first_layer_filters``), which see c x k x k input patches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robinherit.config import ConvConfig, ModelConfig
from robinherit.models.encoder import FirstLayer
from robinherit.models.units import row_norms, unit


def _init(param: Tensor, fan_in: int, g: torch.Generator | None) -> None:
    # Drawn from the run's generator (not torch's global stream) so the init is a function of the seed.
    with torch.no_grad():
        param.copy_(torch.randn(param.shape, generator=g) * math.sqrt(2.0 / fan_in))


class ConvNet(nn.Module):
    """Encoder ``features(x) -> (n, width)`` and linear head ``forward(x) -> (n, n_out)`` on flat inputs."""

    capabilities: frozenset[str] = frozenset()  # no closed form: every path differentiates it by autograd

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        conv: ConvConfig,
        cfg: ModelConfig,
        n_out: int,
        g: torch.Generator | None = None,
        center: Tensor | None = None,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.cfg = cfg
        self.act = unit(cfg.activation).function
        c, h, _w = self.image_shape
        layers: list[nn.Module] = []
        for i, out_ch in enumerate(conv.channels):
            # A 1-pixel-high image (MNIST-1D) gets 1 x k kernels: the convolution runs along the signal.
            kh = min(conv.kernel, h)
            stride = (1 if h == 1 else 2, 2) if i > 0 else 1
            # skip_init: the default initialisation would draw from (and so move) torch's global random stream
            layer = nn.utils.skip_init(
                nn.Conv2d, c, out_ch, (kh, conv.kernel), stride=stride, padding=(kh // 2, conv.kernel // 2)
            )
            _init(layer.weight, c * kh * conv.kernel, g)
            nn.init.zeros_(layer.bias)
            layers += [layer, nn.ReLU()]
            c = out_ch
        # channels-last: small-channel convolutions on the CPU are memory-bound in the default layout; oneDNN's
        # channels-last kernels cut the Fashion-MNIST CNN's pre-training from 25.7 to 23.6 s (the same maps up to
        # rounding; docs/performance.md)
        self.convs = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *self.image_shape)).numel()
        self.fc = nn.utils.skip_init(nn.Linear, flat, cfg.width, bias=False)
        _init(self.fc.weight, flat, g)
        self.b = nn.Parameter(torch.full((cfg.width,), float(cfg.threshold)), requires_grad=cfg.learn_threshold)
        self.head = nn.utils.skip_init(nn.Linear, cfg.width, n_out)
        _init(self.head.weight, cfg.width, g)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("center", None if center is None else center.detach().reshape(-1).clone())

    def first_layer_filters(self) -> Tensor:
        """(out_channels, c * kh * kw) filters of the first conv layer, one patch-space vector per row."""
        weight = self.convs[0].weight
        return weight.reshape(weight.shape[0], -1)

    @property
    def feature_dim(self) -> int:
        return self.fc.out_features

    def first_layer(self) -> FirstLayer:
        """The first conv layer's filters, each over c x kh x kw patches of the image."""
        return FirstLayer(self.first_layer_filters(), tuple(self.convs[0].kernel_size))

    def weight(self) -> Tensor:
        """The first layer's weights, as ``TwoLayerNet.weight`` gives them (here: conv filters)."""
        return self.first_layer_filters()

    def threshold(self) -> Tensor:
        return self.b.clamp_min(0.0)

    def features(self, x: Tensor) -> Tensor:
        if self.center is not None:
            x = x - self.center
        images = x.reshape(x.shape[0], *self.image_shape).contiguous(memory_format=torch.channels_last)
        maps = self.convs(images)  # (n, C, H', W'), stored channels-last
        u = self.fc(maps.flatten(1))  # (n, width)
        if self.cfg.normalize_rows:
            u = u / row_norms(self.fc.weight).squeeze(-1)
        return self.act(u, self.threshold())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def freeze(self) -> ConvNet:
        return self.requires_grad_(False)


def build_encoder(
    model_cfg: ModelConfig,
    input_dim: int,
    n_outputs: int,
    image_shape: tuple[int, int, int] | None,
    g: torch.Generator | None,
    center: Tensor | None,
) -> ConvNet:
    """``model.encoder=conv`` (``models.encoder.ENCODERS``): image sources only, as the config checks."""
    assert image_shape is not None
    return ConvNet(image_shape, model_cfg.conv, model_cfg, n_outputs, g, center)
