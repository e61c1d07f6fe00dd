"""Deterministic splits: one-class, open-set, OOD unions and stratified fractions.

All randomness comes from a local ``torch.Generator`` seeded by the caller, never from
the global RNG, so a split is the same for the same seed whatever ran before. Labels
follow the project convention: known classes ``0..K-1``, unknown/anomaly ``-1``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError


def _with_labels(ds: ImageDataset, labels: torch.Tensor) -> ImageDataset:
    return dataclasses.replace(ds, labels=labels.to(torch.int64))


def stratified_split(ds: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Split every class ``fraction`` / ``1 - fraction``, at random but reproducibly.

    Class ``k`` with ``n_k`` samples puts ``floor(fraction * n_k)`` or one more into the
    first part (largest remainders get the extra sample), so the first part has exactly
    ``round(fraction * N)`` samples and every class is split as evenly as integers allow.
    Both parts keep the original sample order.

    Args:
        ds: the dataset.
        fraction: share of each class in the first part, in ``(0, 1)``.
        seed: seed of the local generator that shuffles each class.

    Returns:
        ``(first, second)``, disjoint, together all of ``ds``.

    Raises:
        DataError: ``fraction`` outside ``(0, 1)``.
    """
    if not 0 < fraction < 1:
        raise DataError(f"fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(int(seed))
    classes, counts = torch.unique(ds.labels, return_counts=True)
    exact = [fraction * int(n) for n in counts]
    take = [math.floor(e) for e in exact]
    extra = math.floor(fraction * len(ds) + 0.5) - sum(take)
    by_remainder = sorted(range(len(take)), key=lambda i: (-(exact[i] - take[i]), i))
    for i in by_remainder[:extra]:
        take[i] += 1
    chosen = torch.zeros(len(ds), dtype=torch.bool)
    for label, k in zip(classes.tolist(), take, strict=True):
        members = torch.nonzero(ds.labels == label).flatten()
        chosen[members[torch.randperm(len(members), generator=generator)[:k]]] = True
    return ds.subset(chosen), ds.subset(~chosen)


def stratified_subset(ds: ImageDataset, limit: int, seed: int) -> ImageDataset:
    """At most ``limit`` samples with the class proportions kept (``0`` means all).

    Raises:
        DataError: a negative ``limit``.
    """
    if limit < 0:
        raise DataError(f"limit must be >= 0 (0 = all samples), got {limit}")
    if limit == 0 or limit >= len(ds):
        return ds
    return stratified_split(ds, limit / len(ds), seed)[0]


def one_class(ds: ImageDataset, normal_class: int, *, train: bool) -> ImageDataset:
    """The one-class protocol's view of ``ds`` (Ruff et al., ICML 2018, Sec. 4.1).

    For training, only the samples of ``normal_class``, labelled 0. For testing, every
    sample: ``normal_class`` -> 0, every other class -> -1 (anomaly).

    Raises:
        DataError: ``normal_class`` has no samples in ``ds``.
    """
    is_normal = ds.labels == normal_class
    if not bool(is_normal.any()):
        present = sorted(set(ds.labels.tolist()))
        raise DataError(f"normal_class {normal_class} has no samples in {ds.name}; classes present: {present}")
    if train:
        kept = ds.subset(is_normal)
        return _with_labels(kept, torch.zeros_like(kept.labels))
    return _with_labels(ds, torch.where(is_normal, 0, -1))


def open_set(ds: ImageDataset, known_classes: Sequence[int], *, train: bool) -> ImageDataset:
    """The open-set view of ``ds``: known classes relabelled ``0..K-1`` in the given order.

    For training, only the known classes; for testing, every sample, the others -> -1.
    (Neal et al., ECCV 2018 protocol, as used by Miller et al., WACV 2021.)

    Raises:
        DataError: no known classes, a repeated one, or one without samples.
    """
    known = [int(k) for k in known_classes]
    if not known or len(set(known)) != len(known):
        raise DataError(f"known_classes must be distinct class labels, at least one, got {known}")
    present = set(ds.labels.tolist())
    missing = [k for k in known if k not in present]
    if missing:
        raise DataError(f"known class(es) {missing} have no samples in {ds.name}; classes present: {sorted(present)}")
    lookup = torch.full((int(ds.labels.max()) + 2,), -1, dtype=torch.int64)
    lookup[torch.tensor(known)] = torch.arange(len(known))
    mapped = torch.where(ds.labels >= 0, lookup[ds.labels.clamp(min=0)], -1)
    if train:
        kept = mapped >= 0
        return _with_labels(ds.subset(kept), mapped[kept])
    return _with_labels(ds, mapped)


def ood_union(in_ds: ImageDataset, out_ds: ImageDataset, name: str | None = None) -> ImageDataset:
    """``in_ds`` (labels kept) followed by ``out_ds`` relabelled ``-1`` (out-of-distribution).

    Raises:
        DataError: the sample shapes or dtypes differ (no resizing happens here).
    """
    if in_ds.shape != out_ds.shape or in_ds.images.dtype != out_ds.images.dtype:
        raise DataError(
            f"cannot join {in_ds.name} {in_ds.shape} {in_ds.images.dtype} with "
            f"{out_ds.name} {out_ds.shape} {out_ds.images.dtype}: sample shapes and dtypes must match"
        )
    images = torch.cat([in_ds.images, out_ds.images])
    labels = torch.cat([in_ds.labels, torch.full((len(out_ds),), -1, dtype=torch.int64)])
    source = in_ds.source if in_ds.source == out_ds.source else f"{in_ds.source}; {out_ds.source}"
    ids = in_ds.ids + out_ds.ids if in_ds.ids is not None and out_ds.ids is not None else None
    return ImageDataset(images, labels, name or f"{in_ds.name}+{out_ds.name}", source, ids)
