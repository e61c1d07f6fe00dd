"""Run artifacts: the per-sample arrays a protocol keeps for figures and reports.

A protocol calls :func:`save_scores` once per evaluated set (``"test"``, ``"trial0"``,
...); each call writes ``OUT/artifacts/<name>.npz`` atomically (``np.savez_compressed``
into a temporary file, then ``os.replace``), without pickled objects. :func:`load_artifacts`
reads every file back with ``allow_pickle=False`` and checks it again.

Conventions (those of the whole project):

* ``labels``: known / normal classes ``0..K-1`` (one-class: ``0`` = normal), ``-1`` =
  unknown / OOD / anomaly;
* ``scores``: higher = more anomalous;
* ``predictions``: a known class ``0..K-1`` or ``-1`` (rejected as unknown);
* ``embeddings`` ``(N, D)`` and ``centers`` ``(K, D)`` live in the same output space;
  ``radius`` is the boundary around a single center (a sample farther away is rejected);
* ``images``: a small uint8 ``(M, C, H, W)`` sample for the prediction grid, showing the
  samples ``image_index`` (default: the first ``M``);
* ``class_names``: one name per known class.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle._io import atomic_open
from encircle.engine import InputPipeline
from encircle.errors import DataError
from encircle.methods.base import Method

ARTIFACTS_DIR = "artifacts"
"""The folder of a run directory that holds the ``.npz`` artifacts."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ARRAYS = ("scores", "labels", "predictions", "embeddings", "centers", "images", "image_index")
_SCALARS = ("radius", "threshold")


@dataclass(frozen=True)
class Artifacts:
    """The arrays of one ``artifacts/<name>.npz`` (``None`` where not saved)."""

    name: str
    scores: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    centers: np.ndarray | None = None
    radius: float | None = None
    threshold: float | None = None
    images: np.ndarray | None = None
    image_index: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int:
        """``K``: the number of class names, else one more than the largest class id."""
        if self.class_names is not None:
            return len(self.class_names)
        largest = max(int(a.max()) if a is not None and a.size else -1 for a in (self.labels, self.predictions))
        return max(largest + 1, 1)


def save_scores(
    out_dir: str | Path,
    name: str,
    *,
    scores: Any,
    labels: Any,
    predictions: Any = None,
    embeddings: Any = None,
    centers: Any = None,
    radius: float | None = None,
    threshold: float | None = None,
    images: Any = None,
    image_index: Any = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Check the arrays and write ``out_dir/artifacts/<name>.npz`` atomically.

    Array arguments may be torch tensors (any device) or NumPy arrays.

    Args:
        out_dir: the run directory.
        name: file stem: letters, digits, ``_``, ``.``, ``-`` (not starting with ``.``/``-``).
        scores: ``(N,)`` finite real scores, higher = more anomalous.
        labels: ``(N,)`` integer labels, ``-1`` = unknown / anomaly, else a class ``0..K-1``.
        predictions: ``(N,)`` integer predicted classes, ``-1`` = rejected.
        embeddings: ``(N, D)`` finite outputs of the network.
        centers: ``(K, D)`` finite centers in the space of ``embeddings``.
        radius: finite ``>= 0`` radius of the accepted ball around a single center.
        threshold: finite score above which a sample is rejected.
        images: ``(M, C, H, W)`` uint8 images, ``C`` 1 or 3, ``1 <= M <= N``.
        image_index: ``(M,)`` indices in ``0..N-1`` of the samples ``images`` shows
            (default ``0..M-1``); only with ``images``.
        class_names: one name per known class; ``K`` must exceed every class id.

    Returns:
        The path written.

    Raises:
        DataError: any argument breaks the rules above (the message names it).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DataError(f"name must be letters, digits, '_', '.' or '-' (not starting with '.' or '-'), got {name!r}")
    arrays: dict[str, Any] = {
        "scores": _numpy(scores, "scores"),
        "labels": _numpy(labels, "labels"),
        "predictions": _numpy(predictions, "predictions"),
        "embeddings": _numpy(embeddings, "embeddings"),
        "centers": _numpy(centers, "centers"),
        "images": _numpy(images, "images"),
        "image_index": _numpy(image_index, "image_index"),
        "radius": radius,
        "threshold": threshold,
        "class_names": class_names,
    }
    art = _build(name, arrays)
    payload: dict[str, Any] = {}
    for key in _ARRAYS:
        value = getattr(art, key)
        if value is not None:
            payload[key] = value
    for key in _SCALARS:
        value = getattr(art, key)
        if value is not None:
            payload[key] = np.asarray(value, dtype=np.float64)
    if art.class_names is not None:
        payload["class_names"] = np.asarray(art.class_names, dtype=np.str_)
    path = Path(out_dir) / ARTIFACTS_DIR / f"{name}.npz"
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **payload)
    return path


def load_artifacts(out_dir: str | Path) -> dict[str, Artifacts]:
    """Every ``out_dir/artifacts/*.npz``, by name (sorted); ``{}`` when there is none.

    Raises:
        DataError: ``out_dir`` is not a directory, or a file is unreadable, holds
            pickled objects, or breaks the rules of :func:`save_scores`.
    """
    run = Path(out_dir)
    if not run.is_dir():
        raise DataError(f"out_dir must be an existing run directory, got {str(run)!r}")
    found: dict[str, Artifacts] = {}
    for path in sorted((run / ARTIFACTS_DIR).glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as npz:
                stored = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"artifact file {str(path)!r} cannot be read as .npz without pickle: {exc}") from None
        unknown = set(stored) - {*_ARRAYS, *_SCALARS, "class_names"}
        if unknown:
            raise DataError(f"artifact file {str(path)!r} holds unknown arrays {sorted(unknown)}")
        for key in ("scores", "labels"):
            if key not in stored:
                raise DataError(f"artifact file {str(path)!r} lacks the array {key!r}")
        for key in _SCALARS:
            if key in stored:
                stored[key] = float(stored[key])
        if "class_names" in stored:
            stored["class_names"] = [str(v) for v in np.atleast_1d(stored["class_names"])]
        try:
            found[path.stem] = _build(path.stem, stored)
        except DataError as exc:
            raise DataError(f"artifact file {str(path)!r}: {exc}") from None
    return found


