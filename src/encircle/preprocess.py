"""Batch-wise input preprocessing whose constants are learned from training data.

A :class:`Preprocess` turns a batch of raw samples (``uint8`` images or float features)
into the network's float32 input, on whatever device the batch is on. Its constants are
fitted once on the (normal) training data and saved with the detector, so scoring new
data applies exactly the training transformation.

Kinds:

* ``"unit"``: ``x / 255`` for ``uint8`` images (``ToTensor`` in torchvision terms), as the
  pytorch-ood Deep SVDD example (seed 000) does; float input passes through.
* ``"gcn-minmax"``: global contrast normalisation with the L1 norm, then min-max scaling
  to ``[0, 1]`` with the minimum and maximum over the training data after GCN
  (Ruff et al., ICML 2018, Sec. 4.1). The authors' code hard-codes a table of these
  constants per MNIST/CIFAR-10 class; fitting them on the training data gives the same
  numbers for those datasets and also works on any other data.
* ``"standardize"``: per-feature ``(x - mean) / std`` with training statistics, for
  tabular features.
* ``"normalize"``: per-channel ``(x / 255 - mean_c) / std_c`` for images, with the
  constants a pretrained network was trained with when they are given (``params``),
  else the training data's channel statistics (the usual CIFAR recipe).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from encircle.data.transforms import global_contrast_normalization, min_max_scale, resize_images, to_float
from encircle.errors import ConfigError, DataError

PREPROCESS_KINDS = ("unit", "gcn-minmax", "standardize", "normalize")


@dataclass
class Preprocess:
    """A fitted batch transform. ``params`` holds its learned constants as tensors.

    ``shape`` (``(C, H, W)``), when set, first brings images of any size to the network's
    input: channels averaged to one (RGB -> gray) or repeated (gray -> RGB), then a
    bilinear, antialiased resize.
    """

    kind: str = "unit"
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in PREPROCESS_KINDS:
            raise ConfigError(f"unknown data.preprocess {self.kind!r}; expected one of {', '.join(PREPROCESS_KINDS)}")

    def fit(self, samples: torch.Tensor) -> Preprocess:
        """Learn the constants from the training ``samples``; returns ``self``."""
        if samples.shape[0] == 0:
            raise DataError("cannot fit preprocessing on an empty set of samples")
        if self.kind == "gcn-minmax":
            x = global_contrast_normalization(self._resize(to_float(samples)), scale="l1")
            self.params = {"lo": x.amin().cpu(), "hi": x.amax().cpu()}
        elif self.kind == "standardize":
            x = self._resize(to_float(samples)).flatten(1).double()
            std = x.std(dim=0, unbiased=False)
            std[std == 0] = 1.0  # constant features stay constant instead of dividing by zero
            self.params = {"mean": x.mean(dim=0).float().cpu(), "std": std.float().cpu()}
        elif self.kind == "normalize" and not self.params:
            x = self._resize(to_float(samples))
            if x.ndim != 4:
                raise DataError(f"'normalize' preprocessing is for images (N, C, H, W), got shape {tuple(x.shape)}")
            channels = x.transpose(0, 1).flatten(1).double()
            std = channels.std(dim=1, unbiased=False)
            std[std == 0] = 1.0
            self.params = {"mean": channels.mean(dim=1).float().cpu(), "std": std.float().cpu()}
        return self

    def __call__(self, samples: torch.Tensor) -> torch.Tensor:
        """Transform one batch (on its device) into float32 network input."""
        x = self._resize(to_float(samples))
        if self.kind == "gcn-minmax":
            x = global_contrast_normalization(x, scale="l1")
            return min_max_scale(x, self._param("lo", x), self._param("hi", x))
        if self.kind == "standardize":
            flat = (x.flatten(1) - self._param("mean", x)) / self._param("std", x)
            return flat.reshape(x.shape)
        if self.kind == "normalize":
            mean, std = self._param("mean", x).view(1, -1, 1, 1), self._param("std", x).view(1, -1, 1, 1)
            return (x - mean) / std
        return x

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape is None or tuple(x.shape[1:]) == self.shape:
            return x
        if len(self.shape) != 3:
            raise DataError(f"cannot resize samples of shape {tuple(x.shape[1:])} to {self.shape}: images only")
        return resize_images(x, (self.shape[0], self.shape[1], self.shape[2]))

    def _param(self, name: str, like: torch.Tensor) -> torch.Tensor:
        if name not in self.params:
            raise DataError(f"preprocessing {self.kind!r} is used before fit(): no {name!r}")
        return self.params[name].to(like.device)

    def state(self) -> dict[str, object]:
        """A ``weights_only``-loadable description (kind + constants)."""
        return {"kind": self.kind, "params": dict(self.params), "shape": list(self.shape) if self.shape else None}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Preprocess:
        """Rebuild from :meth:`state`."""
        params = state.get("params", {})
        if not isinstance(params, dict):
            raise DataError(f"preprocessing state: 'params' must be a dict, got {type(params).__name__}")
        shape = state.get("shape")
        return cls(kind=str(state.get("kind")), params=params, shape=tuple(shape) if isinstance(shape, list) else None)
