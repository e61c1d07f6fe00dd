"""A folder of PNG/JPEG images: one subfolder per class, or flat for one-class data.

Decoding uses Pillow (installed with the ``plot`` extra through matplotlib), imported
only here. This is the one source that decodes per file; the result is still one
``uint8`` tensor in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from encircle.data.dataset import ImageDataset
from encircle.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16"}


def load_image_folder(path: str | Path) -> ImageDataset:
    """Read every image under ``path``; subfolder names (sorted) become classes ``0..K-1``.

    All images must have the same size and the same number of channels (grayscale ->
    1, RGB -> 3; an alpha channel is dropped).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with the plot extra
        raise DataError("reading image folders needs Pillow: pip install 'encircle[plot]'") from None
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    groups = [(i, sorted(_images(c))) for i, c in enumerate(classes)] if classes else [(0, sorted(_images(root)))]
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    for label, files in groups:
        for file in files:
            try:
                with Image.open(file) as image:
                    mode = "L" if image.mode in GRAY_MODES else "RGB"
                    array = np.asarray(image.convert(mode), dtype=np.uint8)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise DataError(f"cannot read image {str(file)!r}: {exc}") from None
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            if arrays and array.shape != arrays[0].shape:
                raise DataError(
                    f"image {str(file)!r} has shape {array.shape} (C, H, W), but the first image "
                    f"has {arrays[0].shape}; all images must share one size and channel count"
                )
            arrays.append(array)
            labels.append(label)
            ids.append(str(file.relative_to(root)))
    if not arrays:
        raise DataError(f"no PNG/JPEG images in {str(root)!r}")
    return ImageDataset(
        torch.from_numpy(np.stack(arrays)),
        torch.tensor(labels, dtype=torch.int64),
        root.name,
        f"{root} (image folder, {len(classes) or 1} classes)",
        tuple(ids),
    )


def _images(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