@torch.no_grad()
def embed_samples(
    method: Method, samples: torch.Tensor, pipeline: InputPipeline, batch_size: int = 1024
) -> torch.Tensor:
    """The network outputs ``method.embed(x)`` of ``samples`` (float32, CPU), batch-wise."""
    if samples.shape[0] == 0:
        raise DataError("cannot embed an empty set of samples")
    was_training = method.training
    method.eval()
    dummy = torch.zeros(samples.shape[0], dtype=torch.int64)
    parts = []
    for x, _ in pipeline.batches(samples, dummy, batch_size):
        with pipeline.autocast():
            parts.append(method.embed(x).float().cpu())
    method.train(was_training)
    return torch.cat(parts)


# ------------------------------------------------------------------------- validation


def _numpy(x: Any, name: str) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise DataError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _build(name: str, a: dict[str, Any]) -> Artifacts:
    """Validate the arrays of one artifact set and return them in canonical dtypes."""
    scores = _real(a["scores"], "scores", ndim=1)
    if scores is None or scores.shape[0] == 0:
        raise DataError(f"scores must hold at least one sample, got {None if scores is None else scores.shape}")
    n = scores.shape[0]
    labels = _class_ids(a["labels"], "labels", n)
    if labels is None:
        raise DataError("labels must be given (one integer label per score), got None")
    predictions = _class_ids(a.get("predictions"), "predictions", n)
    embeddings = _real(a.get("embeddings"), "embeddings", ndim=2)
    if embeddings is not None and (embeddings.shape[0] != n or embeddings.shape[1] < 1):
        raise DataError(f"embeddings must have shape (N, D) with N = {n} and D >= 1, got {embeddings.shape}")
    centers = _real(a.get("centers"), "centers", ndim=2)
    if centers is not None:
        if centers.shape[0] < 1 or centers.shape[1] < 1:
            raise DataError(f"centers must have shape (K, D) with K, D >= 1, got {centers.shape}")
        if embeddings is not None and centers.shape[1] != embeddings.shape[1]:
            raise DataError(
                f"centers must have the embeddings' dimension D = {embeddings.shape[1]}, got shape {centers.shape}"
            )
    radius = _scalar(a.get("radius"), "radius", minimum=0.0)
    threshold = _scalar(a.get("threshold"), "threshold", minimum=None)
    images, image_index = _images(a.get("images"), a.get("image_index"), n)
    class_names = a.get("class_names")
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names) or not class_names:
            raise DataError(f"class_names must be a non-empty sequence of strings, got {class_names!r}")
        class_names = tuple(class_names)
        largest = max(int(x.max()) for x in (labels, predictions) if x is not None)
        if largest >= len(class_names):
            raise DataError(
                f"class_names must name every class id: got {len(class_names)} names but class id {largest}"
            )
    return Artifacts(
        name, scores, labels, predictions, embeddings, centers, radius, threshold, images, image_index, class_names
    )


def _real(x: np.ndarray | None, name: str, *, ndim: int) -> np.ndarray | None:
    if x is None:
        return None
    if x.ndim != ndim or x.dtype.kind not in "biuf":
        shape = "(N,)" if ndim == 1 else "(N, D)" if name == "embeddings" else "(K, D)"
        raise DataError(f"{name} must be real numbers of shape {shape}, got dtype {x.dtype} and shape {x.shape}")
    out = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{name} must be finite, got {int((~np.isfinite(out)).sum())} NaN or infinite value(s)")
    return out


def _class_ids(x: np.ndarray | None, name: str, n: int) -> np.ndarray | None:
    if x is None:
        return None
    if x.ndim != 1 or x.dtype.kind not in "iu":
        raise DataError(f"{name} must be integer class ids of shape (N,), got dtype {x.dtype} and shape {x.shape}")
    if x.shape[0] != n:
        raise DataError(f"{name} must have one entry per score ({n}), got {x.shape[0]}")
    if int(x.min()) < -1:
        raise DataError(f"{name} must be -1 (unknown) or a class id >= 0, got {int(x.min())}")
    return x.astype(np.int64)


def _scalar(value: Any, name: str, *, minimum: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{name} must be a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out) or (minimum is not None and out < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise DataError(f"{name} must be a finite number{bound}, got {out}")
    return out


def _images(images: np.ndarray | None, index: np.ndarray | None, n: int) -> tuple[np.ndarray | None, ...]:
    if images is None:
        if index is not None:
            raise DataError("image_index needs images, got image_index without images")
        return None, None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"images must be uint8 of shape (M, C, H, W) with C = 1 or 3, got dtype {images.dtype} "
            f"and shape {images.shape}"
        )
    m = images.shape[0]
    if not 1 <= m <= n:
        raise DataError(f"images must hold 1 to N = {n} images, got {m}")
    if index is None:
        index = np.arange(m)
    if index.ndim != 1 or index.dtype.kind not in "iu" or index.shape[0] != m:
        raise DataError(f"image_index must be {m} integer indices (one per image), got {index.dtype} {index.shape}")
    if int(index.min()) < 0 or int(index.max()) >= n:
        raise DataError(f"image_index must be sample indices in 0..{n - 1}, got [{index.min()}, {index.max()}]")
    return images, index.astype(np.int64)
