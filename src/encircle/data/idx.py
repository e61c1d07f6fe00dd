"""IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

Layout (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code,
the number of dimensions ``ndim``, then ``ndim`` big-endian uint32 sizes and the data in
C order. The header is checked against the file size *before* anything large is
allocated, and compressed data is read in bounded chunks, so a corrupt or hostile header
cannot make the reader allocate more memory than the file really holds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
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
_CHUNK = 16 * 2**20


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header declares.

    Attributes:
        dtype: element type (big-endian as stored).
        shape: the declared dimensions.
        header_bytes: size of the header (``4 + 4 * ndim``).
    """

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    header_bytes: int

    @property
    def payload_bytes(self) -> int:
        """Bytes of data the header declares."""
        return int(np.prod(self.shape, dtype=np.float64)) * self.dtype.itemsize


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _open(path: Path) -> tuple[io.BufferedIOBase, bool]:
    if not path.is_file():
        raise DataError(f"IDX file {str(path)!r} does not exist")
    compressed = _is_gzip(path)
    if compressed:
        return gzip.GzipFile(path, "rb"), True
    return open(path, "rb"), False  # the caller closes it


def _parse_header(handle: io.BufferedIOBase, path: Path, max_bytes: int) -> IdxHeader:
    magic = handle.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise DataError(f"{str(path)!r} is not an IDX file: magic bytes {magic!r}, expected 00 00 TT NN")
    code, ndim = magic[2], magic[3]
    if code not in IDX_TYPES:
        raise DataError(
            f"{str(path)!r}: unknown IDX type code 0x{code:02x}; expected one of {[hex(c) for c in IDX_TYPES]}"
        )
    if ndim == 0:
        raise DataError(f"{str(path)!r}: IDX header declares 0 dimensions, expected at least 1")
    raw_dims = handle.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{str(path)!r}: IDX header is truncated: {ndim} dimensions declared, "
            f"expected {4 * ndim} bytes of sizes, got {len(raw_dims)}"
        )
    header = IdxHeader(IDX_TYPES[code], struct.unpack(f">{ndim}I", raw_dims), 4 + 4 * ndim)
    if header.payload_bytes > max_bytes:
        raise DataError(
            f"{str(path)!r}: IDX header declares shape {header.shape} ({header.payload_bytes:,} bytes), "
            f"more than the limit of {max_bytes:,} bytes; the file is corrupt"
        )
    return header


def read_idx_header(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> IdxHeader:
    """Read and check only the header of an IDX file (cheap, even for large files).

    For an uncompressed file the declared size is also checked against the file size.

    Raises:
        DataError: missing file, wrong magic, unknown type, truncated header, absurd size,
            or (uncompressed) a size that does not match the file.
    """
    path = Path(path)
    handle, compressed = _open(path)
    try:
        with handle:
            header = _parse_header(handle, path, max_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{str(path)!r} is a truncated or corrupt gzip file: {exc}") from None
    if not compressed:
        _check_raw_size(path, header)
    return header


def _check_raw_size(path: Path, header: IdxHeader) -> None:
    size = path.stat().st_size
    expected = header.header_bytes + header.payload_bytes
    if size != expected:
        raise DataError(
            f"{str(path)!r}: IDX header declares shape {header.shape} "
            f"({expected:,} bytes with the header) but the file has {size:,} bytes"
        )


def read_idx_with_sha256(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> tuple[torch.Tensor, str]:
    """Like :func:`read_idx`, also returning the sha256 of the (decompressed) IDX bytes.

    The digest of the decompressed content identifies the data whatever gzip settings
    a mirror used (Debian's Fashion-MNIST ``.gz`` files differ from the canonical ones
    byte for byte, but hold the same IDX content).
    """
    path = Path(path)
    digest = hashlib.sha256()
    handle, compressed = _open(path)
    try:
        with handle:
            header = _parse_header(handle, path, max_bytes)
            if not compressed:
                _check_raw_size(path, header)
            digest.update(bytes([0, 0, _code(header.dtype), len(header.shape)]))
            digest.update(struct.pack(f">{len(header.shape)}I", *header.shape))
            data = _read_exactly(handle, header, path, digest)
            if compressed and handle.read(1):
                raise DataError(
                    f"{str(path)!r}: more data than the IDX header's shape {header.shape} declares "
                    f"({header.payload_bytes:,} bytes)"
                )
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{str(path)!r} is a truncated or corrupt gzip file: {exc}") from None
    array = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
    native = array.astype(header.dtype.newbyteorder("="), copy=True)
    return torch.from_numpy(native), digest.hexdigest()


def _code(dtype: np.dtype[Any]) -> int:
    return next(code for code, known in IDX_TYPES.items() if known == dtype)


def _read_exactly(handle: io.BufferedIOBase, header: IdxHeader, path: Path, digest: Any) -> bytearray:
    """Read the declared payload in bounded chunks (memory grows only with real data)."""
    want = header.payload_bytes
    data = bytearray()
    while len(data) < want:
        chunk = handle.read(min(_CHUNK, want - len(data)))
        if not chunk:
            break
        data += chunk
        digest.update(chunk)
    if len(data) != want:
        raise DataError(
            f"{str(path)!r}: IDX data is truncated: expected {want:,} bytes for shape {header.shape}, got {len(data):,}"
        )
    return data


def read_idx(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> torch.Tensor:
    """Read an IDX file (gzip detected from its magic bytes) into a tensor.

    Args:
        path: the file, raw or gzip-compressed.
        max_bytes: largest payload accepted; a header declaring more is refused before
            anything is allocated.

    Returns:
        A tensor of the declared shape: ``uint8`` for type 0x08, otherwise the
        matching dtype in native byte order.

    Raises:
        DataError: missing file, wrong magic, unknown type code, a header whose sizes do
            not match the file, a payload above ``max_bytes``, or a truncated gzip.
    """
    return read_idx_with_sha256(path, max_bytes=max_bytes)[0]


def idx_images(array: torch.Tensor, path: str | Path) -> torch.Tensor:
    """An IDX image array ``(N, H, W)`` as ``uint8`` ``(N, 1, H, W)``."""
    if array.dtype != torch.uint8 or array.ndim != 3:
        raise DataError(
            f"{str(path)!r}: expected uint8 images of shape (N, H, W), got {array.dtype} {tuple(array.shape)}"
        )
    return array.unsqueeze(1)


def idx_labels(array: torch.Tensor, path: str | Path) -> torch.Tensor:
    """An IDX label array as ``int64`` ``(N,)``."""
    if array.ndim != 1 or array.is_floating_point():
        raise DataError(f"{str(path)!r}: expected integer labels of shape (N,), got {array.dtype} {tuple(array.shape)}")
    return array.to(torch.int64)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """An IDX image file as ``uint8`` ``(N, 1, H, W)``."""
    return idx_images(read_idx(path), path)


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """An IDX label file as ``int64`` ``(N,)``."""
    return idx_labels(read_idx(path), path)
