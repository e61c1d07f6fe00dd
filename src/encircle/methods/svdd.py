"""Deep SVDD: one hypersphere around the normal data (Ruff et al., ICML 2018).

A bias-free network ``f`` maps normal data close to a fixed center ``c``. Two
objectives:

* ``"one-class"``: loss ``mean_i ||f(x_i) - c||^2`` (Eq. 4); score ``||f(x) - c||^2``.
* ``"soft-boundary"``: loss ``R^2 + 1/nu * mean_i max(0, ||f(x_i) - c||^2 - R^2)``
  (Eq. 3); score ``||f(x) - c||^2 - R^2``. As in the authors' code, ``R`` is not a
  gradient variable: once ``warm_up_epochs`` epochs are over, it is re-set after every
  optimiser step to the ``(1 - nu)`` quantile of that mini-batch's distances
  (``radius_update="batch"``), or, as a documented option, once per epoch from the
  distances of all training data (``radius_update="epoch"``), which is less noisy.
  ``nu`` bounds the fraction of training points outside the sphere (the nu-property,
  Prop. 4 of the paper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from encircle.errors import ConfigError, DataError
from encircle.functional import (
    one_class_svdd_loss,
    soft_boundary_svdd_loss,
    squared_distances,
    svdd_center,
    svdd_radius,
)
from encircle.methods.base import Batches, Method
from encircle.methods.registry import register_method
from encircle.models.base import Backbone

OBJECTIVES = ("one-class", "soft-boundary")
RADIUS_UPDATES = ("batch", "epoch")


@register_method("deep-svdd")
class DeepSVDD(Method):
    """Deep SVDD with the one-class or the soft-boundary objective.

    * Center: ``c`` = mean of the network's outputs over the training data before
      training (network in eval mode), with coordinates closer than ``eps`` to zero
      pushed to ``+-eps`` (:func:`encircle.functional.svdd_center`). pytorch-ood's
      ``DeepSVDDLoss`` (seed 000) takes the center as given and the seed uses the plain
      mean, without the ``eps`` rule; the rule is the paper's.

    Args:
        net: a bias-free network.
        objective: ``"one-class"`` or ``"soft-boundary"``.
        nu: soft-boundary trade-off in ``(0, 1]``: the share of points allowed outside.
        eps: smallest absolute value of a center coordinate.
        warm_up_epochs: soft-boundary epochs before ``R`` is first updated (the
            authors' default is 10).
        radius_update: ``"batch"`` (authors' code) or ``"epoch"`` (full data).
    """

    name = "deep-svdd"

    def __init__(
        self,
        net: Backbone,
        objective: str = "one-class",
        nu: float = 0.1,
        eps: float = 0.1,
        warm_up_epochs: int = 10,
        radius_update: str = "batch",
    ) -> None:
        super().__init__(net)
        if objective not in OBJECTIVES:
            raise ConfigError(f"method.objective must be one of {OBJECTIVES}, got {objective!r}")
        if not 0 < nu <= 1:
            raise ConfigError(f"method.nu must be in (0, 1], got {nu}")
        if not eps >= 0:
            raise ConfigError(f"method.eps must be >= 0, got {eps}")
        if warm_up_epochs < 0:
            raise ConfigError(f"method.warm_up_epochs must be >= 0, got {warm_up_epochs}")
        if radius_update not in RADIUS_UPDATES:
            raise ConfigError(f"method.radius_update must be one of {RADIUS_UPDATES}, got {radius_update!r}")
        self.objective, self.nu, self.eps = objective, nu, eps
        self.warm_up_epochs, self.radius_update = warm_up_epochs, radius_update
        self.center: torch.Tensor
        self.radius: torch.Tensor
        self.center_ready: torch.Tensor
        self.register_buffer("center", torch.zeros(net.out_features))
        self.register_buffer("radius", torch.zeros(()))
        self.register_buffer("center_ready", torch.tensor(False))
        self._batch_dist: torch.Tensor | None = None

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
        self.radius.zero_()
        self.center_ready.fill_(True)

    def _check_ready(self) -> None:
        if not bool(self.center_ready):
            raise ConfigError("Deep SVDD's center is not set: call setup() (fit) first")

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||f(x) - c||^2`` for a preprocessed batch."""
        self._check_ready()
        return squared_distances(self.embed(x), self.center)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dist = self.distances(x)
        if self.objective == "one-class":
            return one_class_svdd_loss(dist)
        self._batch_dist = dist.detach()
        return soft_boundary_svdd_loss(dist, self.radius, self.nu)

    def after_step(self, epoch: int) -> None:
        """Authors' rule: after warm-up, ``R`` = quantile of this mini-batch's distances."""
        updating = self.objective == "soft-boundary" and self.radius_update == "batch"
        if updating and epoch >= self.warm_up_epochs and self._batch_dist is not None:
            self.radius.copy_(svdd_radius(self._batch_dist, self.nu))

    @torch.no_grad()
    def after_epoch(self, epoch: int, batches: Callable[[], Batches]) -> None:
        """With ``radius_update="epoch"``: ``R`` from the distances of all training data."""
        if self.objective == "soft-boundary" and self.radius_update == "epoch" and epoch >= self.warm_up_epochs:
            was_training = self.training
            self.eval()
            dist = torch.cat([self.distances(x) for x, _ in batches()])
            self.train(was_training)
            self.radius.copy_(svdd_radius(dist, self.nu))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        dist = self.distances(x)
        return dist - self.radius.pow(2) if self.objective == "soft-boundary" else dist
