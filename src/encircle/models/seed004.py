"""The convolutional classifier of the open-set MNIST example (seed 004)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encircle.models.base import Backbone
from encircle.models.registry import register_model


@register_model("seed004")
class Seed004Net(Backbone):
    """Three 5x5 convolutions (32, 32, 64 filters; the last two followed by 2x2 average
    pooling), ReLU, dropout, then linear layers 576 -> 256 -> ``out_features``.

    ``forward_features`` ends at the 256-d penultimate layer; the head is the last linear
    layer, whose ``out_features`` outputs are the class logits (10 for MNIST). Dropout
    with rate ``dropout`` follows each convolution and the penultimate layer (0.5 in the
    example).
    """

    input_shape = (1, 28, 28)

    def __init__(self, out_features: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.out_features = out_features
        self.dropout = dropout
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 32, 5)
        self.conv3 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(3 * 3 * 64, 256)
        self.fc2 = nn.Linear(256, out_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.conv1(x).relu(), self.dropout, self.training)
        x = F.dropout(F.avg_pool2d(self.conv2(x), 2).relu(), self.dropout, self.training)
        x = F.dropout(F.avg_pool2d(self.conv3(x), 2).relu(), self.dropout, self.training)
        return F.dropout(self.fc1(x.flatten(1)).relu(), self.dropout, self.training)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(features)
