"""The one reader of NumPy ``.npy`` headers that every ``.npy`` consumer in encircle uses.

A ``.npy`` file starts with a magic string, a version and a Python dict literal giving
``descr`` (the dtype), ``fortran_order`` and ``shape``. ``numpy.load`` trusts it: it
allocates the declared array before reading (a header claiming terabytes is a
``MemoryError``), and NumPy's header parser lets the errors of ``ast`` and ``tokenize``
through on text that is not a dict literal (``tokenize.TokenError``, ``SyntaxError``,
``TypeError`` for a dict with unhashable keys, ``RecursionError`` for deeply nested
operators). :func:`read_header` turns every such header into a :class:`DataError` naming
the file, and refuses what no reader here can use (pickled objects, structured or
zero-size elements, negative sizes, more dimensions or bytes than NumPy can index)
before anything is allocated; :func:`check_fits`, :func:`read_array` (streams) and
:func:`read_file` (files) then hold the declared size against the bytes really there.

Used by :mod:`encircle.data.tabular` (``.npy``/``.npz`` input), :mod:`encircle.data.memmap`,
:mod:`encircle.data.tinyimages` and :mod:`encircle.data.array_cache`.
"""

from __future__ import annotations

import contextlib
import math
import os
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from encircle.errors import DataError

#: Largest array read whole from a ``.npy`` file or ``.npz`` member (bytes): a header
#: declaring more is refused as corrupt before anything is allocated. Data sets larger
#: than memory belong in a memmap dataset (:mod:`encircle.data.memmap`).
MAX_ARRAY_BYTES = 16 * 2**30
#: Most dimensions a NumPy array may have (``NPY_MAXDIMS``: 32 before NumPy 2, 64 since).
_MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
_CHUNK = 2**20


@dataclass(frozen=True)
class NpyHeader:
    """What a checked ``.npy`` header declares.

    Attributes:
        shape: the array's shape (non-negative sizes).
        dtype: the element type (numeric or other plain data, never objects).
        fortran_order: whether the data is stored column-major.
        offset: bytes from the start of the stream to the first data byte.
    """

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int

    @property
    def count(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def data_bytes(self) -> int:
        """Bytes of data the header declares."""
        return self.count * self.dtype.itemsize


def read_header(handle: IO[bytes], where: str) -> NpyHeader:
    """Read and check the header at the start of ``handle``; leaves it at the first data byte.

    Args:
        handle: a binary stream positioned at the magic string.
        where: how messages name the stream, e.g. ``"'x.npy'"``.

    Raises:
        DataError: not a ``.npy`` stream, a format version other than 1.0/2.0, a header
            that is not NumPy's dict, object (pickled) or structured/zero-size elements,
            a negative size, or a shape no NumPy array can have.
    """
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise DataError(
                f"{where}: .npy format version {version[0]}.{version[1]} is not supported; expected 1.0 or 2.0"
            )
    except (ValueError, SyntaxError, TypeError, RecursionError, tokenize.TokenError) as exc:
        # the header is a Python dict literal: NumPy parses it with ast.literal_eval (and,
        # for a header that fails, re-tokenizes it) and lets their errors through, all of
        # them only ever caused by the header's text here
        raise DataError(f"{where} is not a readable .npy file: bad header ({exc})") from None
    if dtype.hasobject:
        raise DataError(
            f"{where}: refused to load (object arrays need pickle, which is off): "
            "Object arrays cannot be loaded when allow_pickle=False"
        )
    if dtype.kind == "V" or dtype.itemsize == 0:
        raise DataError(f"{where}: expected numeric data (uint8 images or numeric features), got dtype {dtype}")
    if any(side < 0 for side in shape):
        raise DataError(f"{where}: .npy header declares a negative size in shape {shape}; the file is corrupt")
    # NumPy refuses a shape whose nonzero sizes multiply beyond its index type, even when
    # another size is 0, so that is checked here too (a reshape or np.empty would fail later)
    if len(shape) > _MAX_DIMS or math.prod(max(side, 1) for side in shape) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(
            f"{where}: .npy header declares shape {shape} {dtype}, which no array can have; the file is corrupt"
        )
    return NpyHeader(tuple(shape), dtype, fortran_order, handle.tell())


def check_fits(header: NpyHeader, where: str, available: int, max_bytes: int = MAX_ARRAY_BYTES) -> None:
    """Refuse a header declaring more than ``max_bytes`` or than the ``available`` bytes after it.

    Raises:
        DataError: either, naming the shape, the dtype and both byte counts.
    """
    needed = header.data_bytes
    if needed > max_bytes:
        raise DataError(
            f"{where}: .npy header declares shape {header.shape} {header.dtype} ({needed:,} bytes), more than the "
            f"limit of {max_bytes:,} bytes; the file is corrupt"
        )
    if needed > available:
        raise DataError(
            f"{where}: .npy header declares shape {header.shape} {header.dtype} ({needed:,} bytes of data) but "
            f"only {max(available, 0):,} bytes follow the header; the file is truncated or corrupt"
        )


def read_array(handle: IO[bytes], where: str, size: int, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """One array from a ``.npy`` stream of ``size`` bytes (header included), header checked first.

    For streams whose ``size`` may lie (a ``.npz`` member's comes from the zip
    directory): nothing is allocated until the header is known to fit both ``size`` and
    ``max_bytes``, and the data is then read in bounded chunks, so memory grows only with
    bytes really there.

    Raises:
        DataError: see :func:`read_header` and :func:`check_fits`; or the stream ends
            before the data does.
    """
    header = read_header(handle, where)
    check_fits(header, where, size - header.offset, max_bytes)
    needed = header.data_bytes
    data = bytearray()
    with contextlib.suppress(EOFError):  # zipfile's end of a member shorter than its directory entry says
        while len(data) < needed and (chunk := handle.read(min(_CHUNK, needed - len(data)))):
            data += chunk
    if len(data) < needed:
        raise _truncated(where, needed)
    return _shaped(np.frombuffer(data, dtype=header.dtype, count=header.count), header)


def read_file(path: Path, where: str, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """The array of a ``.npy`` file, read with one ``readinto`` into one allocation.

    Unlike a zip member's declared size, the size ``fstat`` reports is the bytes really
    there, so once the header fits it, allocating the array first cannot cost more than
    the file holds (and avoids :func:`read_array`'s chunk copies).

    Raises:
        DataError: see :func:`read_header` and :func:`check_fits`; or the file shrinks
            while it is read.
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        header = read_header(handle, where)
        check_fits(header, where, os.fstat(handle.fileno()).st_size - header.offset, max_bytes)
        flat = np.empty(header.count, dtype=header.dtype)
        view = flat.view(np.uint8).data
        done = 0
        while done < len(view) and (got := handle.readinto(view[done:])):
            done += got
    if done < len(view):
        raise _truncated(where, header.data_bytes)
    return _shaped(flat, header)


def _truncated(where: str, needed: int) -> DataError:
    return DataError(f"{where}: the data is truncated: it ends before the {needed:,} bytes its header declares")


def _shaped(flat: np.ndarray, header: NpyHeader) -> np.ndarray:
    """``flat`` (the data in file order) in the header's shape and order."""
    return flat.reshape(header.shape[::-1]).T if header.fortran_order else flat.reshape(header.shape)
