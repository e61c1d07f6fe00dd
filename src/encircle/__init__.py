"""encircle: center-based deep anomaly detection and open-set recognition on PyTorch.

Conventions kept by every module (see ``docs/architecture.md``):

* labels are int64, known classes ``0..K-1``, unknown / OOD / anomaly ``-1``;
* scores are "higher = more anomalous" everywhere;
* images live in memory as ``uint8`` tensors ``(N, C, H, W)`` and are transformed batch-wise.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("encircle")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
