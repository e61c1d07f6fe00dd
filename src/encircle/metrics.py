"""Detection and classification metrics on torch tensors (CPU or GPU), exact under ties.

Conventions: a *score* is higher for more anomalous samples; *labels* are either an
integer tensor where ``-1`` marks OOD / anomaly / unknown and ``>= 0`` a known class,
or a boolean ``is_ood`` tensor. Each function's docstring names its positive class.

Why hand-written rather than scikit-learn: the metrics run on the tensors where the
scores already are (no copy of GPU scores to NumPy), and they are several times faster
on large inputs (``benchmarks/metrics.py``). Instead of one argsort over all scores,
the in- and out-of-distribution scores are sorted separately (on CPU with NumPy's sort,
measured here about 3x faster than ``torch.sort``) and the cross-counts that every
metric needs come from ``searchsorted`` on the sorted arrays. All counts are exact
int64; ties count half for AUROC and are grouped per distinct threshold for the
precision-recall and FPR metrics, exactly as scikit-learn's ``roc_auc_score``,
``average_precision_score`` and ``roc_curve`` do (tested to 1e-9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from encircle.errors import DataError

Tensorish = torch.Tensor | np.ndarray


def _tensor(x: Tensorish, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch tensor or NumPy array, got {type(x).__name__}")
    return x


def as_is_ood(labels: Tensorish, n: int | None = None) -> torch.Tensor:
    """Boolean ``is_ood`` from ``-1``-marked integer labels or from a boolean tensor."""
    labels = _tensor(labels, "labels")
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if n is not None and labels.numel() != n:
        raise DataError(f"scores and labels differ in length: {n} scores, {labels.numel()} labels")
    if labels.dtype == torch.bool:
        return labels
    if labels.is_floating_point() or labels.is_complex():
        raise DataError(f"labels must be integers (-1 = OOD) or booleans (True = OOD), got {labels.dtype}")
    if labels.numel() and int(labels.min()) < -1:
        raise DataError(f"labels must be -1 (OOD) or >= 0 (in-distribution), got {int(labels.min())}")
    return labels < 0


@dataclass(frozen=True)
class _Split:
    """Sorted in-distribution and OOD scores and the cross-counts the metrics share.

    ``below[i]`` = number of ID scores strictly below the i-th (ascending) OOD score.
    """

    ood: torch.Tensor
    ind: torch.Tensor
    below: torch.Tensor

    @property
    def n_ood(self) -> int:
        return self.ood.numel()

    @property
    def n_in(self) -> int:
        return self.ind.numel()


def _sort(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy()))
    return torch.sort(x).values


def _split(scores: Tensorish, labels: Tensorish) -> _Split:
    scores = _tensor(scores, "scores")
    if scores.ndim != 1:
        raise DataError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    if scores.numel() == 0:
        raise DataError("scores are empty")
    if not scores.is_floating_point():
        scores = scores.double()
    if not bool(torch.isfinite(scores).all()):
        raise DataError(f"scores contain {int((~torch.isfinite(scores)).sum())} NaN or infinite values")
    is_ood = as_is_ood(labels, scores.numel()).to(scores.device)
    n_ood = int(is_ood.sum())
    if n_ood == 0 or n_ood == scores.numel():
        missing = "OOD (label -1 / True)" if n_ood == 0 else "in-distribution (label >= 0 / False)"
        raise DataError(f"need both in-distribution and OOD samples; no {missing} sample in labels")
    scores = scores.detach()
    ood, ind = _sort(scores[is_ood].contiguous()), _sort(scores[~is_ood].contiguous())
    return _Split(ood, ind, torch.searchsorted(ind, ood, right=False))


def _auroc(s: _Split) -> float:
    below = s.below
    # Ties: only where the next ID score equals the OOD score is a second search needed.
    following = s.ind[below.clamp(max=s.n_in - 1)]
    tied = (following == s.ood) & (below < s.n_in)
    equal = 0
    if bool(tied.any()):
        ties = s.ood[tied]
        equal = int((torch.searchsorted(s.ind, ties, right=True) - torch.searchsorted(s.ind, ties)).sum())
    return (2 * int(below.sum()) + equal) / (2.0 * s.n_ood * s.n_in)


def _runs(sorted_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values of an ascending tensor, their counts and first positions."""
    values, counts = torch.unique_consecutive(sorted_values, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    return values, counts, first


def _aupr_out(s: _Split) -> float:
    _, counts, first = _runs(s.ood)
    tp = s.n_ood - first  # OOD scores >= v
    fp = s.n_in - s.below[first]  # ID scores >= v
    return float((counts.double() * tp.double() / (tp + fp).double()).sum() / s.n_ood)


def _aupr_in(s: _Split) -> float:
    values, counts, first = _runs(s.ind)
    tp = first + counts  # ID scores <= v
    fp = torch.searchsorted(s.ood, values, right=True)  # OOD scores <= v
    return float((counts.double() * tp.double() / (tp + fp).double()).sum() / s.n_in)


def _smallest_count(tpr: float, n: int) -> int:
    """The smallest k with ``k / n >= tpr`` in floating point, as ``roc_curve`` compares."""
    if not 0 < tpr <= 1:
        raise DataError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, int(np.ceil(tpr * n)))
    while k > 1 and (k - 1) / n >= tpr:
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    return k


def _fpr_out(s: _Split, tpr: float) -> float:
    k = _smallest_count(tpr, s.n_ood)
    threshold = s.ood[s.n_ood - k]  # the k-th largest OOD score: TPR(out) first reaches tpr
    flagged = s.n_in - int(torch.searchsorted(s.ind, threshold.reshape(1), right=False))
    return flagged / s.n_in


