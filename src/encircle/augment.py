"""Training-time augmentation applied to whole batches on the training device.

Only one transform so far: random translation by up to ``max_shift`` pixels, the
augmentation the CAC authors train their MNIST networks with (random crops
of a padded image). It runs on preprocessed network input, one gather for the whole
batch, so it costs about one extra copy of the batch and never goes back to the host
(a per-sample Python transform would dominate the step time of these small networks).

The offsets come from torch's global generator, which the training checkpoint saves:
a resumed run draws exactly the offsets an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from encircle.errors import ConfigError
from encircle.train_config import TrainConfig

Augmentation = Callable[[torch.Tensor], torch.Tensor]


def training_augmentation(config: TrainConfig) -> Augmentation | None:
    """The batch transform ``config.augment`` names, or ``None`` for ``"none"``."""
    if config.augment == "shift":
        return partial(random_shift, max_shift=config.augment_shift)
    if config.augment == "resized-crop":
        return partial(random_resized_crop, scale=(config.augment_min_scale, 1.0))
    return None


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate every image of the batch ``x`` (N, C, H, W) by its own random offset.

    Offsets ``(dy, dx)`` are uniform integers in ``[-max_shift, max_shift]``; pixels
    shifted in from outside the image repeat the nearest border pixel, which is the
    background for centred objects whatever the preprocessing did to its value (zero
    fill would paint a border after mean/std normalisation). ``max_shift = 0``
    returns ``x`` unchanged.
    """
    if max_shift < 0:
        raise ConfigError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x
    if x.ndim != 4:
        raise ConfigError(f"random_shift needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n)).to(x.device)
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H) rows of the padded image
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing on dims 0, 2, 3 puts the channel dim last: (N, H, W, C).
    shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2).contiguous(memory_format=_memory_format(x))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def random_resized_crop(
    x: torch.Tensor, scale: tuple[float, float] = (0.7, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> torch.Tensor:
    """Crop a random box from every image of ``x`` (N, C, H, W) and resize it back to H x W.

    The box covers a fraction ``s ~ U(scale)`` of the image area with aspect ratio
    ``r``, ``log r ~ U(log ratio)``, at a uniform position (torchvision's
    ``RandomResizedCrop``, which the CAC authors train with on MNIST and SVHN with
    scale (0.7, 1)). A side longer than the image is clamped to the image instead of
    torchvision's rejection sampling. The whole batch is one ``affine_grid`` +
    bilinear ``grid_sample`` on the device.
    """
    if x.ndim != 4:
        raise ConfigError(f"random_resized_crop needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ConfigError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    n = x.shape[0]
    uniform = torch.rand(4, n, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * uniform[0]
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniform[1]
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    # Box centres in grid_sample's [-1, 1] coordinates, keeping the box inside the image.
    centre_x = (2 * uniform[2] - 1) * (1 - width)
    centre_y = (2 * uniform[3] - 1) * (1 - height)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = width, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    cropped = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return cropped.contiguous(memory_format=_memory_format(x))
