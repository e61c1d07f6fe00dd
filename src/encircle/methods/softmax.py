"""A softmax classifier trained with cross-entropy, scored by a post-hoc rule.

The baseline every open-set and OOD paper compares with. The network's ``K`` outputs
are logits ``l``; the predicted class is ``argmax_k l_k``; the outlier score (higher =
more anomalous) is one of

* ``"msp"``: ``-max_k softmax(l)_k`` - maximum softmax probability (Hendrycks &
  Gimpel, ICLR 2017);
* ``"max-logit"``: ``-max_k l_k`` (Hendrycks et al., ICML 2022);
* ``"energy"``: ``-logsumexp_k l_k``, the free energy at temperature 1 (Liu et al.,
  NeurIPS 2020);
* ``"mahalanobis"``: ``min_k (h - mu_k)^T S^-1 (h - mu_k)`` on the penultimate features
  ``h`` (``forward_features``), with class means ``mu_k`` and one covariance ``S``
  shared by all classes, estimated on the training data after training (Lee et al.,
  NeurIPS 2018, without input preprocessing or feature ensembles). The statistics are
  computed in float64; a singular ``S`` is an error unless ``shrinkage`` ``lambda > 0``
  replaces it by ``(1 - lambda) S + lambda * (tr(S) / D) I`` (shrinkage towards a scaled
  identity, as Ledoit & Wolf).

The rule only changes the score, so one trained network serves every rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F

from encircle.errors import ConfigError, TrainingError
from encircle.methods._labels import check_class_labels
from encircle.methods.base import Method
from encircle.methods.registry import register_method
from encircle.models.base import Backbone

SCORE_RULES = ("msp", "max-logit", "energy", "mahalanobis")


def logit_score(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """The post-hoc outlier score of ``(N, K)`` logits under ``rule`` (not Mahalanobis)."""
    if rule == "msp":
        return -torch.softmax(logits, dim=1).max(dim=1).values
    if rule == "max-logit":
        return -logits.max(dim=1).values
    if rule == "energy":
        return -torch.logsumexp(logits, dim=1)
    raise ConfigError(f"no logit score rule {rule!r}; expected one of {SCORE_RULES[:3]}")


def shared_covariance_precision(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, shrinkage: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``(K, D)`` and the precision ``S^-1`` of the covariance shared by the
    classes, ``S = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``, in float64.

    Raises:
        TrainingError: a class without samples, or ``S`` (after shrinkage) not positive
            definite - with the rank and a hint to set ``method.shrinkage``.
    """
    h = features.double()
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise TrainingError(f"Mahalanobis needs training samples of every class; classes {missing} have none")
    means = torch.zeros(num_classes, h.shape[1], dtype=torch.float64, device=h.device)
    means.index_add_(0, labels, h)
    means /= counts.unsqueeze(1).double()
    centered = h - means[labels]
    cov = centered.T @ centered / h.shape[0]
    if shrinkage > 0:
        dim = cov.shape[0]
        cov = (1 - shrinkage) * cov + shrinkage * (torch.trace(cov) / dim) * torch.eye(
            dim, dtype=cov.dtype, device=cov.device
        )
    factor, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        rank = int(torch.linalg.matrix_rank(cov))
        raise TrainingError(
            f"the shared feature covariance is singular (rank {rank} of {cov.shape[0]} dimensions); "
            "set method.shrinkage to a value in (0, 1], e.g. 0.01"
        )
    return means, torch.cholesky_inverse(factor)


@register_method("softmax")
class SoftmaxClassifier(Method):
    """Cross-entropy classifier with a post-hoc outlier score.

    Args:
        net: the network; its ``K = out_features >= 2`` outputs are the logits.
        num_classes: ignored: ``K`` is the network's output size.
        score_rule: ``"msp"``, ``"max-logit"``, ``"energy"`` or ``"mahalanobis"``.
        shrinkage: Mahalanobis covariance shrinkage in ``[0, 1]``.
    """

    name = "softmax"
    uses_labels = True
    classifies = True
    outputs_are_classes = True

    def __init__(
        self,
        net: Backbone,
        num_classes: int = 0,
        *,
        score_rule: Literal["msp", "max-logit", "energy", "mahalanobis"] = "msp",
        shrinkage: float = 0.0,
    ) -> None:
        super().__init__(net, net.out_features)
        self.set_score_rule(score_rule)
        if not 0 <= shrinkage <= 1:
            raise ConfigError(f"method.shrinkage must be in [0, 1], got {shrinkage}")
        if net.out_features < 2:
            raise ConfigError(
                f"a softmax classifier needs at least 2 classes (network outputs), got {net.out_features}"
            )
        self.shrinkage = shrinkage
        self.class_means: torch.Tensor
        self.precision: torch.Tensor
        self.register_buffer("class_means", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("precision", torch.zeros(0, dtype=torch.float64))

    def set_score_rule(self, score_rule: str) -> None:
        """Score with another post-hoc rule (``"mahalanobis"`` then needs ``finalize``)."""
        if score_rule not in SCORE_RULES:
            raise ConfigError(f"method.score_rule must be one of {SCORE_RULES}, got {score_rule!r}")
        self.score_rule = score_rule

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Check the training labels."""
        for _, y in batches:
            check_class_labels(y, self.num_classes, "the softmax classifier")

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.embed(x), y)

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.forward_features(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = self.net.forward_head(features.float())
            if self.score_rule != "mahalanobis":
                return logits.argmax(dim=1), logit_score(logits, self.score_rule)
            return logits.argmax(dim=1), self._mahalanobis(features.float())

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)[1]

    def _mahalanobis(self, features: torch.Tensor) -> torch.Tensor:
        if self.precision.numel() == 0:
            raise ConfigError("the Mahalanobis score needs the training statistics: call finalize() (fit) first")
        diff = features.double().unsqueeze(1) - self.class_means.unsqueeze(0)  # (N, K, D)
        return torch.einsum("nkd,de,nke->nk", diff, self.precision, diff).min(dim=1).values.float()

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: object) -> None:
        # the Mahalanobis statistics are empty until finalize(): take the saved shapes
        for name in ("class_means", "precision"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def finalize(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """For ``"mahalanobis"``: class means and shared precision of the training features."""
        if self.score_rule != "mahalanobis":
            return
        parts, labels = [], []
        for x, y in batches:
            known = y >= 0
            parts.append(self.net.forward_features(x[known]).double())
            labels.append(y[known])
        means, precision = shared_covariance_precision(
            torch.cat(parts), torch.cat(labels), self.num_classes, self.shrinkage
        )
        self.class_means, self.precision = means, precision
