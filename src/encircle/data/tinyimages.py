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

from encircle.errors import DataError

FILE = "300K_random_images.npy"
SHAPE = (3, 32, 32)


def read_tinyimages(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 3, 32, 32)`` and labels ``int64 (N,)`` all ``-1`` from the ``.npy`` file.

    Raises:
        DataError: the file missing, not a ``.npy`` file (pickled objects are refused),
            truncated, or not ``uint8 (N, 32, 32, 3)``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TinyImages300k file {str(path)!r} does not exist")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"TinyImages300k file {str(path)!r} is not a complete .npy array: {exc}") from None
    if (
        not isinstance(array, np.ndarray)
        or array.dtype != np.uint8
        or array.ndim != 4
        or array.shape[1:] != (32, 32, 3)
    ):
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise DataError(f"TinyImages300k file {str(path)!r} holds {got}, expected uint8 (N, 32, 32, 3)")
    images = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    return images, np.full(len(images), -1, dtype=np.int64)
