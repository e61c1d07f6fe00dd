"""TinyImages300k: 300,000 32x32 images used as training outliers (outlier exposure).

Hendrycks et al. (ICLR 2019, https://github.com/hendrycks/outlier-exposure) published
``300K_random_images.npy``, a NumPy file holding ``uint8 (300000, 32, 32, 3)``
(sample, height, width, RGB), a random subset of the 80 Million Tiny Images with the
CIFAR images removed. pytorch-ood's ``TinyImages300k`` reads the same file.

The images are returned as ``(N, 3, 32, 32)`` with every label ``-1`` (outliers: no
known class). The ``.npy`` file is already a flat array, so it is memory-mapped and
transposed in one pass; no second copy is cached on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encircle.data.npy_header import check_fits, read_header
from encircle.errors import DataError

FILE = "300K_random_images.npy"
SHAPE = (3, 32, 32)


def read_tinyimages(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 3, 32, 32)`` and labels ``int64 (N,)`` all ``-1`` from the ``.npy`` file.

    The header is checked (:func:`~encircle.data.npy_header.read_header`) and held
    against the file's size before the data is mapped.

    Raises:
        DataError: the file missing, not a ``.npy`` file (pickled objects are refused),
            truncated, or not ``uint8 (N, 32, 32, 3)``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TinyImages300k file {str(path)!r} does not exist")
    where = f"TinyImages300k file {str(path)!r}"
    try:
        with open(path, "rb") as handle:
            header = read_header(handle, where)
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc}") from None
    if header.dtype != np.uint8 or len(header.shape) != 4 or header.shape[1:] != (32, 32, 3):
        raise DataError(f"{where} holds {header.dtype} {header.shape}, expected uint8 (N, 32, 32, 3)")
    check_fits(header, where, size - header.offset)
    if header.count == 0:  # nothing to map (mmap refuses an empty range)
        return np.empty((0, *SHAPE), np.uint8), np.empty(0, np.int64)
    # mapped, not read: the transposed copy below is the only one made in memory
    array = np.memmap(path, np.uint8, "r", header.offset, header.shape, order="F" if header.fortran_order else "C")
    images = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    return images, np.full(len(images), -1, dtype=np.int64)
