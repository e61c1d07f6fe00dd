"""Arrays from CSV files and NumPy ``.npy``/``.npz`` files."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError


def _as_images_or_features(x: np.ndarray, labels: np.ndarray, name: str, source: str) -> ImageDataset:
    """uint8 image arrays -> ``(N, C, H, W)``; other numbers -> float32 features ``(N, D)``."""
    if x.dtype == np.uint8:
        if x.ndim == 3:  # (N, H, W)
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4:
            raise DataError(f"{name}: uint8 images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got {x.shape}")
        images = torch.from_numpy(np.ascontiguousarray(x))
    elif np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating):
        if x.ndim < 2:
            raise DataError(f"{name}: expected samples along the first axis, got shape {x.shape}")
        features = x.reshape(len(x), -1).astype(np.float32)
        if not np.isfinite(features).all():
            raise DataError(f"{name}: features contain NaN or infinite values")
        images = torch.from_numpy(features)
    else:
        raise DataError(f"{name}: expected numeric data, got dtype {x.dtype}")
    return ImageDataset(images, torch.from_numpy(labels.astype(np.int64)), name, source)


def load_arrays(path: str | Path) -> ImageDataset:
    """A ``.npy`` of samples (one-class: labels 0) or a ``.npz`` with ``x``/``images``
    and optional ``y``/``labels``. Object arrays are refused (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"array file {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise DataError(f"{str(path)!r} is not a readable .npy/.npz file (magic bytes {magic!r})")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{str(path)!r}: refused to load (object arrays need pickle): {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{str(path)!r} is not a readable .npy/.npz file: {exc}") from None
    if isinstance(loaded, np.ndarray):
        x, y = loaded, np.zeros(len(loaded), dtype=np.int64)
    else:
        with loaded:
            keys = set(loaded.files)
            x_key = next((k for k in ("x", "images") if k in keys), None)
            if x_key is None:
                raise DataError(f"{str(path)!r}: expected an array named 'x' or 'images', found {sorted(keys)}")
            y_key = next((k for k in ("y", "labels") if k in keys), None)
            x = loaded[x_key]
            y = loaded[y_key] if y_key else np.zeros(len(x), dtype=np.int64)
    if x.ndim == 0 or y.shape != (len(x),):
        raise DataError(f"{str(path)!r}: {x.shape[0] if x.ndim else 0} samples but labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{str(path)!r}: labels must be integers, got {y.dtype}")
    return _as_images_or_features(x, y, path.stem, f"{path.name} (arrays)")


def load_csv(
    path: str | Path, *, label_column: int | str = -1, shape: tuple[int, int, int] | None = None
) -> ImageDataset:
    """Rows of numbers with one label column (``.csv`` or ``.csv.gz``).

    A first row that is not numeric is a header (then ``label_column`` may be a name).
    With ``shape=(C, H, W)`` the other columns are pixels: integers 0..255 or floats in
    ``[0, 1]``, stored as ``uint8`` images; without it they are float32 features.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise DataError(f"{str(path)!r} is not a readable CSV file: {exc}") from None
    rows = [r for r in rows if r]
    header: list[str] | None = None
    if rows and not _numeric(rows[0]):
        header, rows = rows[0], rows[1:]
    if not rows:
        raise DataError(f"{str(path)!r}: no data rows")
    width = len(rows[0])
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"{str(path)!r} line {number}: {len(row)} columns, expected {width}")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{str(path)!r}: non-numeric value: {exc}") from None
    column = _column_index(label_column, header, width, path)
    labels = table[:, column]
    if not np.all(labels == np.round(labels)):
        raise DataError(f"{str(path)!r}: label column {label_column!r} holds non-integer values")
    values = np.delete(table, column, axis=1)
    if shape is None:
        return _as_images_or_features(values, labels.astype(np.int64), path.name.split(".")[0], f"{path.name} (CSV)")
    if int(np.prod(shape)) != values.shape[1]:
        raise DataError(
            f"{str(path)!r}: shape {shape} needs {int(np.prod(shape))} pixel columns, got {values.shape[1]}"
        )
    if values.min() < 0 or values.max() > 255:
        raise DataError(
            f"{str(path)!r}: pixel values must be in [0, 255] or [0, 1], got [{values.min()}, {values.max()}]"
        )
    scale = 255.0 if values.max() <= 1.0 else 1.0
    pixels = np.rint(values * scale).astype(np.uint8).reshape(len(values), *shape)
    return _as_images_or_features(pixels, labels.astype(np.int64), path.name.split(".")[0], f"{path.name} (CSV)")


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _column_index(label_column: int | str, header: list[str] | None, width: int, path: Path) -> int:
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise DataError(f"{str(path)!r}: no column named {label_column!r} (header: {header})")
        return header.index(label_column)
    if not -width <= label_column < width:
        raise DataError(f"{str(path)!r}: label_column {label_column} is out of range for {width} columns")
    return label_column % width
