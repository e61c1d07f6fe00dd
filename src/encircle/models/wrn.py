"""Wide residual networks, the CIFAR variant (Zagoruyko & Komodakis, BMVC 2016).

WRN-``d``-``k``: a 3x3 stem convolution (16 channels), three groups of ``n = (d - 4) / 6``
pre-activation basic blocks of widths ``16k``, ``32k`` and ``64k`` (the second and third
group halve the resolution in their first block), a final BatchNorm + ReLU, global
average pooling and a linear head. This is the network of Hendrycks et al.'s outlier
exposure and pre-training code and of pytorch-ood's ``WideResNet`` (WRN-40-2, dropout
0.3 between the two convolutions of a block, the default here), so their weights load
into it (:mod:`encircle.models.pretrained`).

A block computes, with ``a = relu(bn1(x))``::

    out = conv2(dropout(relu(bn2(conv1(a)))))
    return out + x                 if the block keeps the width (identity shortcut)
    return out + shortcut(a)       otherwise (1x1 convolution, with the block's stride)

Parameter count (convolutions have no bias; each BatchNorm has weight and bias), with
``C`` input channels, ``w0 = 16``, ``w1, w2, w3 = 16k, 32k, 64k`` and ``K`` outputs::

    P = 9*C*w0
      + sum_{g=1..3} [ 2*w_{g-1} + 9*w_{g-1}*w_g + 2*w_g + 9*w_g^2 + [w_{g-1} != w_g]*w_{g-1}*w_g
                       + (n - 1) * (18*w_g^2 + 4*w_g) ]
      + 2*w3 + w3*K + K

e.g. WRN-40-2 with ``K = 10``: 2,243,546 parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from encircle.errors import ConfigError, DataError
from encircle.models.base import Backbone
from encircle.models.registry import register_model


class WideBasicBlock(nn.Module):
    """A pre-activation basic block (two 3x3 convolutions), as in the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(activated))


@register_model("wrn")
class WideResNet(Backbone):
    """WRN-``depth``-``widen_factor`` for small images (CIFAR-style, 32x32).

    ``forward_features`` gives the ``64 * widen_factor`` pooled features of the
    penultimate layer; ``forward_head`` is the linear layer ``fc`` (with bias) on top.
    A method that wants its own output space (e.g. MCHAD's 7- or 16-dimensional
    embedding) calls :meth:`replace_head`, or builds the network with that
    ``out_features`` and loads pretrained weights without the head
    (``load_pretrained(..., include_head=False)``).

    Args:
        depth: total depth ``d = 6n + 4`` (10, 16, 22, 28, 40, ...).
        widen_factor: width multiplier ``k``.
        dropout: dropout probability between the two convolutions of each block.
        out_features: outputs of the head (the number of classes for a classifier).
        in_channels: image channels.

    Raises:
        ConfigError: ``depth`` is not ``6n + 4`` with ``n >= 1``, or another argument is
            out of range.
    """

    def __init__(
        self,
        depth: int = 40,
        widen_factor: int = 2,
        dropout: float = 0.3,
        out_features: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"wrn depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        sizes = {"widen_factor": widen_factor, "out_features": out_features, "in_channels": in_channels}
        for name, value in sizes.items():
            if value < 1:
                raise ConfigError(f"wrn {name} must be >= 1, got {value}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"wrn dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.depth, self.widen_factor, self.in_channels = depth, widen_factor, in_channels
        self.num_features = widths[3]
        self.out_features = out_features
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.group1 = self._group(widths[0], widths[1], n, 1, dropout)
        self.group2 = self._group(widths[1], widths[2], n, 2, dropout)
        self.group3 = self._group(widths[2], widths[3], n, 2, dropout)
        self.norm = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], out_features)
        self._init_weights()

    @staticmethod
    def _group(in_channels: int, out_channels: int, n: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            *(
                WideBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, dropout)
                for i in range(n)
            )
        )

    def _init_weights(self) -> None:
        """He initialisation of the convolutions (fan-out), BatchNorm 1/0, linear bias 0 (as the reference)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.group3(self.group2(self.group1(self.stem(x))))
        return F.relu(self.norm(x)).mean(dim=(2, 3))  # global average pooling (8x8 on 32x32 input)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def replace_head(self, out_features: int, *, bias: bool = True) -> nn.Linear:
        """Put a new, freshly initialised linear head with ``out_features`` outputs; returns it.

        The body (and so any pretrained weights in it) is kept. The new head is on the
        device and of the dtype of the old one.
        """
        if out_features < 1:
            raise ConfigError(f"wrn out_features must be >= 1, got {out_features}")
        old = self.fc
        self.fc = nn.Linear(self.num_features, out_features, bias=bias).to(old.weight.device, old.weight.dtype)
        if bias:
            nn.init.zeros_(self.fc.bias)
        self.out_features = out_features
        return self.fc

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        if len(sample_shape) != 3 or sample_shape[0] != self.in_channels or min(sample_shape[1:]) < 4:
            raise DataError(
                f"WideResNet expects images of shape ({self.in_channels}, H, W) with H, W >= 4 "
                f"(32x32 as designed), got {tuple(sample_shape)}"
            )
