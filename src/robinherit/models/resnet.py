"""Residual encoders as the field uses them: ResNet-18 in its CIFAR form, and a small ResNet for 28x28 images.

He et al. (2016), "Deep Residual Learning for Image Recognition". The CIFAR form (a 3x3 stem with stride 1 and no
max-pool, four stages of two basic blocks, 64-512 channels, global average pooling) is the encoder of the robust
self-supervised work this toolkit audits: RoCL (Kim et al. 2020), ACL (Jiang et al. 2020), AdvCL, DynACL and
RobustSSL-Bench all report ResNet-18 on CIFAR-10. The small form (three stages of one block, 16-64 channels) keeps
the same structure at a size that trains on Fashion-MNIST on a CPU.

Defined here rather than taken from torchvision, whose wheel would replace the CPU build of torch. Inputs arrive
flat, (n, c*h*w) in [0, 1], and are reshaped here, as ``models.conv.ConvNet`` does, so attacks, heads and data
pipelines treat every encoder alike. ``features(x)`` is the pooled representation (n, feature_dim) a linear head
reads; ``forward`` adds the pre-training head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robinherit.errors import ConfigError
from robinherit.models.encoder import FirstLayer


def _conv(c_in: int, c_out: int, kernel: int, stride: int, g: torch.Generator | None) -> nn.Conv2d:
    """A bias-free conv layer built without torch's default initialisation (which draws from, and so moves, the
    global random stream), then initialised from ``g``."""
    layer = nn.utils.skip_init(nn.Conv2d, c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    _init_conv(layer, g)
    return layer


def _init_conv(layer: nn.Conv2d | nn.Linear, g: torch.Generator | None) -> None:
    # He initialisation drawn from the run's generator, so the weights are a function of the seed alone
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
        if layer.bias is not None:
            layer.bias.zero_()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, g: torch.Generator | None):
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 3, stride, g)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv(c_out, c_out, 3, 1, g)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(_conv(c_in, c_out, 1, stride, g), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A residual encoder ``features(x) -> (n, feature_dim)`` with a linear head ``forward(x) -> (n, n_out)``. It
    declares no capability (``models.encoder``): every stage takes its generic autograd path."""

    capabilities = frozenset()

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        widths: Sequence[int],
        blocks: Sequence[int],
        n_out: int,
        g: torch.Generator | None = None,
        center: Tensor | None = None,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c = self.image_shape[0]
        self.stem = _conv(c, widths[0], 3, 1, g)
        self.bn = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(count):
                stages.append(BasicBlock(c_in, width, 2 if (i > 0 and j == 0) else 1, g))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.feature_dim = c_in
        self.head = nn.utils.skip_init(nn.Linear, c_in, n_out)
        _init_conv(self.head, g)
        self.register_buffer("center", None if center is None else center.detach().reshape(-1).clone())

    def features(self, x: Tensor) -> Tensor:
        if self.center is not None:
            x = x - self.center
        maps = torch.relu(self.bn(self.stem(x.reshape(x.shape[0], *self.image_shape))))  # (n, w0, h, w)
        maps = self.stages(maps)  # (n, feature_dim, h', w')
        return maps.mean(dim=(2, 3))  # global average pooling: (n, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def first_layer_filters(self) -> Tensor:
        """(out_channels, c * 3 * 3) stem filters, one patch-space vector per row."""
        return self.stem.weight.reshape(self.stem.weight.shape[0], -1)

    def first_layer(self) -> FirstLayer:
        """The stem's filters over c x 3 x 3 patches: what learned-dictionary purity reads (``models.encoder``)."""
        return FirstLayer(self.first_layer_filters(), (3, 3))

    def freeze(self) -> ResNet:
        return self.requires_grad_(False)


def resnet18(image_shape: tuple[int, int, int], n_out: int, g: torch.Generator | None = None, center=None) -> ResNet:
    """ResNet-18, CIFAR form: 64-128-256-512 channels, two basic blocks per stage; 512 features."""
    return ResNet(image_shape, (64, 128, 256, 512), (2, 2, 2, 2), n_out, g, center)


def resnet_small(
    image_shape: tuple[int, int, int], n_out: int, g: torch.Generator | None = None, center=None
) -> ResNet:
    """A small ResNet for 28x28 images: 16-32-64 channels, one basic block per stage; 64 features."""
    return ResNet(image_shape, (16, 32, 64), (1, 1, 1), n_out, g, center)


def _needs_images(image_shape: tuple[int, int, int] | None, name: str) -> tuple[int, int, int]:
    if image_shape is None:
        raise ConfigError(
            f"model.encoder={name} needs an image data set (data.source such as cifar10 or fashion_mnist)"
        )
    return image_shape


def build_resnet18(model_cfg, input_dim, n_outputs, image_shape, g, center) -> ResNet:
    """``model.encoder=resnet18`` (``registry.ENCODERS``); the feature width is the architecture's (512)."""
    return resnet18(_needs_images(image_shape, "resnet18"), n_outputs, g, center)


def build_resnet_small(model_cfg, input_dim, n_outputs, image_shape, g, center) -> ResNet:
    """``model.encoder=resnet_small`` (``registry.ENCODERS``); 64 features."""
    return resnet_small(_needs_images(image_shape, "resnet_small"), n_outputs, g, center)
