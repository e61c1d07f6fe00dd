"""What the engine and the detector need from a method.

A method owns a network and the state its objective learns besides the weights (a
center, anchors, a radius), and it knows three things: how to set that state up from
the training data before training, its training loss on a batch, and its outlier score
(higher = more anomalous). Methods that classify known classes (``classifies``) also
predict a class per sample, and may gather statistics from the training data once
training is over (``finalize``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from encircle.models.base import Backbone

#: Preprocessed ``(x, y)`` training batches on the device.
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class Method(nn.Module):
    """Base class of every method. Subclasses set ``name`` and implement the hooks."""

    name: str = ""
    #: whether ``loss`` needs class labels (False for one-class methods).
    needs_labels: bool = False
    #: whether the method predicts known classes ``0..K-1`` (open-set recognition).
    classifies: bool = False
    #: whether the network's output size must be the number of classes (logit-space
    #: methods such as CAC and a softmax classifier) rather than ``model.out_features``.
    outputs_are_classes: bool = False

    def __init__(self, net: Backbone) -> None:
        super().__init__()
        self.net = net

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output, with the head run in float32.

        Under mixed precision the features may be bf16/fp16; distances to centers are
        then computed from a float32 head, so they keep their precision.
        """
        features = self.net.forward_features(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.net.forward_head(features.float())

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Initialise learned state from preprocessed training batches (default: none)."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss on a preprocessed batch ``x`` with labels ``y``."""
        raise NotImplementedError

    def after_step(self, epoch: int) -> None:
        """Called after every optimiser step (``epoch`` counts from 0); default: nothing."""

    def after_epoch(self, epoch: int, batches: Callable[[], Batches]) -> None:
        """Called after every epoch with a factory of training batches; default: nothing."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Outlier score of a preprocessed batch, higher = more anomalous, float32."""
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted class, score)`` of a preprocessed batch from one forward pass.

        One-class methods predict class 0 (normal) for every sample.
        """
        score = self.score(x)
        return torch.zeros(score.shape[0], dtype=torch.int64, device=score.device), score

    @torch.no_grad()
    def finalize(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """After training, gather statistics from preprocessed training batches (default: none)."""
