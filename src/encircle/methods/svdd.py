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

Collapse. The objective is minimal when every output equals ``c`` ("hypersphere
collapse", Sec. 3.3 of the paper); bias-free networks and the ``eps`` rule make it hard
to reach, not impossible (dead units, zero weights with ``eps=0``). The spread of the
outputs over each epoch's training batches is tracked at no extra forward pass; when
every output coordinate varies by at most ``COLLAPSE_RTOL`` of its magnitude (its
float32 rounding level, so a working network is never flagged), training stops with a
:class:`~encircle.errors.TrainingError`. Decision: an error, not a warning, because the
state cannot be recovered: no term of the objective rewards spread, so later epochs
keep the outputs together, and a detector whose scores are all equal would accept or
reject everything; stopping saves the remaining epochs and never writes such a
detector (the checkpoint of the previous epoch stays).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch

from encircle.distributed import all_gather_cat, all_reduce_sum
from encircle.errors import ConfigError, DataError, TrainingError
from encircle.functional import (
    one_class_svdd_loss,
    soft_boundary_svdd_loss,
    squared_distances,
    svdd_center,
    svdd_radius,
)
from encircle.methods.autoencoder import Pretraining
from encircle.methods.base import Batches, Method, Phase
from encircle.methods.registry import register_method
from encircle.models.base import Backbone
from encircle.train_config import TrainConfig

OBJECTIVES = ("one-class", "soft-boundary")
#: Collapse: every output coordinate's spread over an epoch is at most this share of its magnitude.
COLLAPSE_RTOL = 1e-6
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
        num_classes: 1 (one-class).
        objective: ``"one-class"`` (Eq. 4) or ``"soft-boundary"`` (Eq. 3).
        nu: soft-boundary trade-off in ``(0, 1]``: the share of points allowed outside.
        eps: smallest absolute value of a center coordinate.
        warm_up_epochs: soft-boundary epochs before ``R`` is first updated (authors: 10).
        radius_update: ``"batch"`` (authors' code) or ``"epoch"`` (full data).
        pretrain: first train an autoencoder whose encoder is the network (Sec. 4.1).
        pretrain_epochs: autoencoder epochs (authors' MNIST setting: 150).
        pretrain_lr: autoencoder Adam learning rate (authors: 1e-4).
        pretrain_weight_decay: autoencoder weight decay (authors: 5e-4).
        pretrain_lr_milestones: autoencoder epochs at which its lr is multiplied by ``train.lr_gamma``.
    """

    name = "deep-svdd"

    def __init__(
        self,
        net: Backbone,
        num_classes: int = 1,
        *,
        objective: Literal["one-class", "soft-boundary"] = "one-class",
        nu: float = 0.1,
        eps: float = 0.1,
        warm_up_epochs: int = 10,
        radius_update: Literal["batch", "epoch"] = "batch",
        pretrain: bool = False,
        pretrain_epochs: int = 150,
        pretrain_lr: float = 1e-4,
        pretrain_weight_decay: float = 5e-4,
        pretrain_lr_milestones: tuple[int, ...] = (50,),
    ) -> None:
        super().__init__(net, num_classes)
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
        self.pretraining = Pretraining(
            pretrain, pretrain_epochs, pretrain_lr, pretrain_weight_decay, pretrain_lr_milestones
        )
        self.center: torch.Tensor
        self.radius: torch.Tensor
        self.center_ready: torch.Tensor
        self.register_buffer("center", torch.zeros(net.out_features))
        self.register_buffer("radius", torch.zeros(()))
        self.register_buffer("center_ready", torch.tensor(False))
        self._batch_dist: torch.Tensor | None = None
        self._spread: tuple[int, torch.Tensor, torch.Tensor] | None = None  # epoch's (n, mean, M2) of outputs

    def phases(self, train: TrainConfig, num_samples: int) -> list[Phase]:
        """Autoencoder pretraining (with ``pretrain``), then Deep SVDD."""
        return [*self.pretraining.phases(self.net, train), Phase("train", train)]

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set ``center`` to the mean initial output (eval mode), with the eps rule."""
        was_training = self.training
        self.eval()
        total = torch.zeros(self.center.shape, dtype=torch.float64, device=self.center.device)
        count = 0
        for x, _ in batches:
            z = self.embed(x).double()
            total += z.sum(dim=0)
            count += z.shape[0]
        self.train(was_training)
        # under DDP each rank saw its shard of the data: sum over the ranks (no-op in one process)
        total = all_reduce_sum(total)
        count = int(all_reduce_sum(torch.tensor(count, device=total.device)))
        if count == 0:
            raise DataError("Deep SVDD needs at least one training sample to set its center")
        self.center.copy_(svdd_center(total / count, self.eps).to(self.center.dtype))
        self.radius.zero_()
        self.center_ready.fill_(True)

    def _check_ready(self) -> None:
        if torch.compiler.is_compiling() or torch.jit.is_tracing():  # export/compile/ONNX trace a fitted method
            return
        if not bool(self.center_ready):
            raise ConfigError("Deep SVDD's center is not set: call setup() (fit) first")

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||f(x) - c||^2`` for a preprocessed batch."""
        self._check_ready()
        return squared_distances(self.embed(x), self.center)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_ready()
        return super().loss(x, y)

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 4 or Eq. 3, pure; ``aux``: the outputs ``z`` and squared distances ``dist``."""
        z = self.embed(x)
        dist = squared_distances(z, self.center)
        aux = {"z": z.detach(), "dist": dist.detach()}
        if self.objective == "one-class":
            return one_class_svdd_loss(dist), aux
        return soft_boundary_svdd_loss(dist, self.radius, self.nu), aux

    def observe(self, aux: dict[str, torch.Tensor]) -> None:
        """Track the outputs' spread (collapse check); keep the batch's distances for the radius."""
        self._track_spread(aux["z"])
        if self.objective == "soft-boundary":
            self._batch_dist = aux["dist"]

    def after_step(self, epoch: int) -> None:
        """Authors' rule: after warm-up, ``R`` = quantile of this mini-batch's distances.

        Under DDP the ranks' batches are gathered first, so ``R`` comes from the global
        batch (the one a single process sees) and stays equal on every rank.
        """
        updating = self.objective == "soft-boundary" and self.radius_update == "batch"
        if updating and epoch >= self.warm_up_epochs and self._batch_dist is not None:
            self.radius.copy_(svdd_radius(all_gather_cat(self._batch_dist), self.nu))

    def _track_spread(self, z: torch.Tensor) -> None:
        """Merge a batch's outputs into the epoch's count, mean and sum of squared deviations
        (Chan et al.'s pairwise update, float64), per coordinate."""
        if z.shape[0] == 0:
            return
        z = z.double()
        n_b, mean_b = z.shape[0], z.mean(dim=0)
        m2_b = (z - mean_b).pow(2).sum(dim=0)
        if self._spread is None:
            self._spread = (n_b, mean_b, m2_b)
            return
        n_a, mean_a, m2_a = self._spread
        n = n_a + n_b
        delta = mean_b - mean_a
        self._spread = (n, mean_a + delta * (n_b / n), m2_a + m2_b + delta.pow(2) * (n_a * n_b / n))

    def _check_collapse(self, epoch: int) -> None:
        """Raise :class:`TrainingError` when this epoch's outputs were all (numerically) one point."""
        stats, self._spread = self._spread, None
        if stats is None:
            return
        n, local_mean, local_m2 = stats
        # under DDP every rank merges all ranks' statistics, so that all of them decide alike
        count = all_reduce_sum(torch.tensor(float(n), dtype=torch.float64, device=local_mean.device))
        mean = all_reduce_sum(local_mean * n) / count
        spread = (all_reduce_sum(local_m2 + n * (local_mean - mean).pow(2)) / count).sqrt()
        scale = torch.maximum(mean.abs(), self.center.double().abs())
        if bool((spread <= COLLAPSE_RTOL * scale).all()):
            gap = float((mean - self.center.double()).pow(2).sum())
            raise TrainingError(
                f"Deep SVDD collapsed in epoch {epoch + 1}: the network maps all {int(count)} training samples to "
                f"one point (output spread {float(spread.max()):.3g}, squared distance to the center {gap:.3g}), so "
                "its scores cannot tell them apart; check that the training samples differ, and try method.eps > 0, "
                "a lower train.lr or method.pretrain=true"
            )

    @torch.no_grad()
    def after_epoch(self, epoch: int, batches: Callable[[], Batches]) -> None:
        """Stop on collapse; with ``radius_update="epoch"``: ``R`` from the distances of all training data."""
        self._check_collapse(epoch)
        if self.objective == "soft-boundary" and self.radius_update == "epoch" and epoch >= self.warm_up_epochs:
            was_training = self.training
            self.eval()
            # under DDP each rank holds the distances of its shard: gather them all
            dist = all_gather_cat(torch.cat([self.distances(x) for x, _ in batches()]))
            self.train(was_training)
            self.radius.copy_(svdd_radius(dist, self.nu))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        dist = self.distances(x)
        return dist - self.radius.pow(2) if self.objective == "soft-boundary" else dist
