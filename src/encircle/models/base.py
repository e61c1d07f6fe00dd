"""The interface every encircle network keeps."""

from __future__ import annotations

import torch
from torch import nn

from encircle.errors import DataError


class Backbone(nn.Module):
    """A network split into ``forward_features`` and ``forward_head`` (as in timm).

    Methods may run the head in float32 while the features run under mixed precision,
    and may replace the head. Subclasses set ``input_shape`` (one sample's shape, or
    ``None`` when any shape is accepted), ``out_features`` and, where one exists,
    ``decoder``.
    """

    input_shape: tuple[int, ...] | None = None
    out_features: int
    #: registered name of the decoder that pairs with this network for autoencoder
    #: pretraining (it takes ``in_features=out_features``), or ``None``.
    decoder: str | None = None

    def decoder_kwargs(self) -> dict[str, object]:
        """Arguments of :attr:`decoder` besides ``in_features`` (e.g. the MLP's output width)."""
        return {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Raise :class:`DataError` when samples of ``sample_shape`` do not fit this network."""
        if self.input_shape is not None and tuple(sample_shape) != self.input_shape:
            raise DataError(
                f"{type(self).__name__} expects samples of shape {self.input_shape}, got {tuple(sample_shape)}"
            )
