"""A folder of PNG/JPEG images: one subfolder per class, or flat for one-class data.

Decoding uses Pillow (installed with the ``plot`` extra through matplotlib), imported only
here. This is the one source that decodes per file; the result is still one ``uint8``
tensor in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
#: Pillow modes read as one grayscale channel; every other mode is read as RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def load_image_folder(path: str | Path) -> ImageDataset:
    """Read every PNG/JPEG image under ``path``.

    Layouts:

    * ``path/CLASS/*.png``: one subfolder per class; sorted folder names become labels
      ``0..K-1`` (the mapping is written into ``source``);
    * ``path/*.png``: flat, one-class data, labels 0.

    Hidden files and folders (names starting with ``.``) are skipped. Grayscale images
    give one channel, colour images three (an alpha channel is dropped); every image
    must have the same size and channel count. Sample ids are paths relative to ``path``.

    Raises:
        DataError: Pillow missing, no images, a folder mixing class subfolders with loose
            images, an empty class folder, an unreadable image, or differing sizes or
            channel counts (naming the file).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib (the plot extra)
        raise DataError(
            "reading an image folder needs Pillow, which is not installed; "
            "install it with `pip install pillow` or `pip install 'encircle[plot]'`"
        ) from None
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = _images(root)
    if classes and loose:
        raise DataError(
            f"image folder {str(root)!r} mixes class subfolders ({', '.join(c.name for c in classes)}) with "
            f"{len(loose)} loose images such as {loose[0].name!r}; expected one layout or the other"
        )
    groups = [(i, _images(c)) for i, c in enumerate(classes)] if classes else [(0, loose)]
    for label, files in groups:
        if classes and not files:
            raise DataError(f"class folder {str(classes[label])!r} has no PNG/JPEG images; expected at least one")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    errors = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
    for label, files in groups:
        for file in files:
            try:
                with Image.open(file) as image:
                    mode = "L" if image.mode in GRAY_MODES else "RGB"
                    array = np.asarray(image.convert(mode), dtype=np.uint8)
            except errors as exc:
                raise DataError(f"cannot read image {str(file)!r}: {exc}") from None
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            if arrays and array.shape != arrays[0].shape:
                raise DataError(
                    f"image {str(file)!r} has shape {array.shape} (C, H, W), but {ids[0]!r} has "
                    f"{arrays[0].shape}; all images must share one size and channel count"
                )
            arrays.append(array)
            labels.append(label)
            ids.append(file.relative_to(root).as_posix())
    if not arrays:
        raise DataError(f"no PNG/JPEG images in {str(root)!r}; expected *.png/*.jpg files or one subfolder per class")
    mapping = ", ".join(f"{c.name}={i}" for i, c in enumerate(classes)) if classes else "one class"
    return ImageDataset(
        torch.from_numpy(np.stack(arrays)),
        torch.tensor(labels, dtype=torch.int64),
        root.name,
        f"{root} (image folder: {mapping})",
        tuple(ids),
    )


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
