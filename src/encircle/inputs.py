"""What a user holds, turned into the samples encircle trains on, and the defaults that follow.

One converter, :func:`as_samples`, serves the estimators (:mod:`encircle.estimators`)
and the command line (``encircle fit`` / ``score``), and :func:`default_config` decides
the network, preprocessing and schedule from the data for both.

Accepted inputs (``X``):

* NumPy arrays of any float dtype (float64 included) and integer/``uint8`` arrays,
  torch tensors, pandas DataFrames (numeric columns), encircle ``ImageDataset`` s;
* a torch ``Dataset`` or ``DataLoader`` yielding samples or ``(sample, label, ...)``
  tuples, read batch by batch (:func:`iter_batches`).

How their shape is read:

=====================  =============================================================
shape                  read as
=====================  =============================================================
``(N, D)``             ``N`` feature vectors (float32), whatever the dtype
``(N, H, W)``          ``N`` one-channel images ``(N, 1, H, W)``
``(N, C, H, W)``       images, channels first, when ``C`` is 1 or 3
``(N, H, W, C)``       images, channels last (moved first), when ``C`` is 1 or 3
=====================  =============================================================

Integer images must hold values ``0..255`` and become ``uint8``; float images keep
their values (float32). Every input check raises a :class:`~encircle.errors.DataError`
(also a ``ValueError``) naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from encircle.config import DataConfig, ModelConfig, RunConfig, TrainConfig, with_overrides
from encircle.data.dataset import ImageDataset
from encircle.errors import DataError

#: Channel counts that mark an axis of a 4-D array as the channel axis.
CHANNELS = (1, 3)
#: Optimiser steps the automatic schedule aims at (``epochs * ceil(N / batch_size)``).
#: Few: on small tabular sets Deep SVDD overfits with many (breast_cancer, 3 splits:
#: AUROC 0.950 at ~150 steps, 0.942 at ~270, 0.909 at ~900).
TARGET_STEPS = 150
#: Bounds of the automatic number of epochs.
MIN_EPOCHS, MAX_EPOCHS = 10, 100


class InputTypeError(DataError, TypeError):
    """An input holds values of a type that cannot become numbers (also a ``TypeError``)."""


def is_stream(data: Any) -> bool:
    """Whether ``data`` is a torch ``Dataset`` or ``DataLoader`` (read batch by batch)."""
    return isinstance(data, torch.utils.data.DataLoader | torch.utils.data.Dataset)


def as_samples(data: Any, what: str = "X", *, allow_empty: bool = False) -> torch.Tensor:
    """``data`` as a tensor of samples: ``uint8`` images ``(N, C, H, W)``, float32 images,
    or float32 features ``(N, D)``.

    Raises:
        DataError: an unsupported type or dtype, a shape that is neither features nor
            images, NaN or infinite values, integer images outside ``0..255``, or no
            samples (unless ``allow_empty``).
    """
    if isinstance(data, ImageDataset):
        tensor = data.images
    elif is_stream(data):
        parts = list(iter_batches(data, what=what))
        if not parts:
            raise DataError(f"{what} yielded no batches")
        tensor = torch.cat(parts)
    else:
        tensor = _tensor(data, what)
    return _shaped(tensor, what, allow_empty)


def _tensor(data: Any, what: str) -> torch.Tensor:
    """A CPU tensor of ``data`` (NumPy, pandas, torch, nested lists), dtype checked."""
    if hasattr(data, "to_numpy") and hasattr(data, "columns"):  # a pandas DataFrame
        kinds = {dtype.kind for dtype in data.dtypes}
        if not kinds <= set("biuf"):
            raise DataError(
                f"{what} is a DataFrame with non-numeric columns (dtypes {sorted(set(map(str, data.dtypes)))}); "
                "encode them as numbers first"
            )
        data = data.to_numpy(dtype=np.float64)
    elif hasattr(data, "to_numpy") and hasattr(data, "dtype"):  # a pandas Series: one feature
        data = data.to_numpy(dtype=np.float64).reshape(-1, 1)
    if hasattr(data, "toarray") and hasattr(data, "nnz"):  # a SciPy sparse matrix or array
        raise DataError(f"{what} is sparse; sparse data is not supported: pass {what}.toarray()")
    if isinstance(data, torch.Tensor):
        tensor = data.detach().cpu()
    else:
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what} must be an array of numbers, got {type(data).__name__} ({exc})") from None
        if array.dtype.kind == "c":
            raise DataError(f"Complex data not supported: {what} must hold real numbers, got dtype {array.dtype}")
        if array.dtype == object:
            try:
                array = array.astype(np.float64)
            except TypeError as exc:  # e.g. a dict among the numbers
                raise InputTypeError(f"{what} holds a value that is not a number: {exc}") from None
            except ValueError:
                pass
        if array.dtype.kind not in "biuf":
            raise DataError(
                f"{what} must hold numbers (float or integer), got dtype {array.dtype}"
                + (" (samples of different shapes?)" if array.dtype == object else "")
            )
        if array.dtype.kind == "b":
            array = array.astype(np.float32)
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # a read-only (memory-mapped) array: torch wants its own copy
            array = array.copy()
        tensor = torch.from_numpy(array)
    if tensor.dtype == torch.bool:
        tensor = tensor.float()
    if tensor.is_complex():
        raise DataError(f"Complex data not supported: {what} must hold real numbers, got dtype {tensor.dtype}")
    return tensor


def _shaped(tensor: torch.Tensor, what: str, allow_empty: bool) -> torch.Tensor:
    """Read the shape of ``tensor`` as features or images and fix dtype and layout."""
    shape = tuple(tensor.shape)
    if tensor.ndim < 2 or tensor.ndim > 4:
        raise DataError(
            f"{what} must be 2-D features (n_samples, n_features) or images (N, H, W), (N, C, H, W), "
            f"(N, H, W, C); got a {tensor.ndim}-D array of shape {shape}"
            + (
                "; Reshape your data: X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one sample"
                if tensor.ndim == 1
                else ""
            )
        )
    if shape[0] == 0 and not allow_empty:
        raise DataError(f"{what} holds no samples (shape {shape}); pass at least one")
    if math.prod(shape[1:]) == 0:
        raise DataError(f"{what} has 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    elif tensor.ndim == 4 and shape[1] not in CHANNELS:
        if shape[3] not in CHANNELS:
            raise DataError(
                f"{what} of shape {shape} is read as images, but neither axis 1 nor axis 3 has 1 or 3 channels"
            )
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).flatten(1).any(dim=1).sum())
            raise DataError(
                f"{what} contains NaN or infinite values ({bad} of {tensor.shape[0]} samples); "
                "impute or drop them first"
            )
        return tensor.contiguous()
    if tensor.ndim == 2:  # integer features (counts, codes): numbers like any other
        return tensor.to(torch.float32)
    if tensor.dtype != torch.uint8 and tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) > 255):
        raise DataError(
            f"{what} holds integer images with values {int(tensor.min())}..{int(tensor.max())}; expected 0..255 "
            "(pass floats for other ranges)"
        )
    return tensor.to(torch.uint8).contiguous()


def iter_batches(data: Any, batch_size: int = 256, what: str = "X") -> Iterator[torch.Tensor]:
    """The samples of a torch ``Dataset`` / ``DataLoader`` (or anything :func:`as_samples`
    takes), batch by batch, each converted by :func:`as_samples`.

    A batch may be a tensor or a tuple/list whose first item is the samples (labels
    after it are ignored); a ``Dataset`` is read through a ``DataLoader`` of
    ``batch_size``.

    Raises:
        DataError: a batch of another type, or one whose samples change shape.
    """
    if not is_stream(data):
        samples = as_samples(data, what)
        yield from samples.split(batch_size)
        return
    loader = data if isinstance(data, torch.utils.data.DataLoader) else torch.utils.data.DataLoader(data, batch_size)
    shape: tuple[int, ...] | None = None
    for index, batch in enumerate(loader):
        if isinstance(batch, tuple | list) and batch:
            batch = batch[0]
        if not isinstance(batch, torch.Tensor | np.ndarray):
            raise DataError(
                f"{what}: batch {index} is a {type(batch).__name__}; a DataLoader must yield tensors or "
                "(samples, labels) tuples"
            )
        samples = _shaped(_tensor(batch, f"{what} batch {index}"), f"{what} batch {index}", allow_empty=False)
        if shape is not None and tuple(samples.shape[1:]) != shape:
            raise DataError(
                f"{what}: batch {index} has samples of shape {tuple(samples.shape[1:])}, the earlier ones {shape}"
            )
        shape = tuple(samples.shape[1:])
        yield samples


def labels_of(data: Any) -> np.ndarray | None:
    """The labels that come with ``data``: an ``ImageDataset``'s, or the second item of
    the ``(samples, labels, ...)`` batches of a ``Dataset`` / ``DataLoader``; else ``None``."""
    if isinstance(data, ImageDataset):
        return data.labels.numpy()
    if not is_stream(data):
        return None
    loader = data if isinstance(data, torch.utils.data.DataLoader) else torch.utils.data.DataLoader(data, 256)
    parts = []
    for batch in loader:
        if not (isinstance(batch, tuple | list) and len(batch) > 1):
            return None
        parts.append(np.asarray(batch[1]).reshape(-1))
    return np.concatenate(parts) if parts else None


def is_features(samples: torch.Tensor) -> bool:
    """Whether ``samples`` (from :func:`as_samples`) are feature vectors rather than images."""
    return samples.ndim == 2


def default_network(samples: torch.Tensor) -> tuple[str, int, str]:
    """``(model name, out_features, preprocessing)`` for ``samples`` from :func:`as_samples`.

    * float features ``(N, D)``: the bias-free ``mlp`` (16 outputs), ``"standardize"``
      (per-feature mean and standard deviation of the training data; on scikit-learn's
      breast_cancer it lifts Deep SVDD's AUROC from 0.80 unscaled to 0.95);
    * one-channel images: the Deep SVDD paper's MNIST LeNet (``lenet-mnist``, 32
      outputs), images of another size resized to 28x28;
    * three-channel images: the paper's CIFAR-10 LeNet (``lenet-cifar10``, 128
      outputs), images of another size resized to 32x32;
    * images are scaled by ``"unit"`` (``x / 255`` for ``uint8``) and float images by
      ``"normalize"`` (per-channel mean and standard deviation of the training data).
    """
    if is_features(samples):
        return "mlp", 16, "standardize"
    preprocess = "unit" if samples.dtype == torch.uint8 else "normalize"
    if samples.shape[1] == 1:
        return "lenet-mnist", 32, preprocess
    return "lenet-cifar10", 128, preprocess


def default_schedule(num_samples: int) -> tuple[int, int]:
    """``(epochs, batch_size)`` for ``num_samples`` training samples.

    The batch is 128, or ``N / 8`` (at least 16) for small sets so an epoch has a few
    steps; the epochs give about :data:`TARGET_STEPS` optimiser steps, between
    :data:`MIN_EPOCHS` and :data:`MAX_EPOCHS`.
    """
    batch = max(16, min(128, num_samples // 8))
    steps_per_epoch = max(1, math.ceil(num_samples / batch))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_STEPS / steps_per_epoch)))
    return epochs, batch


def default_config(samples: torch.Tensor, method: str | None = None) -> RunConfig:
    """The run configuration encircle picks for ``samples`` (:func:`default_network`,
    :func:`default_schedule`), then the method's own recipe (``Method.recipe``: OGNet's networks and schedule).

    The command line's ``encircle fit`` and the estimators both start from it.
    """
    from encircle.methods import method_class

    name, out_features, preprocess = default_network(samples)
    epochs, batch_size = default_schedule(samples.shape[0])
    base = RunConfig(
        model=ModelConfig(name=name, out_features=out_features),
        data=DataConfig(preprocess=preprocess),
        train=TrainConfig(epochs=epochs, batch_size=batch_size),
    )
    return with_overrides(base, method_class(method).recipe) if method else base
