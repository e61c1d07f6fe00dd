"""OGNet's networks (Zaheer et al., "Old is Gold", CVPR 2020, Sec. 3 and Fig. 2).

* Generator ``G``: a convolutional autoencoder. Encoder: four valid (unpadded) 5x5
  convolutions with ``w, 2w, 4w, 8w`` filters; decoder: four 5x5 transposed
  convolutions back to ``4w, 2w, w, C`` channels and a tanh, so ``G`` maps an image in
  ``[-1, 1]`` to one of the same size in ``[-1, 1]``. Every layer but the last has
  BatchNorm and ReLU; as in the authors' code, the third and fourth encoder blocks apply
  ReLU *before* BatchNorm. Four valid 5x5 convolutions remove 16 pixels, so ``G`` needs
  images of at least 17x17.
* Discriminator ``D``: four 5x5 convolutions with stride 2 and padding 2 (``w, 2w, 4w,
  8w`` filters; BatchNorm + ReLU, the last ReLU only), then a linear layer to one
  logit. The paper's ``D`` ends in a sigmoid; here ``D`` returns the logit and the
  losses use ``binary_cross_entropy_with_logits``, the same function computed stably,
  with ``D(x) = sigmoid(logit)``.

The paper uses ``w = 64`` and 45x45 grayscale inputs (45 -> 23 -> 12 -> 6 -> 3 in ``D``,
so the linear layer sees ``512 * 3 * 3 = 4608`` features). :class:`OGNetNetworks` holds
the pair as one :class:`~encircle.models.base.Backbone` whose output is the test-time
function ``logit D(G(x))``. Registered names: ``ognet`` (the paper's widths, ``w = 64``;
about 9 GMAC per 45x45 image in ``G``), ``ognet-small`` (``w = 8``, 64x fewer
multiply-adds in ``G``: a CPU-sized variant), and the two halves ``ognet-generator`` and
``ognet-discriminator``.
"""

from __future__ import annotations

import torch
from torch import nn

from encircle.errors import ConfigError, DataError
from encircle.models.base import Backbone
from encircle.models.registry import register_model

#: side of the paper's input images
PAPER_IMAGE_SIZE = 45
#: the generator's four valid 5x5 convolutions shrink each side by 16 pixels
MIN_IMAGE_SIZE = 17
#: base width of the paper's networks and of ``ognet-small``
PAPER_WIDTH = 64
SMALL_WIDTH = 8


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"OGNet {name} must be >= 1, got {value}")


def _check_spatial(who: str, x: torch.Tensor, channels: int) -> None:
    """``x`` must be ``(N, channels, H, W)`` with ``H, W >= MIN_IMAGE_SIZE``."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise DataError(f"{who} expects images of shape (N, {channels}, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < MIN_IMAGE_SIZE:
        raise DataError(
            f"{who} needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels (its four valid 5x5 "
            f"convolutions remove 16), got {x.shape[-2]}x{x.shape[-1]}"
        )


@register_model("ognet-generator")
class OGNetGenerator(nn.Module):
    """OGNet's generator ``G``: a valid-convolution autoencoder with a tanh output.

    Args:
        channels: image channels ``C`` (1 in the paper).
        width: filters of the first layer ``w`` (64 in the paper).
    """

    def __init__(self, channels: int = 1, width: int = PAPER_WIDTH) -> None:
        super().__init__()
        _check_positive("channels", channels)
        _check_positive("width", width)
        self.channels = channels
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 5),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 5),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 5),
            nn.ReLU(),
            nn.BatchNorm2d(4 * w),
            nn.Conv2d(4 * w, 8 * w, 5),
            nn.ReLU(),
            nn.BatchNorm2d(8 * w),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(8 * w, 4 * w, 5),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 5),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 5),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 5),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spatial("the OGNet generator", x, self.channels)
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


@register_model("ognet-discriminator")
class OGNetDiscriminator(Backbone):
    """OGNet's discriminator ``D``: four stride-2 convolutions and a linear logit.

    ``forward`` returns the logit ``(N, 1)``; ``D(x) = sigmoid(logit)`` is the paper's
    output ("x is a real / good reconstruction").

    Args:
        channels: image channels (1 in the paper).
        width: filters of the first layer (64 in the paper).
        image_size: side of the square input (45 in the paper).
    """

    out_features = 1

    def __init__(self, channels: int = 1, width: int = PAPER_WIDTH, image_size: int = PAPER_IMAGE_SIZE) -> None:
        super().__init__()
        _check_positive("channels", channels)
        _check_positive("width", width)
        _check_positive("image_size", image_size)
        self.input_shape = (channels, image_size, image_size)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 5, stride=2, padding=2),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 5, stride=2, padding=2),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 5, stride=2, padding=2),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.Conv2d(4 * w, 8 * w, 5, stride=2, padding=2),
            nn.ReLU(),
        )
        side = image_size
        for _ in range(4):
            side = (side + 1) // 2  # 5x5, stride 2, padding 2: ceil(side / 2)
        self.head = nn.Linear(8 * w * side * side, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"the OGNet discriminator expects images of shape {self.input_shape}, got {tuple(x.shape)}")
        features: torch.Tensor = self.body(x)
        return features.flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        logit: torch.Tensor = self.head(features)
        return logit


@register_model("ognet")
class OGNetNetworks(Backbone):
    """OGNet's generator and discriminator as one network whose output is ``logit D(G(x))``.

    Inputs are images in ``[-1, 1]`` (the OGNet method maps ``[0, 1]`` input there).

    Args:
        channels: image channels (1 in the paper).
        width: base width ``w`` of both networks (64 in the paper).
        image_size: side of the square input (45 in the paper, at least 17).
    """

    out_features = 1

    def __init__(self, channels: int = 1, width: int = PAPER_WIDTH, image_size: int = PAPER_IMAGE_SIZE) -> None:
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise ConfigError(
                f"OGNet image_size must be >= {MIN_IMAGE_SIZE} (the generator's four valid 5x5 convolutions "
                f"remove 16 pixels), got {image_size}"
            )
        self.generator = OGNetGenerator(channels, width)
        self.discriminator = OGNetDiscriminator(channels, width, image_size)
        self.input_shape = self.discriminator.input_shape

    def check_input(self, sample_shape: tuple[int, ...]) -> None:
        """Raise :class:`DataError` for samples too small for ``G`` or of the wrong shape."""
        if len(sample_shape) == 3 and min(sample_shape[1:]) < MIN_IMAGE_SIZE:
            raise DataError(
                f"OGNet needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels (the generator's four "
                f"valid 5x5 convolutions remove 16), got {sample_shape[1]}x{sample_shape[2]}"
            )
        super().check_input(sample_shape)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator.forward_features(self.generator(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.discriminator.forward_head(features)


@register_model("ognet-small")
def ognet_small(channels: int = 1, image_size: int = PAPER_IMAGE_SIZE) -> OGNetNetworks:
    """OGNet's networks with base width 8 instead of 64 (a variant that trains on a CPU).

    Measured on this project's shared 2-core CPU: a phase-one training step costs 5-15 ms
    per 45x45 image (depending on the machine's load), against about 0.3 s for the paper's
    generator alone.
    """
    return OGNetNetworks(channels, SMALL_WIDTH, image_size)
