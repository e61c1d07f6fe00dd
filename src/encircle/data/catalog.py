"""Datasets published as files: CIFAR-10, SVHN, Textures (DTD) and TinyImages300k.

Each entry of :data:`DATASETS` names the published files (URL, sha256, and the md5
upstream lists), which file holds which split, and the reader. A split is resolved in
this order (the first hit wins):

1. ``root`` and ``root/NAME`` (``--set data.root=DIR``), then the cache
   ``data_home()/NAME`` (``$ENCIRCLE_DATA``), then ``/usr/share/datasets/NAME``; in each,
   an already extracted folder (``cifar-10-batches-py/``, ``dtd/``) is taken before the
   published file (``cifar-10-python.tar.gz``, ``train_32x32.mat``, ...);
2. a download of the published file into the cache, verified by checksum (skipped
   offline; see :func:`encircle.data.registry.load_dataset`).

An archive is extracted safely (:mod:`encircle.data.archive`) into
``data_home()/NAME/ARCHIVE-FINGERPRINT/``. The decoded arrays are then cached in
``data_home()/NAME/arrays/`` (:mod:`encircle.data.array_cache`), keyed by the source
files' fingerprint, so later loads are one read; the checksum of a local file is
computed once, on that first load, and remembered there. A local file whose checksum
differs from the published one is still used, with a warning, and ``source`` says so.

Published checksums (where each was found):

* ``cifar-10-python.tar.gz``: sha256 from Keras' ``cifar10.load_data``
  (``file_hash``); md5 from torchvision's ``CIFAR10``; 170,498,071 bytes.
* ``train_32x32.mat`` / ``test_32x32.mat``: sha256 and sizes from TensorFlow Datasets'
  ``url_checksums/svhn_cropped.txt``; md5 from torchvision's ``SVHN``.
* ``dtd-r1.0.1.tar.gz``: sha256 and size from TensorFlow Datasets'
  ``url_checksums/dtd.txt``; md5 from torchvision's ``DTD`` / pytorch-ood's ``Textures``.
* ``300K_random_images.npy``: **no published sha256 was found**; the md5 that
  pytorch-ood's ``TinyImages300k`` checks is verified instead.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle.data import array_cache
from encircle.data.archive import extract_archive
from encircle.data.cifar import FOLDER as CIFAR_FOLDER
from encircle.data.cifar import read_cifar10
from encircle.data.dataset import ImageDataset
from encircle.data.download import download, file_digests
from encircle.data.svhn import FILES as SVHN_FILES
from encircle.data.svhn import read_svhn
from encircle.data.textures import FOLDER as DTD_FOLDER
from encircle.data.textures import read_textures
from encircle.data.tinyimages import FILE as TINY_FILE
from encircle.data.tinyimages import read_tinyimages
from encircle.errors import DataError, DownloadError

log = logging.getLogger(__name__)

#: Bump when a reader's output changes, so cached arrays are decoded again.
READER_VERSION = "1"
#: A reader: (path of the folder or file, split) -> (images, labels, canonical or None).
Reader = Callable[[Path, str], tuple[np.ndarray, np.ndarray, bool | None]]
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


@dataclass(frozen=True)
class Remote:
    """A published file.

    Attributes:
        url: where to download it.
        sha256: its sha256, or ``None`` where none is published (then ``md5`` is checked).
        md5: the md5 upstream publishes (torchvision, pytorch-ood), checked as well.
        size: its size in bytes, for the docs and messages.
    """

    url: str
    sha256: str | None
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class FileDataset:
    """A dataset published as one file per split (or one archive for all splits).

    Attributes:
        name: registry name.
        splits: the splits it has.
        files: published file name -> :class:`Remote`.
        split_file: split -> the published file that holds it.
        folder: for archives, the folder (inside the archive, and as users keep it
            extracted) that the reader reads; ``None`` for plain files.
        read: the reader.
        system_dirs: folders where system packages install the files.
        cache_arrays: keep decoded arrays in the cache (not for sources that are
            already plain arrays).
    """

    name: str
    splits: tuple[str, ...]
    files: Mapping[str, Remote]
    split_file: Mapping[str, str]
    read: Reader
    folder: str | None = None
    system_dirs: tuple[str, ...] = ()
    cache_arrays: bool = True


@dataclass(frozen=True)
class Located:
    """Where a split was found: ``path`` is the extracted folder or the published file."""

    kind: str  # "root", "cache", "system" or "download"
    path: Path
    is_folder: bool


def _read_cifar(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, bool | None]:
    return read_cifar10(path, split)


def _read_svhn(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, bool | None]:
    return (*read_svhn(path), None)


def _read_textures(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, bool | None]:
    images, labels, _ = read_textures(path)
    return images, labels, None


def _read_tiny(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, bool | None]:
    return (*read_tinyimages(path), None)


DATASETS: dict[str, FileDataset] = {
    "cifar10": FileDataset(
        "cifar10",
        splits=("train", "test"),
        files={
            "cifar-10-python.tar.gz": Remote(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                md5="c58f30108f718f92721af3b95e74349a",
                size=170_498_071,
            )
        },
        split_file={"train": "cifar-10-python.tar.gz", "test": "cifar-10-python.tar.gz"},
        read=_read_cifar,
        folder=CIFAR_FOLDER,
        system_dirs=("/usr/share/datasets/cifar10",),
    ),
    "svhn": FileDataset(
        "svhn",
        splits=("train", "test"),
        files={
            SVHN_FILES["train"]: Remote(
                "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                sha256="435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                md5="e26dedcc434d2e4c54c9b2d4a06d8373",
                size=182_040_794,
            ),
            SVHN_FILES["test"]: Remote(
                "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                sha256="cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                md5="eb5a983be6a315427106f1b164d9cef3",
                size=64_275_384,
            ),
        },
        split_file=SVHN_FILES,
        read=_read_svhn,
        system_dirs=("/usr/share/datasets/svhn",),
    ),
    "textures": FileDataset(
        "textures",
        splits=("test",),
        files={
            "dtd-r1.0.1.tar.gz": Remote(
                "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                sha256="e42855a52a4950a3b59612834602aa253914755c95b0cff9ead6d07395f8e205",
                md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                size=625_239_812,
            )
        },
        split_file={"test": "dtd-r1.0.1.tar.gz"},
        read=_read_textures,
        folder=DTD_FOLDER,
        system_dirs=("/usr/share/datasets/textures",),
    ),
    "tinyimages300k": FileDataset(
        "tinyimages300k",
        splits=("train",),
        files={
            # No sha256 is published for this file; the md5 pytorch-ood checks is verified instead.
            TINY_FILE: Remote(
                "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
                sha256=None,
                md5="64ca64357de98351f28454274a112dc3",
            )
        },
        split_file={"train": TINY_FILE},
        read=_read_tiny,
        system_dirs=("/usr/share/datasets/tinyimages300k",),
        cache_arrays=False,
    ),
}


def check_split(spec: FileDataset, split: str) -> None:
    """Raise :class:`DataError` when ``spec`` has no split ``split``."""
    if split not in spec.splits:
        raise DataError(f"unknown split {split!r} of {spec.name}; expected one of {', '.join(spec.splits)}")


def places(spec: FileDataset, root: str | Path | None, home: Path) -> list[tuple[str, Path]]:
    """The folders looked in, in order, with their kind."""
    found = []
    if root is not None:
        found += [("root", Path(root)), ("root", Path(root) / spec.name)]
    found.append(("cache", home / spec.name))
    found += [("system", Path(d)) for d in spec.system_dirs]
    return found


def locate(spec: FileDataset, split: str, root: str | Path | None, home: Path) -> Located | None:
    """The first extracted folder or published file of ``split`` in :func:`places`; never downloads."""
    name = spec.split_file[split]
    for kind, place in places(spec, root, home):
        if spec.folder is not None and (place / spec.folder).is_dir():
            return Located(kind, place / spec.folder, True)
        if (place / name).is_file():
            return Located(kind, place / name, False)
    return None


def fetch(spec: FileDataset, split: str, home: Path, reachable: Callable[[str], str | None]) -> Located:
    """Download the published file of ``split`` into the cache, checked by its checksums.

    Args:
        reachable: returns why a URL's host cannot be reached, or ``None``.

    Raises:
        DownloadError: the host is unreachable, the download failed or the checksum
            did not match (the file is then removed).
    """
    name = spec.split_file[split]
    remote = spec.files[name]
    reason = reachable(remote.url)
    if reason is not None:
        raise DownloadError(f"{remote.url}: unreachable ({reason})")
    dest = home / spec.name / name
    log.info("%s %s: not found locally; downloading %s into %s", spec.name, split, remote.url, dest)
    return Located("download", download(remote.url, dest, remote.sha256, md5=remote.md5), False)


def load(spec: FileDataset, split: str, found: Located, home: Path) -> ImageDataset:
    """Decode ``split`` from where it was found (or take it from the array cache)."""
    cache = home / spec.name / "arrays"
    key = _key(spec, split, found)
    if spec.cache_arrays:
        hit = array_cache.load_arrays(cache, split, key)
        if hit is not None and _complete(hit[0]):
            log.info("%s %s: from the array cache (%s)", spec.name, split, hit[0]["source"])
            return _dataset(spec, *hit)
    record = array_cache.load_record(cache, split, key)
    record = record if record is not None and _complete(record) else None
    check = record if record is not None else _check(spec, found)
    data = found.path if found.is_folder or spec.folder is None else _extracted(spec, found.path, home) / spec.folder
    if spec.folder is not None and not data.is_dir():
        raise DataError(f"{spec.name}: the archive {str(found.path)!r} has no folder {spec.folder!r}")
    images, labels, folder_canonical = spec.read(data, split)
    meta: dict[str, Any] | None = record
    if meta is None:
        canonical = folder_canonical if found.is_folder else check["canonical"]
        meta = {
            "name": spec.name,
            "split": split,
            "source": _source(spec, found, canonical, check.get("note", "")),
            "canonical": canonical,
            "sha256": check["sha256"],
        }
    if record is None or spec.cache_arrays:
        array_cache.save(cache, split, key, meta, images, labels, arrays=spec.cache_arrays)
    return _dataset(spec, meta, images, labels)


def _complete(meta: Mapping[str, Any]) -> bool:
    """Whether a cache record has what :func:`load` reads from it (a damaged one is rebuilt)."""
    return isinstance(meta.get("source"), str) and isinstance(meta.get("sha256"), dict) and "canonical" in meta


def _key(spec: FileDataset, split: str, found: Located) -> str:
    """The array-cache key of ``split`` read from ``found`` as it is now."""
    return array_cache.fingerprint(_source_files(found), f"{spec.name}\0{split}\0{READER_VERSION}")


def _dataset(spec: FileDataset, meta: Mapping[str, Any], images: np.ndarray, labels: np.ndarray) -> ImageDataset:
    if meta.get("canonical") is False:
        log.warning("%s %s: %s", spec.name, meta.get("split", ""), meta["source"])
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), spec.name, meta["source"])


def _source_files(found: Located) -> list[Path]:
    if not found.is_folder:
        return [found.path]
    return sorted(p for p in found.path.rglob("*") if p.is_file())


def _check(spec: FileDataset, found: Located) -> dict[str, Any]:
    """Checksums of a published file against the catalog (a folder is checked by its reader)."""
    if found.is_folder:
        return {"canonical": None, "sha256": {}}
    remote = spec.files[found.path.name]
    expected = {a: d for a, d in (("sha256", remote.sha256), ("md5", remote.md5)) if d is not None}
    downloaded = found.kind == "download"
    if downloaded:  # verified while downloading; a file published with an md5 only gets its sha256 recorded
        got = {**expected, **(file_digests(found.path, ("sha256",)) if "sha256" not in expected else {})}
    else:
        log.info("%s: computing the checksums of %s (once; remembered in the cache)", spec.name, found.path)
        got = file_digests(found.path, tuple({"sha256", *expected}))
    canonical = all(got[a] == d for a, d in expected.items())
    if canonical:
        note = ("downloaded, " if downloaded else "") + " and ".join(expected) + " verified"
        note += "" if remote.sha256 else " (no sha256 is published)"
    else:
        note = "not the published file: " + ", ".join(f"{a} {got[a]} (expected {d})" for a, d in expected.items())
    return {"canonical": canonical, "sha256": {found.path.name: got["sha256"]} if "sha256" in got else {}, "note": note}


def _source(spec: FileDataset, found: Located, canonical: bool | None, note: str) -> str:
    if found.is_folder:
        if canonical is None:
            note = "extracted folder; not verified: no checksums are published for its files"
        else:
            verdict = "checksums of its files verified" if canonical else "not the published files"
            note = f"extracted folder; {verdict}"
    kind = "cache" if found.kind == "download" else found.kind  # the same key and words on later loads
    return f"{spec.name}: {found.path} ({kind}; {note})"


def _extracted(spec: FileDataset, archive: Path, home: Path) -> Path:
    """The safe extraction of ``archive`` in the cache, made on first use; older ones are removed."""
    stem = next((archive.name[: -len(s)] for s in _ARCHIVE_SUFFIXES if archive.name.endswith(s)), archive.name)
    target = home / spec.name / f"{stem}-{array_cache.fingerprint([archive])}"
    if not target.is_dir():
        log.info("%s: extracting %s into %s", spec.name, archive, target)
        extract_archive(archive, target)
        stale = re.compile(re.escape(stem) + "-[0-9a-f]{16}")
        for old in target.parent.iterdir():
            if old != target and old.is_dir() and stale.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
    return target


def missing_message(spec: FileDataset, split: str, root: str | Path | None, home: Path, failures: list[str]) -> str:
    """What :func:`encircle.data.registry.load_dataset` says when ``split`` is nowhere."""
    name = spec.split_file[split]
    remote = spec.files[name]
    checksum = f"sha256 {remote.sha256}" if remote.sha256 else f"md5 {remote.md5}"
    folder = f" or its extracted folder {spec.folder}/" if spec.folder else ""
    looked = "; ".join(f"{kind} {path}" for kind, path in places(spec, root, home))
    return (
        f"dataset {spec.name!r} ({split}) not found; looked in: {looked}; "
        f"{'; '.join(failures) or 'no download tried'}. "
        f"Supply {name} ({remote.url}, {checksum}){folder} in a folder given with --set data.root=DIR on the "
        f"command line (root=DIR in Python), or put the file at {home / spec.name / name}"
    )


def describe(spec: FileDataset, split: str, root: str | Path | None, home: Path) -> dict[str, Any]:
    """A ``describe_datasets`` row for ``split``; never downloads, decodes or writes.

    Size and shape are known once the split was loaded (from the cache record);
    before that the published file's sha256 is computed here.
    """
    found = locate(spec, split, root, home)
    if found is None:
        raise DataError(f"dataset {spec.name!r} ({split}) not found locally (describe_datasets never downloads)")
    key = _key(spec, split, found)
    row: dict[str, Any] = {"resolved_from": str(found.path), "kind": found.kind}
    meta = array_cache.load_record(home / spec.name / "arrays", split, key)
    if meta is not None:
        row.update(size=meta["count"], shape=meta["shape"], canonical=meta["canonical"], sha256=meta["sha256"])
        row["source"] = meta["source"]
        return row
    check = _check(spec, found)
    canonical = None if found.is_folder else check["canonical"]
    row.update(
        source=_source(spec, found, canonical, check.get("note", "")) + "; not loaded yet",
        canonical=canonical,
        sha256=check["sha256"],
    )
    return row
