"""A small, bounds-checked reader for numeric arrays in MATLAB v5 ``.mat`` files.

Written by hand for safety: SciPy's ``loadmat`` parses the file in C and a damaged or
hostile file can crash the whole interpreter there (a fuzzed SVHN file segfaulted it),
which no ``try`` can catch. This reader checks every size against the bytes that are
really there before it slices or allocates, and raises :class:`DataError` otherwise.

It reads what datasets such as SVHN use (MATLAB "Level 5 MAT-File Format"):

* the 128-byte header, little-endian (``IM``), version ``0x0100``;
* top-level ``miMATRIX`` elements, plain or inside ``miCOMPRESSED`` (zlib) elements,
  inflated with a size cap so a small file cannot expand without bound;
* real numeric arrays (double, single, (u)int8-64) of any rank, whose data may be
  stored in a smaller type than their class (MATLAB does this for small integers);
  column-major data is returned in NumPy's C order with the same shape.

Other variables (cells, structs, strings, sparse or complex arrays) are skipped unless
asked for by name, which is then an error naming the variable.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from encircle.errors import DataError

MI_MATRIX, MI_COMPRESSED = 14, 15
#: ``mi*`` storage types -> NumPy dtype (little-endian).
STORAGE = {1: "<i1", 2: "<u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8", 12: "<i8", 13: "<u8"}
#: ``mx*`` array classes -> NumPy dtype of the array.
CLASSES = {6: "<f8", 7: "<f4", 8: "<i1", 9: "<u1", 10: "<i2", 11: "<u2", 12: "<i4", 13: "<u4", 14: "<i8", 15: "<u8"}
FLAG_COMPLEX = 0x800
#: Largest inflated variable accepted (the largest SVHN split, "extra", is 1.6 GB).
MAX_VARIABLE_BYTES = 4 * 2**30


def read_mat_arrays(path: str | Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The numeric arrays called ``names`` in the MATLAB v5 file ``path`` (those present).

    Raises:
        DataError: the file is missing, not a little-endian MATLAB v5 file, truncated,
            declares sizes its bytes do not hold, or a requested variable is not a real
            numeric array.
    """
    path = Path(path)
    where = f"{str(path)!r}"
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(data) < 128 or bytes(data[124:126]) not in (b"\x00\x01", b"\x01\x00"):
        raise DataError(f"{where} is not a MATLAB v5 file (no 128-byte v5 header)")
    if bytes(data[126:128]) != b"IM":
        raise DataError(
            f"{where}: only little-endian MATLAB v5 files are supported (endian mark {bytes(data[126:128])!r})"
        )
    found: dict[str, np.ndarray] = {}
    pos = 128
    while pos < len(data):
        kind, body, end = _element(data, pos, where)
        if kind == MI_COMPRESSED:
            matrix = memoryview(_inflate(data[body:end], where))
            kind_inner, inner_body, inner_end = _element(matrix, 0, where)
            if kind_inner == MI_MATRIX:
                _variable(matrix[inner_body:inner_end], names, found, where)
            pos = end  # a compressed element is not padded
        else:
            if kind == MI_MATRIX:
                _variable(data[body:end], names, found, where)
            pos = end + (-end % 8)
    return found


def _element(buf: memoryview, pos: int, where: str) -> tuple[int, int, int]:
    """``(type, body start, body end)`` of the data element whose tag starts at ``pos``."""
    if pos + 8 > len(buf):
        raise DataError(f"{where} is truncated: a data element tag at byte {pos} is cut off")
    first, second = np.frombuffer(buf[pos : pos + 8], dtype="<u4").tolist()
    if first >> 16:  # small data element: type and size in one word, data in the next four bytes
        kind, nbytes, body = first & 0xFFFF, first >> 16, pos + 4
        if nbytes > 4:
            raise DataError(f"{where} is corrupt: a small data element at byte {pos} declares {nbytes} bytes")
    else:
        kind, nbytes, body = first, second, pos + 8
    if body + nbytes > len(buf):
        raise DataError(
            f"{where} is truncated or corrupt: a data element at byte {pos} declares {nbytes} bytes "
            f"but only {len(buf) - body} follow"
        )
    return kind, body, body + nbytes


def _inflate(compressed: memoryview, where: str) -> bytes:
    """Inflate one ``miCOMPRESSED`` element, refusing more than ``MAX_VARIABLE_BYTES``."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, MAX_VARIABLE_BYTES + 8)
    except zlib.error as exc:
        raise DataError(f"{where} is corrupt: a compressed variable does not inflate ({exc})") from None
    if inflater.unconsumed_tail:
        raise DataError(f"{where}: a compressed variable inflates to more than {MAX_VARIABLE_BYTES} bytes")
    return out


def _variable(matrix: memoryview, names: tuple[str, ...], found: dict[str, np.ndarray], where: str) -> None:
    """Parse one ``miMATRIX`` body; keep it in ``found`` when its name is requested."""
    parts: list[tuple[int, memoryview]] = []
    pos = 0
    while pos < len(matrix) and len(parts) < 4:
        kind, body, end = _element(matrix, pos, where)
        parts.append((kind, matrix[body:end]))
        pos = end + (-end % 8)
    if len(parts) < 3:
        raise DataError(f"{where} is corrupt: a variable has {len(parts)} of its 3 header parts")
    (_, flags), (_, dims_raw), (_, name_raw) = parts[:3]
    name = bytes(name_raw).decode("ascii", errors="replace")
    if name not in names:
        return
    if len(flags) < 4 or len(dims_raw) % 4:
        raise DataError(f"{where}: variable {name!r} has malformed array flags or dimensions")
    flag_word = int(np.frombuffer(flags[:4], dtype="<u4")[0])
    dtype = CLASSES.get(flag_word & 0xFF)
    if dtype is None or flag_word & FLAG_COMPLEX or len(parts) < 4:
        raise DataError(f"{where}: variable {name!r} is not a real numeric array")
    dims = np.frombuffer(dims_raw, dtype="<i4").tolist()
    if len(dims) < 2 or min(dims) < 0:
        raise DataError(f"{where}: variable {name!r} has dimensions {dims}")
    storage_kind, values = parts[3]
    storage = STORAGE.get(storage_kind)
    count = math.prod(dims)
    if storage is None or len(values) != count * np.dtype(storage).itemsize:
        raise DataError(
            f"{where} is corrupt: variable {name!r} of shape {tuple(dims)} holds {len(values)} bytes "
            f"of storage type {storage_kind}"
        )
    array = np.frombuffer(values, dtype=storage).astype(dtype)
    found[name] = array.reshape(dims, order="F")
