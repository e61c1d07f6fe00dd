"""Deterministic splits: one-class, OOD unions and stratified fractions.

All randomness comes from a local ``torch.Generator`` seeded by the caller, never from
the global RNG, so a split is the same for the same seed whatever ran before.
"""

from __future__ import annotations

import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError


def stratified_split(ds: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Split every class ``fraction`` / ``1 - fraction`` (rounded per class); order kept."""
    if not 0 < fraction < 1:
        raise DataError(f"fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    first = []
    for label in torch.unique(ds.labels).tolist():
        members = torch.nonzero(ds.labels == label).flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        first.append(shuffled[: round(fraction * len(members))])
    chosen = torch.zeros(len(ds), dtype=torch.bool)
    chosen[torch.cat(first)] = True
    return ds.subset(chosen), ds.subset(~chosen)


def stratified_subset(ds: ImageDataset, limit: int, seed: int) -> ImageDataset:
    """At most ``limit`` samples with the class proportions kept (``0`` = all)."""
    if limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    if limit == 0 or limit >= len(ds):
        return ds
    return stratified_split(ds, limit / len(ds), seed)[0]


def one_class(ds: ImageDataset, normal_class: int, *, train: bool) -> ImageDataset:
    """The one-class protocol's view of ``ds``.

    For training, only the samples of ``normal_class``, labelled 0. For testing, every
    sample: ``normal_class`` -> 0, every other class -> -1 (anomaly).
    """
    is_normal = ds.labels == normal_class
    if not bool(is_normal.any()):
        present = sorted(set(ds.labels.tolist()))
        raise DataError(f"normal_class {normal_class} has no samples in {ds.name}; classes present: {present}")
    if train:
        kept = ds.subset(is_normal)
        return ImageDataset(kept.images, torch.zeros_like(kept.labels), ds.name, ds.source)
    labels = torch.where(is_normal, 0, -1).to(torch.int64)
    return ImageDataset(ds.images, labels, ds.name, ds.source)


def ood_union(in_ds: ImageDataset, out_ds: ImageDataset, name: str | None = None) -> ImageDataset:
    """``in_ds`` (labels kept) followed by ``out_ds`` relabelled ``-1``."""
    if in_ds.shape != out_ds.shape or in_ds.images.dtype != out_ds.images.dtype:
        raise DataError(
            f"cannot join {in_ds.name} {in_ds.shape} {in_ds.images.dtype} with "
            f"{out_ds.name} {out_ds.shape} {out_ds.images.dtype}: sample shapes and dtypes must match"
        )
    images = torch.cat([in_ds.images, out_ds.images])
    labels = torch.cat([in_ds.labels, torch.full((len(out_ds),), -1, dtype=torch.int64)])
    sources = in_ds.source if in_ds.source == out_ds.source else f"{in_ds.source}; {out_ds.source}"
    return ImageDataset(images, labels, name or f"{in_ds.name}+{out_ds.name}", sources)
