"""What the protocols share in evaluation: open-set metrics from predictions, and labels."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from encircle.config import RunConfig
from encircle.metrics import accuracy, confusion_matrix, ood_metrics, oscr

#: method name -> how tables write it
_LABELS = {"cac": "CAC", "mchad": "MCHAD", "deep-svdd": "Deep SVDD", "deep-sad": "Deep SAD", "ognet": "OGNet"}


def open_set_metrics(
    classes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float
) -> dict[str, float]:
    """Closed-set accuracy, detection metrics, OSCR and the thresholded decision rates.

    Args:
        classes: ``(N,)`` predicted known class of every test sample (before rejection).
        scores: ``(N,)`` scores, higher = more likely unknown.
        labels: ``(N,)`` true classes ``0..K-1``, ``-1`` for unknown samples.
        threshold: a sample is rejected as unknown when its score is above it.

    Returns:
        ``accuracy`` (known samples, no rejection), ``auroc``, ``aupr_in``, ``aupr_out``,
        ``fpr_at_95_tpr_in``/``_out`` (unknown = positive for AUROC), ``oscr``,
        ``accepted_known`` (share of known samples not rejected), ``rejected_unknown``
        (share of unknown samples rejected) and ``open_set_accuracy`` (right class for
        known samples, "unknown" for unknown ones, over all samples).
    """
    known = labels >= 0
    correct = classes[known] == labels[known]
    accepted = scores <= threshold
    decided = torch.where(accepted, classes, -1)
    metrics = {"accuracy": accuracy(classes[known], labels[known]), **ood_metrics(scores, labels)}
    metrics["oscr"] = oscr(scores[known], correct, scores[~known])
    metrics["accepted_known"] = float(accepted[known].double().mean())
    metrics["rejected_unknown"] = float((~accepted[~known]).double().mean())
    metrics["open_set_accuracy"] = float((decided == labels).double().mean())
    return metrics


def open_set_confusion(
    classes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float, num_classes: int
) -> torch.Tensor:
    """``(K+1, K+1)`` confusion matrix after rejection (rows true, columns predicted; last = unknown)."""
    return confusion_matrix(torch.where(scores <= threshold, classes, -1), labels, num_classes)


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def method_label(config: RunConfig) -> str:
    """``CAC``, ``MCHAD``, ``softmax + energy``, ... for the method of ``config``."""
    name = config.method.name
    if name == "softmax":
        return f"softmax + {config.method['score_rule']}"
    return _LABELS.get(name, name)


def class_list(values: Sequence[int]) -> str:
    """``[0..9]`` as ``0-9``; other lists as ``0,3,5``."""
    ordered = sorted(values)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))
