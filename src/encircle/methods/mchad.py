"""MCHAD: multi-class hypersphere anomaly detection (Kirchheim, Filax & Ortmeier, ICPR 2022).

The network maps inputs to an embedding of size ``D`` (``model.out_features``) with one
*learnable* center ``mu_k`` per known class. With ``d_k = ||f(x) - mu_k||``
(:func:`encircle.functional.mchad_loss`):

* known samples are classified by a softmax over ``-d^2`` (cross-entropy) and pulled to
  their center (``d_y^2``);
* outliers (label ``-1``, outlier exposure) are pushed at least ``margin`` away from
  every center.

Score = distance to the nearest center; predicted class = the nearest center.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from encircle.errors import ConfigError
from encircle.functional import euclidean_distances, mchad_loss
from encircle.methods._labels import check_class_labels
from encircle.methods.base import Method
from encircle.methods.registry import register_method
from encircle.models.base import Backbone


@register_method("mchad")
class MCHAD(Method):
    """MCHAD with ``num_classes`` learnable centers in the network's output space.

    Args:
        net: the network; its ``out_features`` is the embedding size ``D``.
        num_classes: the number ``K >= 2`` of known classes.
        weight_ce: weight of the classification term (authors' config: 1.5).
        weight_center: weight of the pull to the own center (authors': 1.0).
        weight_oe: weight of the summed outlier term (authors': 1e-5).
        margin: distance outliers are pushed beyond, ``>= 0`` (paper: 4).

    The defaults are the authors' released CIFAR-10 configuration with outlier exposure
    (``kkirchheim/mchad``, ``configs/experiment/cifar10-gmchad.yaml``; ``docs/mchad.md``).
    The centers start as standard normal draws (as pytorch-ood's ``ClassCenters``) and
    are trained with the network, by the same optimiser.
    """

    name = "mchad"
    uses_labels = True
    uses_outliers = True
    classifies = True

    def __init__(
        self,
        net: Backbone,
        num_classes: int = 2,
        *,
        weight_ce: float = 1.5,
        weight_center: float = 1.0,
        weight_oe: float = 1e-5,
        margin: float = 4.0,
    ) -> None:
        super().__init__(net, num_classes)
        if num_classes < 2:
            raise ConfigError(f"MCHAD needs at least 2 known classes, got {num_classes}")
        for key, value in (
            ("weight_ce", weight_ce),
            ("weight_center", weight_center),
            ("weight_oe", weight_oe),
            ("margin", margin),
        ):
            if not value >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {value}")
        self.weights = {"weight_ce": weight_ce, "weight_center": weight_center, "weight_oe": weight_oe}
        self.margin = margin
        self.centers = nn.Parameter(torch.randn(num_classes, net.out_features))

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Check the training labels (known classes; outliers come with label -1)."""
        for _, y in batches:
            check_class_labels(y, self.num_classes, "MCHAD", allow_outliers=True)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` Euclidean distances of the embeddings to the centers, float32."""
        return euclidean_distances(self.embed(x), self.centers.float())

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mchad_loss(self.distances(x), y, margin=self.margin, **self.weights)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.distances(x).min(dim=1).values

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nearest = self.distances(x).min(dim=1)
        return nearest.indices, nearest.values
