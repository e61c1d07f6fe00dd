"""Deep SAD: Deep SVDD plus labelled anomalies (Ruff et al., "Deep Semi-Supervised Anomaly
Detection", ICLR 2020).

Unlabelled (here: normal) samples are pulled to the center as in one-class Deep SVDD; the
few *labelled anomalies* (``outliers=...``, label ``-1``) are pushed away by the inverse
of their squared distance (Eq. 5 of the paper, with ``y~ = -1``):

``L = 1/(n+m) * ( sum_i ||f(x_i) - c||^2 + eta * sum_j (||f(x~_j) - c||^2 + eps)^-1 )``

over a batch of ``n`` unlabelled and ``m`` labelled-anomalous samples; ``eta`` (paper:
1) weighs the labelled term, ``eps = 1e-6`` keeps it finite (as the authors' code,
``lukasruff/Deep-SAD-PyTorch``). Score, center (eps rule), network, pretraining and
collapse check are Deep SVDD's. Labelled *normal* samples (``y~ = +1``, Eq. 5's other
case) are not supported: the training data are unlabelled normal samples.

Difference from the authors' code: there the center is the mean initial output over the
whole training set, labelled anomalies included; here over the normal samples only
(the engine's ``setup`` sees no outliers), which puts it where the normal data are.
"""

from __future__ import annotations

from typing import Any

import torch

from encircle.errors import ConfigError
from encircle.functional import squared_distances
from encircle.methods.registry import register_method
from encircle.methods.svdd import DeepSVDD
from encircle.models.base import Backbone

#: Added to the squared distance of a labelled anomaly before inverting it (the authors' value).
EPS = 1e-6


def deep_sad_loss(dist: torch.Tensor, anomalous: torch.Tensor, eta: float) -> torch.Tensor:
    """``mean_i (d_i if unlabelled else eta / (d_i + EPS))`` for squared distances ``d``."""
    return torch.where(anomalous, eta / (dist + EPS), dist).mean()


@register_method("deep-sad")
class DeepSAD(DeepSVDD):
    """Deep SAD: one-class Deep SVDD with labelled anomalies pushed from the center.

    Args:
        net: a bias-free network.
        num_classes: 1 (one-class).
        eta: weight of the labelled anomalies' term, ``> 0`` (paper: 1).
        kwargs: Deep SVDD's hyperparameters (the one-class objective only).
    """

    uses_outliers = True

    def __init__(self, net: Backbone, num_classes: int = 1, *, eta: float = 1.0, **kwargs: Any) -> None:
        if kwargs.get("objective", "one-class") != "one-class":
            raise ConfigError("Deep SAD extends the one-class objective; method.objective must be 'one-class'")
        if not eta > 0:
            raise ConfigError(f"method.eta must be > 0, got {eta}")
        super().__init__(net, num_classes, **kwargs)
        self.eta = eta

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.embed(x)
        dist = squared_distances(z, self.center)
        return deep_sad_loss(dist, y < 0, self.eta), {"z": z.detach(), "dist": dist.detach()}
