"""OGNet's two-phase training and its detector (Zaheer et al., "Old is Gold", CVPR 2020).

The networks are in :mod:`encircle.models.ognet`, the method (losses, score) in
:mod:`encircle.methods.ognet`; this package holds what needs the engine: the two-phase
loop :func:`fit_ognet` and :class:`OGNetDetector`.
"""

from encircle.ognet.detector import OGNET_DEFAULTS, OGNetDetector
from encircle.ognet.trainer import OGNetFitResult, fit_ognet, phase_one_step, phase_two_step

__all__ = ["OGNET_DEFAULTS", "OGNetDetector", "OGNetFitResult", "fit_ognet", "phase_one_step", "phase_two_step"]
