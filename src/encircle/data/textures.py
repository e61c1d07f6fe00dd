"""Textures (the Describable Textures Dataset, DTD r1.0.1) as 32x32 test OOD data.

Cimpoi et al., CVPR 2014 (https://www.robots.ox.ac.uk/~vgg/data/dtd/): the archive
``dtd-r1.0.1.tar.gz`` extracts to ``dtd/`` with ``images/CLASS/*.jpg``: 5,640 JPEG
images of 47 texture classes, 120 each, of varying size (300x300 to 640x640).

Every image is converted to RGB and resized to 32x32 with Pillow's bilinear filter
(which antialiases when shrinking), as pytorch-ood's ``Textures`` with
``Resize((32, 32))`` does for the OOD benchmarks (the aspect ratio is not kept). The
labels are the class indices 0-46 in sorted folder order; OOD protocols map them to
``-1`` (:func:`encircle.data.ood_union`). Only the ``test`` split exists: DTD is used as
test OOD data only.

Pillow is imported lazily (``pip install 'encircle[data]'``; matplotlib brings it too).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from encircle.errors import DataError

log = logging.getLogger(__name__)

#: Folder the archive extracts to.
FOLDER = "dtd"
SIZE = 32
SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def read_textures(folder: str | Path, *, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image under ``folder/images/CLASS/`` resized to ``uint8 (N, 3, 32, 32)``.

    Args:
        folder: the extracted ``dtd`` folder.
        progress: show a tqdm bar; ``None`` shows one when stderr is a terminal.

    Returns:
        Images, labels ``int64 (N,)`` (class index in sorted folder order) and the
        sorted class names.

    Raises:
        DataError: Pillow missing, no ``images`` folder, no class folders, an empty
            class, or an unreadable image (naming the file).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib (the plot extra)
        raise DataError(
            "reading Textures needs Pillow, which is not installed; "
            "install it with `pip install pillow` or `pip install 'encircle[data]'`"
        ) from None
    images_dir = Path(folder) / "images"
    if not images_dir.is_dir():
        raise DataError(f"Textures folder {str(folder)!r} has no 'images' folder; expected dtd/images/CLASS/*.jpg")
    classes = sorted(p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Textures folder {str(images_dir)!r} has no class folders; expected images/CLASS/*.jpg")
    files: list[tuple[int, Path]] = []
    for label, directory in enumerate(classes):
        found = sorted(
            p
            for p in directory.iterdir()
            if p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        if not found:
            raise DataError(f"Textures class folder {str(directory)!r} has no JPEG/PNG images")
        files += [(label, p) for p in found]
    log.info("decoding %d Textures images from %s and resizing them to %dx%d", len(files), images_dir, SIZE, SIZE)
    images = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    errors = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm import tqdm

    for i, (_, path) in enumerate(tqdm(files, desc="Textures", unit="img", leave=False, disable=not show)):
        try:
            with Image.open(path) as image:
                small = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        except errors as exc:
            raise DataError(f"cannot read Textures image {str(path)!r}: {exc}") from None
        images[i] = np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)
    labels = np.array([label for label, _ in files], dtype=np.int64)
    return images, labels, [c.name for c in classes]
