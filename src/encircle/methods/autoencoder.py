"""Autoencoder pretraining for Deep SVDD, and reconstruction error as an anomaly score.

Ruff et al. (ICML 2018, Sec. 4.1) pretrain a convolutional autoencoder whose encoder is
the Deep SVDD network and initialise Deep SVDD with the trained encoder; the center is
computed afterwards. :class:`Autoencoder` wraps the *same* network object as encoder, so
training it updates the weights Deep SVDD then starts from.
"""

from __future__ import annotations

import torch
from torch import nn

from encircle.errors import ConfigError
from encircle.methods.base import Method
from encircle.methods.registry import register_method
from encircle.models import create_model
from encircle.models.base import Backbone


def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-sample ``sum((x_hat - x)^2)`` over every feature (the authors' AE loss/score)."""
    return (reconstruction - x).pow(2).flatten(1).sum(dim=1)


@register_method("autoencoder")
class Autoencoder(Method):
    """``decoder(encoder(x))`` trained with the mean reconstruction error.

    Args:
        net: the encoder (a Backbone with a registered ``decoder``).
    """

    name = "autoencoder"

    def __init__(self, net: Backbone) -> None:
        super().__init__(net)
        if net.decoder is None:
            raise ConfigError(
                f"{type(net).__name__} has no decoder for autoencoder pretraining; "
                "use a network that has one (e.g. model.name='lenet-mnist') or method.pretrain=false"
            )
        decoder = create_model(net.decoder, in_features=net.out_features)
        self.decoder: nn.Module = decoder

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.embed(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(x, self.reconstruct(x).float()).mean()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(x, self.reconstruct(x).float())
