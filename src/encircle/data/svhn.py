"""SVHN cropped digits (``train_32x32.mat`` / ``test_32x32.mat``).

Format (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/): a MATLAB v5 file
with ``X``, ``uint8 (32, 32, 3, N)`` (height, width, RGB, sample), and ``y``, ``(N, 1)``
labels 1-10 where **10 stands for the digit 0**. encircle returns the digits as labels
0-9 (10 -> 0, as torchvision's ``SVHN`` does) and images ``(N, 3, 32, 32)``.

The file is read with :func:`encircle.data.matfile.read_mat_arrays`, a bounds-checked
MATLAB v5 reader (SciPy's ``loadmat`` can crash the interpreter on a damaged file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encircle.data.matfile import read_mat_arrays
from encircle.errors import DataError

#: The published file of each split.
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
SHAPE = (3, 32, 32)


def read_svhn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 3, 32, 32)`` and digit labels ``int64 (N,)`` 0-9 of a ``*_32x32.mat`` file.

    Raises:
        DataError: the file missing or not a MATLAB v5 file, ``X``/``y`` missing or of
            the wrong shape or type, or labels outside 1-10.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SVHN file {str(path)!r} does not exist")
    try:
        content = read_mat_arrays(path, ("X", "y"))
    except DataError as exc:
        raise DataError(f"SVHN file {str(path)!r} is not a readable MATLAB v5 file: {exc}") from None
    images, labels = content.get("X"), content.get("y")
    if images is None or labels is None:
        raise DataError(f"SVHN file {str(path)!r} has no 'X' and 'y' variables; got {sorted(content)}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataError(f"SVHN file {str(path)!r}: 'X' is {images.dtype} {images.shape}, expected uint8 (32, 32, 3, N)")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != images.shape[3]:
        raise DataError(f"SVHN file {str(path)!r}: {images.shape[3]} images but {labels.shape[0]} labels")
    if labels.size and (not np.all(labels == np.round(labels)) or labels.min() < 1 or labels.max() > 10):
        raise DataError(
            f"SVHN file {str(path)!r}: labels must be integers 1-10 (10 = digit 0), "
            f"got values from {labels.min()} to {labels.max()}"
        )
    digits = labels.astype(np.int64) % 10  # 10 stands for 0
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), digits
