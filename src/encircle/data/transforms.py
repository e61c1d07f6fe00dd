"""Batch transforms on tensors, run on whatever device the batch is on.

Pure functions: no state, no Python loop over samples, no host-device synchronisation
except where an input check needs one (``min_max_scale`` with Python-number bounds
checks them on the host). The constants they need (min-max range, mean/std) are
computed once on training data, e.g. by :func:`min_max_range` or
:class:`encircle.preprocess.Preprocess`.
"""

from __future__ import annotations

import torch

from encircle.errors import DataError

_EPS = 1e-12


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` -> ``float32`` in ``[0, 1]`` (``x / 255``); floating input is returned as is.

    Raises:
        DataError: any other dtype.
    """
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x
    raise DataError(f"to_float: expected uint8 or floating-point samples, got {x.dtype}")


def normalize(x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """``(x - mean) / std``, broadcasting ``mean``/``std`` against ``x``.

    Per-channel constants for images ``(N, C, H, W)`` are shaped ``(C, 1, 1)``.

    Raises:
        DataError: a Python-number ``std`` that is not positive.
    """
    if not isinstance(std, torch.Tensor) and not std > 0:
        raise DataError(f"normalize: std must be positive, got {std}")
    return (to_float(x) - mean) / std


def global_contrast_normalization(x: torch.Tensor, scale: str = "l1") -> torch.Tensor:
    """Global contrast normalisation of every sample, as in Deep SVDD.

    For a sample ``x`` with ``D`` features (all channels and pixels together),

    ``x' = (x - mean(x)) / s(x)``, where

    * ``scale="l1"``: ``s = mean(|x - mean(x)|) = ||x - mean(x)||_1 / D``, the mean absolute
      deviation; the authors' choice for MNIST and CIFAR-10;
    * ``scale="l2"``: ``s = sqrt(mean((x - mean(x))^2)) = ||x - mean(x)||_2 / sqrt(D)``,
      the standard deviation.

    Ruff et al., "Deep One-Class Classification", ICML 2018, Sec. 4.1, and the authors'
    ``global_contrast_normalization`` (Deep-SVDD-PyTorch, ``datasets/preprocessing.py``).
    The ``"l1"`` branch equals theirs. Their ``"l2"`` branch divides by
    ``||x - mean(x)||_2 / D`` instead, which gives this result times ``sqrt(D)``: a
    constant factor per dataset that the subsequent min-max scaling cancels. A constant
    sample (``s = 0``) maps to zeros instead of dividing by zero. Integer input is
    converted with :func:`to_float` first.

    Args:
        x: a batch ``(N, ...)``.
        scale: ``"l1"`` or ``"l2"``.

    Returns:
        ``float`` tensor of the shape of ``x``.

    Raises:
        DataError: an unknown ``scale`` or a tensor without a batch axis.
    """
    if scale not in ("l1", "l2"):
        raise DataError(f"global_contrast_normalization: scale must be 'l1' or 'l2', got {scale!r}")
    if x.ndim < 2:
        raise DataError(f"global_contrast_normalization: expected a batch (N, ...), got shape {tuple(x.shape)}")
    flat = to_float(x).reshape(x.shape[0], -1)
    centered = flat - flat.mean(dim=1, keepdim=True)
    s = centered.abs() if scale == "l1" else centered.pow(2)
    s = s.mean(dim=1, keepdim=True)
    if scale == "l2":
        s = s.sqrt()
    s = torch.where(s > _EPS, s, torch.ones_like(s))
    return (centered / s).reshape(x.shape)


def min_max_range(x: torch.Tensor, *, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimum and maximum of ``x`` over a (training) batch, for :func:`min_max_scale`.

    Deep SVDD (Ruff et al., ICML 2018, Sec. 4.1) rescales the GCN output of the normal
    training class to ``[0, 1]`` with these two numbers; the authors' code hard-codes
    them per MNIST/CIFAR-10 class, computed exactly like this on the training data.

    Args:
        x: the data after :func:`global_contrast_normalization`, ``(N, ...)``.
        per_channel: one ``(lo, hi)`` per channel (axis 1, shaped ``(C, 1, 1)`` for
            images) instead of one pair for everything.

    Returns:
        ``(lo, hi)`` as tensors on ``x``'s device (0-d unless ``per_channel``).

    Raises:
        DataError: an empty batch.
    """
    if x.numel() == 0:
        raise DataError(f"min_max_range: expected a non-empty batch, got shape {tuple(x.shape)}")
    if not per_channel:
        return x.amin(), x.amax()
    if x.ndim < 2:
        raise DataError(f"min_max_range: per_channel needs a batch (N, C, ...), got shape {tuple(x.shape)}")
    dims = [0, *range(2, x.ndim)]
    shape = (x.shape[1],) + (1,) * (x.ndim - 2)
    return x.amin(dim=dims).reshape(shape), x.amax(dim=dims).reshape(shape)


def min_max_scale(x: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """``(x - lo) / (hi - lo)``: maps the training range ``[lo, hi]`` onto ``[0, 1]``.

    Test data may fall outside ``[0, 1]``; it is not clipped (as in the authors' code).

    Raises:
        DataError: ``hi <= lo`` (checked on the host for Python numbers, and for tensors
            on the CPU; on other devices no synchronising check is made).
    """
    span = hi - lo
    if isinstance(span, torch.Tensor):
        if span.device.type == "cpu" and bool((span <= 0).any()):
            raise DataError(f"min_max_scale: hi must be greater than lo, got lo={lo}, hi={hi}")
    elif not span > 0:
        raise DataError(f"min_max_scale: hi must be greater than lo, got lo={lo}, hi={hi}")
    return (x - lo) / span


def resize_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Float images ``(N, C, H, W)`` -> ``(N, *shape)``: channels, then size.

    RGB -> gray is the channel mean; gray -> RGB repeats the channel; the size changes
    by bilinear interpolation with antialiasing (as torchvision's ``Resize`` on tensors).
    """
    if x.ndim != 4 or len(shape) != 3:
        raise DataError(f"cannot resize samples of shape {tuple(x.shape[1:])} to {tuple(shape)}: images only")
    channels = shape[0]
    if x.shape[1] != channels:
        if channels == 1:
            x = x.mean(dim=1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        else:
            raise DataError(f"cannot turn {x.shape[1]}-channel images into {channels}-channel ones")
    if tuple(x.shape[2:]) == tuple(shape[1:]):
        return x
    return torch.nn.functional.interpolate(x, size=shape[1:], mode="bilinear", antialias=True, align_corners=False)


def convert_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``uint8`` images resized/recoloured to ``shape`` (:func:`resize_images`), still ``uint8``.

    Lets a test set of another format join a dataset, e.g. CIFAR-10 as grayscale 28x28
    unknowns beside MNIST (seed 004).
    """
    if images.dtype != torch.uint8:
        raise DataError(f"convert_images expects uint8 images, got {images.dtype}")
    if tuple(images.shape[1:]) == tuple(shape):
        return images
    x = resize_images(to_float(images), shape)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)
