"""CIFAR-10 "python version" batches, read without running any pickled code.

Format (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): the archive
``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with ``data_batch_1`` ...
``data_batch_5`` (training, 10,000 images each), ``test_batch`` and ``batches.meta``.
Each batch is a Python 2 pickle of a dict with the keys ``b"data"`` (a NumPy ``uint8``
array ``(10000, 3072)``: per row 1024 red, 1024 green, then 1024 blue values of a 32x32
image, row-major), ``b"labels"`` (a list of ints 0-9), ``b"batch_label"`` and
``b"filenames"``.

The batches are not unpickled with :func:`pickle.load`: :class:`BatchUnpickler`
refuses every global except the three names a pickled NumPy array refers to
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``), and even
those are replaced by inert stand-ins that only record their arguments; the array is
then rebuilt with :func:`numpy.frombuffer` after its dtype (``u1``) and shape are
checked. No callable from the file is ever called, and before unpickling the opcodes
are walked once so that no length or memo index the file declares makes the unpickler
allocate more than the file holds; a hostile batch file can at worst be refused.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from encircle.errors import DataError

#: Folder the archive extracts to.
FOLDER = "cifar-10-batches-py"
#: Batch files of each split.
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
#: md5 of each batch file as published (the values torchvision's ``CIFAR10`` checks).
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPE = (3, 32, 32)
_ROW = 3 * 32 * 32
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


class _Stub:
    """An inert stand-in for a NumPy global: it records the arguments it is given."""

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind, self.args, self.state = kind, args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _reconstruct(*args: Any) -> _Stub:
    return _Stub("ndarray", *args)


def _dtype(*args: Any) -> _Stub:
    return _Stub("dtype", *args)


class BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, ints and byte strings; a NumPy array becomes a stub.

    ``find_class`` returns inert stand-ins for the three globals of a pickled NumPy
    array and raises :class:`pickle.UnpicklingError` for anything else.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return _Stub("ndarray-class")
        if module == "numpy" and name == "dtype":
            return _dtype
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")


def _array(stub: Any, where: str) -> np.ndarray:
    """The ``uint8`` array a stub describes, after checking every part of it."""
    bad = DataError(f"{where}: b'data' is not a pickled uint8 NumPy array")
    if not (isinstance(stub, _Stub) and stub.kind == "ndarray" and stub.args):
        raise bad
    if not (isinstance(stub.args[0], _Stub) and stub.args[0].kind == "ndarray-class"):
        raise bad
    state = stub.state
    if not (isinstance(state, tuple) and len(state) == 5):
        raise bad
    _, shape, dtype, fortran, raw = state
    dtype_ok = isinstance(dtype, _Stub) and dtype.kind == "dtype" and dtype.args[:1] in ((b"u1",), ("u1",))
    shape_ok = isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)
    if not (dtype_ok and shape_ok and isinstance(raw, bytes) and not fortran):
        raise bad
    if int(np.prod(shape, dtype=np.int64)) != len(raw):
        raise DataError(f"{where}: b'data' declares shape {shape} but holds {len(raw):,} bytes")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _check_opcodes(raw: bytes, where: str) -> None:
    """Walk the pickle's opcodes before unpickling, so that no size it declares is allocated unread.

    The C unpickler allocates a counted string or bytes (``BINBYTES8``, ``BYTEARRAY8``,
    ...) before reading it, and grows its memo to twice any index a ``PUT`` names, so a
    few hostile bytes can ask for exabytes (``MemoryError``, ``OverflowError``) whatever
    the file holds. :func:`pickletools.genops` reads every argument from the bytes
    themselves (a length beyond the end is a ``ValueError``) and builds no object, only
    the arguments it has read; memo indices must come in order, as every pickler writes
    them, so the memo stays within twice the number of ``PUT`` opcodes in the file.
    """
    stored = 0
    try:
        for opcode, arg, position in pickletools.genops(raw):
            if opcode.name == "MEMOIZE":
                stored += 1
            elif opcode.name in _PUTS and isinstance(arg, int):  # always: the memo index
                if arg > stored:
                    raise DataError(
                        f"{where} cannot be read safely: {opcode.name} at byte {position} stores memo entry "
                        f"{arg:,} after only {stored:,} entries; the file is corrupt"
                    )
                if arg == stored:
                    stored += 1
    except ValueError as exc:  # pickletools' only error for bytes that are not a complete pickle
        raise DataError(f"{where} cannot be read safely: {exc}") from None


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """One batch file: images ``uint8 (N, 3, 32, 32)``, labels ``int64 (N,)`` and the file's md5.

    Raises:
        DataError: the file is missing, not such a pickle, refers to any other global,
            or its images and labels do not agree (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {str(path)!r} does not exist")
    raw = path.read_bytes()
    where = f"CIFAR-10 batch {str(path)!r}"
    _check_opcodes(raw, where)
    try:
        batch = BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{where} cannot be read safely: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{where}: expected a dict with b'data' and b'labels', got {keys}")
    data = _array(batch[b"data"], where)
    labels = batch[b"labels"]
    if data.ndim != 2 or data.shape[1] != _ROW:
        raise DataError(f"{where}: b'data' has shape {data.shape}, expected (N, {_ROW})")
    if not (isinstance(labels, list) and all(isinstance(v, int) and 0 <= v < 10 for v in labels)):
        raise DataError(f"{where}: b'labels' must be a list of ints 0-9")
    if len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but {len(labels)} labels")
    return (
        data.reshape(-1, *SHAPE),
        np.asarray(labels, dtype=np.int64),
        hashlib.md5(raw, usedforsecurity=False).hexdigest(),
    )


def read_cifar10(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ``split`` (``"train"`` or ``"test"``) of an extracted ``cifar-10-batches-py`` folder.

    Returns:
        Images ``uint8 (N, 3, 32, 32)``, labels ``int64 (N,)`` (0-9 in :data:`CLASSES`
        order) and whether every batch file has its published md5.
    """
    if split not in BATCHES:
        raise DataError(f"unknown CIFAR-10 split {split!r}; expected one of {', '.join(BATCHES)}")
    parts = [read_batch(Path(folder) / name) for name in BATCHES[split]]
    canonical = all(md5 == BATCH_MD5[name] for name, (_, _, md5) in zip(BATCHES[split], parts, strict=True))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), canonical
