"""Deep SVDD: one hypersphere around the normal data (Ruff et al., ICML 2018).

A bias-free network ``f`` maps normal data close to a fixed center ``c``; the squared
distance ``||f(x) - c||^2`` is the anomaly score.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from encircle.errors import ConfigError, DataError
from encircle.functional import one_class_svdd_loss, squared_distances, svdd_center
from encircle.methods.base import Method
from encircle.methods.registry import register_method
from encircle.models.base import Backbone


@register_method("deep-svdd")
class DeepSVDD(Method):
    """One-class Deep SVDD.

    * Center: ``c`` = mean of the network's outputs over the training data before
      training (network in eval mode), with coordinates closer than ``eps`` to zero
      pushed to ``+-eps`` (:func:`encircle.functional.svdd_center`).
    * Loss: ``mean_i ||f(x_i) - c||^2`` (Eq. 4 of the paper; weight decay is the
      optimiser's).
    * Score: ``||f(x) - c||^2``.

    pytorch-ood's ``DeepSVDDLoss`` (seed 000) takes the center as given; the seed computes
    it as the plain mean, without the ``eps`` rule. The rule is the paper's.

    Args:
        net: a bias-free network.
        eps: smallest absolute value of a center coordinate.
    """

    name = "deep-svdd"

    def __init__(self, net: Backbone, eps: float = 0.1) -> None:
        super().__init__(net)
        if not eps >= 0:
            raise ConfigError(f"method.eps must be >= 0, got {eps}")
        self.eps = eps
        self.center: torch.Tensor
        self.center_ready: torch.Tensor
        self.register_buffer("center", torch.zeros(net.out_features))
        self.register_buffer("center_ready", torch.tensor(False))

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set ``center`` to the mean initial output (eval mode), with the eps rule."""
        was_training = self.training
        self.eval()
        total: torch.Tensor | None = None
        count = 0
        for x, _ in batches:
            z = self.embed(x).double()
            total = z.sum(dim=0) if total is None else total + z.sum(dim=0)
            count += z.shape[0]
        self.train(was_training)
        if total is None:
            raise DataError("Deep SVDD needs at least one training sample to set its center")
        self.center.copy_(svdd_center(total / count, self.eps).to(self.center.dtype))
        self.center_ready.fill_(True)

    def _check_ready(self) -> None:
        if not bool(self.center_ready):
            raise ConfigError("Deep SVDD's center is not set: call setup() (fit) first")

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_ready()
        return one_class_svdd_loss(self.embed(x), self.center)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        self._check_ready()
        return squared_distances(self.embed(x), self.center)
