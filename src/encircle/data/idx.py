"""IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

Layout: two zero bytes, a type code, the number of dimensions ``ndim``, then ``ndim``
big-endian uint32 sizes and the data in C order. The header is checked against the
file size *before* anything large is allocated, so a corrupt or hostile header cannot
make the reader allocate an absurd amount of memory.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle.errors import DataError

#: IDX type code -> NumPy dtype (big-endian, as the format stores it).
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
#: Largest payload read (bytes); anything bigger is refused as corrupt.
MAX_IDX_BYTES = 4 * 2**30


def read_idx(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> torch.Tensor:
    """Read an IDX file (``.gz`` decompressed on the fly) into a tensor.

    uint8 files give ``uint8`` tensors; other types are converted to native byte order.

    Raises:
        DataError: missing file, wrong magic, unknown type code, a header whose sizes
            do not match the file, a payload above ``max_bytes``, or a truncated gzip.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {str(path)!r} does not exist")
    compressed = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[:2] != b"\x00\x00":
                raise DataError(f"{str(path)!r} is not an IDX file: magic bytes {magic!r}, expected 00 00 TT NN")
            code, ndim = magic[2], magic[3]
            if code not in IDX_TYPES:
                raise DataError(
                    f"{str(path)!r}: unknown IDX type code 0x{code:02x}; expected one of {[hex(c) for c in IDX_TYPES]}"
                )
            if ndim == 0:
                raise DataError(f"{str(path)!r}: IDX header declares 0 dimensions")
            raw_dims = handle.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{str(path)!r}: IDX header is truncated ({ndim} dimensions declared)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = IDX_TYPES[code]
            payload = int(np.prod(dims, dtype=np.float64)) * dtype.itemsize
            if payload > max_bytes:
                raise DataError(
                    f"{str(path)!r}: IDX header declares shape {dims} ({payload:,} bytes), "
                    f"more than the limit of {max_bytes:,} bytes; the file is corrupt"
                )
            if not compressed:
                size = path.stat().st_size
                if size != 4 + 4 * ndim + payload:
                    raise DataError(
                        f"{str(path)!r}: IDX header declares shape {dims} "
                        f"({4 + 4 * ndim + payload:,} bytes with the header) but the file has {size:,} bytes"
                    )
            data = handle.read(payload)
            if len(data) != payload:
                raise DataError(
                    f"{str(path)!r}: IDX data is truncated: expected {payload:,} bytes "
                    f"for shape {dims}, got {len(data):,}"
                )
            if compressed and handle.read(1):
                raise DataError(f"{str(path)!r}: more data than the IDX header's shape {dims} declares")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{str(path)!r} is a truncated or corrupt gzip file: {exc}") from None
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx_images(path: str | Path) -> torch.Tensor:
    """An IDX image file as ``uint8`` ``(N, 1, H, W)``."""
    images = read_idx(path)
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise DataError(
            f"{str(path)!r}: expected uint8 images of shape (N, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    return images.unsqueeze(1)


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """An IDX label file as ``int64`` ``(N,)``."""
    labels = read_idx(path)
    if labels.ndim != 1:
        raise DataError(f"{str(path)!r}: expected labels of shape (N,), got {tuple(labels.shape)}")
    return labels.to(torch.int64)
