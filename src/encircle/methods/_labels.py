"""Label checks shared by the classifying methods."""

from __future__ import annotations

import torch

from encircle.errors import DataError


def check_class_labels(y: torch.Tensor, num_classes: int, method: str, *, allow_outliers: bool = False) -> None:
    """Raise :class:`DataError` unless every label is a class ``0..K-1`` (or ``-1`` when allowed)."""
    if y.numel() == 0:
        return
    low, high = int(y.min()), int(y.max())
    lowest = -1 if allow_outliers else 0
    if low < lowest or high >= num_classes:
        what = "-1 (outlier) or " if allow_outliers else ""
        hint = "" if allow_outliers else "; unknown (-1) samples have no place in its training set"
        raise DataError(
            f"{method} trains on labels {what}0..{num_classes - 1} (the network has {num_classes} outputs), "
            f"got labels in [{low}, {high}]{hint}"
        )
