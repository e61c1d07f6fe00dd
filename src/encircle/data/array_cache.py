"""Decoded datasets kept next to their sources, so a second load is one read per array.

A dataset decoded from pickles, a MATLAB file or thousands of JPEGs is stored as
``uint8`` images and ``int64`` labels in ``.npy`` files (no pickle) with a JSON record of
where it came from and which checksums were verified. Entries are keyed by a
*fingerprint* of the source files (resolved path, size and modification time) plus a
reader version, so a replaced or touched source, or a changed reader, is decoded again
instead of being confused with the old one.

Layout in ``folder`` for entry ``STEM`` (e.g. the split) and key ``KEY``::

    STEM-KEY.images.npy    uint8 (N, C, H, W)
    STEM-KEY.labels.npy    int64 (N,)
    STEM-KEY.json          the record; written last, so it marks a complete entry

Every file is written atomically (:mod:`encircle._io`); saving an entry removes the
entries of the same ``STEM`` under other keys. An entry may hold the record alone
(``arrays=False``) where the source is already a plain array file: then it only saves
hashing the source again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from encircle._io import atomic_open, atomic_write_json
from encircle.data.npy_header import read_file
from encircle.errors import DataError

log = logging.getLogger(__name__)


def fingerprint(files: Iterable[Path], extra: str = "") -> str:
    """16 hex digits naming ``files`` as they are now (path, size, mtime in ns) and ``extra``."""
    digest = hashlib.sha256(extra.encode())
    for path in files:
        info = path.stat()
        digest.update(f"\0{path.resolve()}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _paths(folder: Path, stem: str, key: str) -> tuple[Path, Path, Path]:
    base = f"{stem}-{key}"
    return folder / f"{base}.json", folder / f"{base}.images.npy", folder / f"{base}.labels.npy"


def load_record(folder: Path, stem: str, key: str) -> dict[str, Any] | None:
    """The record of entry ``stem``/``key``, or ``None`` when there is none (or it is unreadable or damaged)."""
    record, _, _ = _paths(folder, stem, key)
    if not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # json.loads recurses once per nesting level
        log.warning("ignoring the unreadable cache record %s: %s", record, exc)
        return None
    if not (isinstance(meta, dict) and meta.get("key") == key):
        return None
    count, shape = meta.get("count"), meta.get("shape")
    if not (isinstance(count, int) and isinstance(shape, list) and all(isinstance(side, int) for side in shape)):
        log.warning(
            "ignoring the damaged cache record %s: 'count' %r and 'shape' %r are not sizes", record, count, shape
        )
        return None
    return meta


def load_arrays(folder: Path, stem: str, key: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray] | None:
    """Record, images and labels of a complete entry, or ``None`` (a damaged entry is ignored).

    The arrays are read through :func:`~encircle.data.npy_header.read_file`, so a damaged
    ``.npy`` header or a truncated file is a damaged entry (decoded again by the caller),
    never an allocation of whatever size the header declares.
    """
    meta = load_record(folder, stem, key)
    if meta is None or not meta.get("arrays"):
        return None
    _, images_path, labels_path = _paths(folder, stem, key)
    try:
        images = read_file(images_path, repr(str(images_path)))
        labels = read_file(labels_path, repr(str(labels_path)))
    except (OSError, DataError) as exc:
        log.warning("ignoring the damaged cache entry %s-%s in %s: %s", stem, key, folder, exc)
        return None
    expected = (meta["count"], *meta["shape"])
    if images.dtype != np.uint8 or images.shape != expected or labels.dtype != np.int64 or labels.shape != expected[:1]:
        log.warning(
            "ignoring the cache entry %s-%s in %s: arrays %s %s / %s %s do not match its record %s",
            stem,
            key,
            folder,
            images.dtype,
            images.shape,
            labels.dtype,
            labels.shape,
            expected,
        )
        return None
    return meta, images, labels


def save(
    folder: Path,
    stem: str,
    key: str,
    meta: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    arrays: bool = True,
) -> None:
    """Store an entry (the record, plus the arrays when ``arrays``); drop older keys of ``stem``."""
    record, images_path, labels_path = _paths(folder, stem, key)
    folder.mkdir(parents=True, exist_ok=True)
    if arrays:
        for path, array in ((images_path, images), (labels_path, labels)):
            with atomic_open(path, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    full = {**meta, "key": key, "arrays": arrays, "count": int(images.shape[0]), "shape": list(images.shape[1:])}
    atomic_write_json(record, full)
    keep = {record.name, images_path.name, labels_path.name}
    for path in folder.glob(f"{stem}-*"):
        if path.name not in keep and path.name.startswith(f"{stem}-") and path.is_file():
            path.unlink(missing_ok=True)
    log.info("cached %s %s (%d samples) in %s", meta.get("name", ""), stem, images.shape[0], folder)
