"""Class Anchor Clustering (Miller et al., "Class Anchor Clustering: a Loss for
Distance-based Open Set Recognition", WACV 2021).

The network's ``K`` outputs (its logit layer) are compared with fixed anchors
``alpha * e_k``, one per known class, by Euclidean distance ``d_k = ||f(x) - alpha e_k||``.
Training pulls each sample to its class anchor and away from the others
(:func:`encircle.functional.cac_loss`):

    ``L = log(1 + sum_{j != y} exp(d_y - d_j)) + lambda * d_y``

The open-set score is ``min_k d_k (1 - softmin(d)_k)`` (:func:`~encircle.functional.cac_score`)
and the predicted class is ``argmin_k d_k``. After training, the paper replaces each
anchor used at test time by the mean logit of the *correctly classified* training
samples of its class (``reestimate_anchors``, on by default).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from encircle.errors import ConfigError
from encircle.functional import cac_loss, cac_score, euclidean_distances
from encircle.methods._labels import check_class_labels
from encircle.methods.base import Method
from encircle.methods.registry import register_method
from encircle.models.base import Backbone

log = logging.getLogger(__name__)


@register_method("cac")
class ClassAnchorClustering(Method):
    """CAC on a network whose ``out_features`` is the number of known classes.

    Args:
        net: the network; its ``K = out_features >= 2`` outputs are the logit space.
        num_classes: ignored: ``K`` is the network's output size.
        alpha: anchor magnitude (anchors are ``alpha * e_k``), ``> 0``; the paper uses 10.
        lambda_anchor: weight of the anchor term, ``>= 0``; the paper uses 0.1.
        reestimate_anchors: after training, score against the means of the correctly
            classified training logits instead of the fixed anchors.
    """

    name = "cac"
    uses_labels = True
    classifies = True
    outputs_are_classes = True

    def __init__(
        self,
        net: Backbone,
        num_classes: int = 0,
        *,
        alpha: float = 10.0,
        lambda_anchor: float = 0.1,
        reestimate_anchors: bool = True,
    ) -> None:
        super().__init__(net, net.out_features)
        if not alpha > 0:
            raise ConfigError(f"method.alpha must be > 0, got {alpha}")
        if not lambda_anchor >= 0:
            raise ConfigError(f"method.lambda_anchor must be >= 0, got {lambda_anchor}")
        if net.out_features < 2:
            raise ConfigError(f"CAC needs at least 2 known classes (network outputs), got {net.out_features}")
        self.alpha, self.lambda_anchor, self.reestimate_anchors = alpha, lambda_anchor, reestimate_anchors
        self.anchors: torch.Tensor
        self.test_anchors: torch.Tensor
        self.register_buffer("anchors", alpha * torch.eye(self.num_classes))
        self.register_buffer("test_anchors", alpha * torch.eye(self.num_classes))

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Check the training labels; the anchors are fixed, nothing else to set up."""
        for _, y in batches:
            check_class_labels(y, self.num_classes, "CAC")

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return cac_loss(euclidean_distances(self.embed(x), self.anchors), y, self.lambda_anchor), {}

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Distances to the test-time anchors (the re-estimated means after ``finalize``)."""
        return euclidean_distances(self.embed(x), self.test_anchors)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return cac_score(self.distances(x))

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.distances(x)
        return d.argmin(dim=1), cac_score(d)

    @torch.no_grad()
    def finalize(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Re-estimate the test anchors as the mean logits of correctly classified
        training samples (distances to the fixed training anchors decide "correct").

        A class without any correctly classified sample keeps its fixed anchor (logged).
        """
        if not self.reestimate_anchors:
            return
        sums = torch.zeros_like(self.anchors, dtype=torch.float64)
        counts = torch.zeros(self.num_classes, dtype=torch.float64, device=self.anchors.device)
        for x, y in batches:
            known = y >= 0
            z = self.embed(x[known])
            correct = euclidean_distances(z, self.anchors).argmin(dim=1) == y[known]
            sums.index_add_(0, y[known][correct], z[correct].double())
            counts += torch.bincount(y[known][correct], minlength=self.num_classes).double()
        empty = counts == 0
        if bool(empty.any()):
            log.warning(
                "CAC: classes %s have no correctly classified training sample; keeping their fixed anchors",
                torch.nonzero(empty).flatten().tolist(),
            )
        means = sums / counts.clamp(min=1).unsqueeze(1)
        self.test_anchors.copy_(torch.where(empty.unsqueeze(1), self.anchors.double(), means).to(self.anchors.dtype))
