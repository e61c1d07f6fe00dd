"""A bias-free multilayer perceptron for feature vectors (tabular data)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from encircle.errors import DataError
from encircle.models.base import Backbone
from encircle.models.registry import register_model


@register_model("mlp")
class MLP(Backbone):
    """Bias-free MLP: ``in_features -> hidden... -> out_features`` with leaky ReLU.

    Bias-free for the same reason as the Deep SVDD LeNets (Ruff et al., ICML 2018,
    Prop. 2). Samples of any shape are flattened, so ``in_features`` must equal their
    number of elements.
    """

    decoder = "mlp-decoder"

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64, 32), out_features: int = 16) -> None:
        super().__init__()
        self.out_features = out_features
        self.hidden = tuple(hidden)
        widths = (in_features, *hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out, bias=False), nn.LeakyReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], out_features, bias=False)
        self.in_features = in_features

    def decoder_kwargs(self) -> dict[str, object]:
        """The mirror image: ``out_features -> reversed(hidden) -> in_features``."""
        return {"hidden": tuple(reversed(self.hidden)), "out_features": self.in_features}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        n = 1
        for size in sample_shape:
            n *= size
        if n != self.in_features:
            raise DataError(
                f"MLP expects samples with {self.in_features} values, got shape {tuple(sample_shape)} ({n} values)"
            )


@register_model("mlp-decoder")
class MLPDecoder(nn.Module):
    """The MLP's decoder for autoencoder pretraining / reconstruction error: bias-free
    ``in_features -> hidden... -> out_features`` with leaky ReLU between the layers and
    a linear output (tabular features are unbounded, so no sigmoid)."""

    def __init__(self, in_features: int = 16, hidden: tuple[int, ...] = (32, 64), out_features: int = 1) -> None:
        super().__init__()
        widths = (in_features, *hidden, out_features)
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out, bias=False), nn.LeakyReLU()]
        self.body = nn.Sequential(*layers[:-1])

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(code)
        return out