def _fpr_in(s: _Split, tpr: float) -> float:
    k = _smallest_count(tpr, s.n_in)
    threshold = s.ind[k - 1]  # the k-th smallest ID score: TPR(in) first reaches tpr
    accepted = int(torch.searchsorted(s.ood, threshold.reshape(1), right=True))
    return accepted / s.n_ood


def auroc(scores: Tensorish, labels: Tensorish) -> float:
    """Area under the ROC curve; **positive class: OOD / anomaly**.

    ``AUROC = P(s_ood > s_in) + 0.5 * P(s_ood == s_in)`` over all OOD/ID pairs, which is
    ``sklearn.metrics.roc_auc_score(is_ood, scores)``.
    """
    return _auroc(_split(scores, labels))


def aupr_out(scores: Tensorish, labels: Tensorish) -> float:
    """Average precision; **positive class: OOD**, ranked by ``scores``.

    ``AP = sum_t (R_t - R_{t-1}) P_t`` over distinct thresholds ``t`` (step-wise, no
    interpolation), i.e. ``average_precision_score(is_ood, scores)``.
    """
    return _aupr_out(_split(scores, labels))


def aupr_in(scores: Tensorish, labels: Tensorish) -> float:
    """Average precision; **positive class: in-distribution**, ranked by ``-scores``,
    i.e. ``average_precision_score(~is_ood, -scores)``."""
    return _aupr_in(_split(scores, labels))


def fpr_at_tpr_in(scores: Tensorish, labels: Tensorish, tpr: float = 0.95) -> float:
    """FPR at a TPR with **in-distribution as the positive class** (OpenOOD's convention).

    Choose the threshold at the first point of the ROC curve of ``(~is_ood, -scores)``
    whose TPR (share of ID samples accepted) is ``>= tpr``; return the share of OOD
    samples also accepted (score ``<=`` threshold).
    """
    return _fpr_in(_split(scores, labels), tpr)


def fpr_at_tpr_out(scores: Tensorish, labels: Tensorish, tpr: float = 0.95) -> float:
    """FPR at a TPR with **OOD as the positive class** (pytorch-ood's convention).

    Choose the threshold at the first point of the ROC curve of ``(is_ood, scores)``
    whose TPR (share of OOD samples detected) is ``>= tpr``; return the share of ID
    samples also flagged (score ``>=`` threshold).
    """
    return _fpr_out(_split(scores, labels), tpr)


def ood_metrics(scores: Tensorish, labels: Tensorish) -> dict[str, float]:
    """All detection metrics from one sort: ``auroc`` and ``aupr_out`` (OOD positive),
    ``aupr_in`` (ID positive), ``fpr_at_95_tpr_in`` (ID positive, OpenOOD) and
    ``fpr_at_95_tpr_out`` (OOD positive, pytorch-ood)."""
    s = _split(scores, labels)
    return {
        "auroc": _auroc(s),
        "aupr_in": _aupr_in(s),
        "aupr_out": _aupr_out(s),
        "fpr_at_95_tpr_in": _fpr_in(s, 0.95),
        "fpr_at_95_tpr_out": _fpr_out(s, 0.95),
    }


def accuracy(predictions: Tensorish, labels: Tensorish) -> float:
    """Closed-set accuracy; ``predictions`` are class ids ``(N,)`` or logits ``(N, K)``
    (argmax). Every label must be a known class (``>= 0``)."""
    predictions, labels = _tensor(predictions, "predictions"), _tensor(labels, "labels")
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=1)
    if predictions.ndim != 1 or labels.ndim != 1 or predictions.numel() != labels.numel():
        raise DataError(
            f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} must be (N,) (or (N, K) logits)"
        )
    if labels.numel() == 0:
        raise DataError("accuracy of an empty set is undefined")
    if int(labels.min()) < 0:
        raise DataError("accuracy is closed-set: labels must be known classes >= 0, got -1 (unknown)")
    return float((predictions.to(labels.device) == labels).double().mean())


def confusion_matrix(predictions: Tensorish, labels: Tensorish, num_classes: int) -> torch.Tensor:
    """``(K+1, K+1)`` int64 counts, rows = true class, columns = predicted; the last row
    and column are "unknown" (``-1``)."""
    predictions, labels = _tensor(predictions, "predictions"), _tensor(labels, "labels")
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise DataError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} must both be (N,)")
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    for name, values in (("predictions", predictions), ("labels", labels)):
        if values.numel() and (int(values.min()) < -1 or int(values.max()) >= num_classes):
            raise DataError(
                f"{name} must be in -1..{num_classes - 1}, got range [{int(values.min())}, {int(values.max())}]"
            )
    k = num_classes + 1
    true = torch.where(labels < 0, num_classes, labels).long()
    pred = torch.where(predictions < 0, num_classes, predictions).long().to(true.device)
    return torch.bincount(true * k + pred, minlength=k * k).reshape(k, k)


class OODMetrics:
    """Streaming :func:`ood_metrics`: ``update`` with batches, ``compute`` at the end.

    Batches stay on their device and are concatenated once in ``compute``.
    """

    def __init__(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._is_ood: list[torch.Tensor] = []

    def update(self, scores: Tensorish, labels: Tensorish) -> None:
        """Add a batch of scores and labels (-1 / True = OOD)."""
        scores = _tensor(scores, "scores").detach()
        if scores.ndim != 1:
            raise DataError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
        self._is_ood.append(as_is_ood(labels, scores.numel()))
        self._scores.append(scores)

    def compute(self) -> dict[str, float]:
        """The metrics over every batch so far."""
        if not self._scores:
            raise DataError("OODMetrics.compute() called before any update()")
        return ood_metrics(torch.cat(self._scores), torch.cat(self._is_ood))

    def reset(self) -> None:
        """Forget every batch."""
        self._scores.clear()
        self._is_ood.clear()
