"""encircle: center-based deep anomaly detection and open-set recognition on PyTorch.

Conventions kept by every module (see ``docs/architecture.md``):

* labels are int64, known classes ``0..K-1``, unknown / OOD / anomaly ``-1``;
* scores are "higher = more anomalous" everywhere;
* images live in memory as ``uint8`` tensors ``(N, C, H, W)`` and are transformed batch-wise.

For your own arrays, start with the estimators: ``encircle.DeepSVDD().fit(X)`` (see
``docs/estimators.md``).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("encircle")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

#: The estimators (:mod:`encircle.estimators`), imported on first use so that ``import
#: encircle`` (and the command line's start) stays light.
ESTIMATOR_NAMES = ("CAC", "MCHAD", "Autoencoder", "DeepSAD", "DeepSVDD", "OGNet", "Softmax")

__all__ = [*ESTIMATOR_NAMES, "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in ESTIMATOR_NAMES or name == "load":
        from encircle import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'encircle' has no attribute {name!r}")
