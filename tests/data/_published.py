"""Tiny copies of the published dataset files, in their real formats, for offline tests."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

catalog = importlib.import_module("encircle.data.catalog")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def serve(monkeypatch, name: str, base: str, served: Path, *, checks: str = "sha256") -> None:
    """Point ``name``'s published files at ``base``, with the checksums of the files in ``served``.

    ``checks``: ``"sha256"``, ``"md5"`` (no sha256, as TinyImages300k), ``"both"`` or
    ``"wrong"`` (a sha256 no file has). Downloads are allowed.
    """
    spec = catalog.DATASETS[name]
    files = {}
    for file in spec.files:
        path = served / file
        files[file] = catalog.Remote(
            base + file,
            sha256="0" * 64 if checks == "wrong" else sha256(path) if checks in ("sha256", "both") else None,
            md5=md5(path) if checks in ("md5", "both") else None,
        )
    monkeypatch.setitem(catalog.DATASETS, name, dataclasses.replace(spec, files=files))
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")


# -- Python 2 pickles, as the CIFAR-10 "python version" batches are written ------------


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str``: SHORT_BINSTRING or BINSTRING (read back as bytes)."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<I", len(data)) + data


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_uint8_array(array: np.ndarray) -> bytes:
    """A NumPy ``uint8`` C-order array exactly as Python 2 NumPy pickles it (protocol 2)."""
    assert array.dtype == np.uint8 and array.ndim == 2
    out = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b")
    out += b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
    out += b"(" + _py2_int(1) + _py2_int(array.shape[0]) + _py2_int(array.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
    out += b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
    out += b"\x89" + _py2_str(array.tobytes()) + b"tb"  # state (1, shape, dtype, False, raw)
    return out


def py2_batch_pickle(data: np.ndarray, labels: list[int], batch_label: bytes = b"training batch 1 of 5") -> bytes:
    """A CIFAR-10 batch: ``{'batch_label', 'labels', 'data', 'filenames'}`` pickled by Python 2."""
    out = b"\x80\x02}("
    out += _py2_str(b"batch_label") + _py2_str(batch_label)
    out += _py2_str(b"labels") + b"](" + b"".join(_py2_int(v) for v in labels) + b"e"
    out += _py2_str(b"data") + _py2_uint8_array(data)
    out += _py2_str(b"filenames") + b"](" + b"".join(_py2_str(f"img_{i}.png".encode()) for i in range(len(labels)))
    out += b"e"
    return out + b"u."


def cifar_batches(per_batch: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Batch name -> (data rows ``(n, 3072)``, labels), for the five train batches and the test batch."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: (rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), [(k + i) % 10 for i in range(per_batch)])
        for k, name in enumerate(names)
    }


def add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar_tarball(path: Path, batches: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    """``cifar-10-python.tar.gz`` with the real member names and pickle layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add_bytes(tar, "cifar-10-batches-py/readme.html", b"<html></html>")
        add_bytes(tar, "cifar-10-batches-py/batches.meta", b"\x80\x02}(U\x0bnum_vis" + _py2_int(3072) + b"u.")
        for name, (data, labels) in batches.items():
            add_bytes(tar, f"cifar-10-batches-py/{name}", py2_batch_pickle(data, labels))
    return path
