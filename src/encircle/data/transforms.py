"""Batch transforms on tensors, run on whatever device the batch is on.

Pure functions: no state, no Python loop over samples. The constants they need (min-max
range, mean/std) are computed on training data by :class:`encircle.preprocess.Preprocess`.
"""

from __future__ import annotations

import torch

from encircle.errors import DataError


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` -> ``float32`` in ``[0, 1]`` (``x / 255``); floating input is returned as is."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if x.is_floating_point():
        return x
    raise DataError(f"expected uint8 or floating-point samples, got {x.dtype}")


def normalize(x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """``(x - mean) / std``, broadcasting ``mean``/``std`` against ``x``."""
    return (x - mean) / std


def global_contrast_normalization(x: torch.Tensor, scale: str = "l1") -> torch.Tensor:
    """Global contrast normalisation of every sample, as in Deep SVDD.

    ``x' = (x - mean(x)) / s(x)``, where the mean is over all of a sample's features and
    ``s`` is the mean absolute deviation ``mean(|x - mean(x)|)`` for ``scale="l1"`` (the
    L1 norm divided by the number of features; the authors' choice for MNIST and
    CIFAR-10), or the standard deviation ``sqrt(mean((x - mean(x))^2))`` for ``"l2"``.
    Ruff et al., "Deep One-Class Classification", ICML 2018, Sec. 4.1, and the authors'
    ``global_contrast_normalization``. A constant sample (``s = 0``) maps to zeros
    instead of dividing by zero.
    """
    if scale not in ("l1", "l2"):
        raise DataError(f"global_contrast_normalization: scale must be 'l1' or 'l2', got {scale!r}")
    if x.ndim < 2:
        raise DataError(f"expected a batch (N, ...), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    centered = flat - flat.mean(dim=1, keepdim=True)
    s = centered.abs().mean(dim=1, keepdim=True) if scale == "l1" else centered.pow(2).mean(dim=1, keepdim=True).sqrt()
    s = torch.where(s > 0, s, torch.ones_like(s))
    return (centered / s).reshape(x.shape)


def min_max_scale(x: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """``(x - lo) / (hi - lo)``: maps the training range ``[lo, hi]`` onto ``[0, 1]``."""
    span = hi - lo
    if float(span) <= 0:
        raise DataError(f"min_max_scale: hi must be greater than lo, got lo={float(lo)}, hi={float(hi)}")
    return (x - lo) / span
