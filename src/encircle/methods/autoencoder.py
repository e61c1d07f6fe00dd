"""Autoencoder pretraining for Deep SVDD, and reconstruction error as an anomaly score.

Ruff et al. (ICML 2018, Sec. 4.1) pretrain a convolutional autoencoder whose encoder is
the Deep SVDD network and initialise Deep SVDD with the trained encoder; the center is
computed afterwards. :class:`Autoencoder` wraps the *same* network object as encoder, so
training it updates the weights Deep SVDD then starts from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from encircle.errors import ConfigError
from encircle.methods.base import Method, Phase
from encircle.methods.registry import register_method
from encircle.models import create_model
from encircle.models.base import Backbone
from encircle.train_config import TrainConfig, require


def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-sample ``sum((x_hat - x)^2)`` over every feature (the authors' AE loss/score);
    a flat reconstruction (an MLP decoder's) is compared with the flattened input."""
    return (reconstruction.reshape(x.shape) - x).pow(2).flatten(1).sum(dim=1)


@register_method("autoencoder")
class Autoencoder(Method):
    """``decoder(encoder(x))`` trained with the mean reconstruction error.

    Args:
        net: the encoder (a Backbone with a registered ``decoder``).
        num_classes: 1 (one-class).
    """

    name = "autoencoder"

    def __init__(self, net: Backbone, num_classes: int = 1) -> None:
        super().__init__(net, num_classes)
        if net.decoder is None:
            raise ConfigError(
                f"{type(net).__name__} has no decoder for autoencoder pretraining; "
                "use a network that has one (e.g. model.name='lenet-mnist' or 'mlp') or method.pretrain=false"
            )
        decoder = create_model(net.decoder, in_features=net.out_features, **net.decoder_kwargs())
        self.decoder: nn.Module = decoder

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.embed(x))

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return reconstruction_error(x, self.reconstruct(x).float()).mean(), {}

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(x, self.reconstruct(x).float())


@dataclass(frozen=True)
class Pretraining:
    """Autoencoder pretraining as a phase before a method's own (Deep SVDD, Deep SAD).

    The phase trains an :class:`Autoencoder` around the method's network with its own
    epochs, Adam learning rate, weight decay and milestones (the rest of ``train.*``
    as the run's); its decoder is dropped afterwards, and the method's own phase starts
    from the trained encoder.
    """

    enabled: bool = False
    epochs: int = 150
    lr: float = 1e-4
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (50,)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "method.pretrain_epochs", ">= 1", self.epochs)
        require(self.lr > 0, "method.pretrain_lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "method.pretrain_weight_decay", ">= 0", self.weight_decay)

    def phases(self, net: Backbone, train: TrainConfig) -> list[Phase]:
        """``[]``, or the one ``"pretrain"`` phase (its autoencoder's decoder is drawn now,
        from the global torch RNG)."""
        if not self.enabled:
            return []
        settings = dataclasses.replace(
            train, epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, lr_milestones=self.lr_milestones
        )
        return [Phase("pretrain", settings, module=Autoencoder(net), evaluate=False)]
