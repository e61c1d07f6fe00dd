"""OGNet: adversarially learned one-class classification, "Old is Gold" (Zaheer et al., CVPR 2020).

A generator ``G`` (autoencoder) and a discriminator ``D`` are trained in two phases; the
two-phase loop itself is :func:`encircle.ognet.fit_ognet` (it needs two optimisers, the
generic engine has one). This module holds the method's networks and state, its losses
and its score. Images enter in ``[0, 1]`` (``data.preprocess = "unit"``) and are mapped
to ``[-1, 1]`` first, as the authors' ``Normalize(0.5, 0.5)``. ``D`` returns a logit;
``D(x) = sigmoid(logit)`` is the probability that ``x`` is real / a good
reconstruction, and every ``BCE`` below is ``binary_cross_entropy_with_logits``.

Phase one (Sec. 3, Eqs. 1-3), on normal data ``x`` with noisy input
``x~ = clamp(x + n, -1, 1)``, ``n ~ N(0, noise_std^2)``:

* ``L_D = 0.5 * (BCE(D(x), 1) + BCE(D(G(x~)), 0))``
* ``L_G = 0.5 * MSE(G(x~), x) + 0.5 * BCE(D(G(x~)), 1)``

After ``old_epoch`` epochs a copy ``G_old`` of ``G`` is frozen.

Phase two (Sec. 3, the phase-two objective): ``G`` and ``G_old`` frozen (eval mode), ``D`` alone learns
that good reconstructions (``x`` and ``G(x)``) are real and bad ones (``G_old(x)`` and
pseudo-anomalies ``G((G_old(x_a) + G_old(x_b)) / 2)`` of two other normal samples) fake:

``L = a * BCE(D(x), 1) + (1 - a) * BCE(D(G(x)), 1)
+ (1 - p) * BCE(D(G_old(x)), 0) + p * BCE(D(x_pseudo), 0)``

with ``a = real_weight = 0.1`` and ``p = pseudo_weight = 0.05``, the weights of the
authors' released phase-two code (``high_epoch_fake_loss_contribution = 0.9``, and
``psuedo_anomaly_contribution = 0.95`` applied there to the ``G_old(x)`` term).

Score (Sec. 3, testing): the paper's normality score is ``D(G(x))``; encircle reports
``1 - D(G(x)) = sigmoid(-logit D(G(x)))`` so that higher = more anomalous, computed from
the logit so that it does not round to 0 or 1.

The authors label real data 0 and fakes 1 (``D`` then outputs "fake" probabilities);
the labels here are the usual GAN ones (real 1). The two are the same model up to the
sign of the logit.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F

from encircle.errors import ConfigError
from encircle.methods.base import Method
from encircle.methods.registry import register_method
from encircle.models.base import Backbone
from encircle.models.ognet import OGNetDiscriminator, OGNetGenerator, OGNetNetworks


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Map images from ``[0, 1]`` to ``[-1, 1]``: ``2 x - 1``."""
    return x * 2 - 1


def add_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """``clamp(x + n, -1, 1)`` with ``n ~ N(0, std^2)`` drawn from the global torch RNG.

    The authors' ``gaussian`` helper clamps the noisy image to ``[-1, 1]`` the same way.
    """
    if std == 0:
        return x
    return (x + std * torch.randn_like(x)).clamp(-1, 1)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """``mean BCE(sigmoid(logits), target)`` for a constant target (1 = real, 0 = fake)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Phase one, ``D``: ``0.5 * (BCE(D(x), 1) + BCE(D(G(x~)), 0))``."""
    return 0.5 * (_bce(real_logits, 1.0) + _bce(fake_logits, 0.0))


def generator_loss(
    reconstruction: torch.Tensor, x: torch.Tensor, fake_logits: torch.Tensor, adversarial_weight: float = 0.5
) -> torch.Tensor:
    """Phase one, ``G``: ``(1 - w) * MSE(G(x~), x) + w * BCE(D(G(x~)), 1)`` with ``w = 0.5``."""
    mse = F.mse_loss(reconstruction.float(), x.float())
    return (1 - adversarial_weight) * mse + adversarial_weight * _bce(fake_logits, 1.0)


def phase_two_loss(
    real_logits: torch.Tensor,
    good_logits: torch.Tensor,
    old_logits: torch.Tensor,
    pseudo_logits: torch.Tensor,
    real_weight: float = 0.1,
    pseudo_weight: float = 0.05,
) -> torch.Tensor:
    """Phase two, ``D`` only: good (``x``, ``G(x)``) -> 1, bad (``G_old(x)``, pseudo) -> 0.

    ``a * BCE(D(x), 1) + (1 - a) * BCE(D(G(x)), 1) + (1 - p) * BCE(D(G_old(x)), 0)
    + p * BCE(D(x_pseudo), 0)`` with ``a = real_weight``, ``p = pseudo_weight``.
    """
    good = real_weight * _bce(real_logits, 1.0) + (1 - real_weight) * _bce(good_logits, 1.0)
    bad = (1 - pseudo_weight) * _bce(old_logits, 0.0) + pseudo_weight * _bce(pseudo_logits, 0.0)
    return good + bad


@register_method("ognet")
class OGNet(Method):
    """OGNet's networks (``net``: generator + discriminator), ``G_old`` and the losses.

    Args:
        net: an :class:`~encircle.models.ognet.OGNetNetworks` (model ``ognet`` or
            ``ognet-small``).
        noise_std: standard deviation of the Gaussian noise added to ``G``'s input in
            phase one (on the ``[-1, 1]`` scale).
        d_lr: Adam learning rate of ``D`` in phase one (``G`` uses ``train.lr``).
        old_epoch: ``G_old`` is ``G`` after this many phase-one epochs.
        phase2_lr: Adam learning rate of ``D`` in phase two.
        phase2_iterations: phase-two optimiser steps.
        phase2_batch_size: samples per phase-two step (each step also draws two more
            batches for the pseudo-anomalies); 8 in the authors' code.
        real_weight: weight ``a`` of ``D(x)`` among the good samples in phase two.
        pseudo_weight: weight ``p`` of the pseudo-anomalies among the bad ones.
    """

    name = "ognet"

    def __init__(
        self,
        net: Backbone,
        noise_std: float = 0.155,
        d_lr: float = 1e-4,
        old_epoch: int = 1,
        phase2_lr: float = 5e-5,
        phase2_iterations: int = 75,
        phase2_batch_size: int = 8,
        real_weight: float = 0.1,
        pseudo_weight: float = 0.05,
    ) -> None:
        if not isinstance(net, OGNetNetworks):
            raise ConfigError(
                f"method 'ognet' needs the OGNet networks (model.name 'ognet' or 'ognet-small'), "
                f"got {type(net).__name__}"
            )
        super().__init__(net)
        checks = [
            (noise_std >= 0, "method.noise_std", ">= 0", noise_std),
            (d_lr > 0, "method.d_lr", "> 0", d_lr),
            (old_epoch >= 1, "method.old_epoch", ">= 1", old_epoch),
            (phase2_lr > 0, "method.phase2_lr", "> 0", phase2_lr),
            (phase2_iterations >= 1, "method.phase2_iterations", ">= 1", phase2_iterations),
            (phase2_batch_size >= 1, "method.phase2_batch_size", ">= 1", phase2_batch_size),
            (0 <= real_weight <= 1, "method.real_weight", "in [0, 1]", real_weight),
            (0 <= pseudo_weight <= 1, "method.pseudo_weight", "in [0, 1]", pseudo_weight),
        ]
        for ok, key, expected, got in checks:
            if not ok:
                raise ConfigError(f"{key} must be {expected}, got {got!r}")
        self.noise_std = noise_std
        self.d_lr = d_lr
        self.old_epoch = old_epoch
        self.phase2_lr = phase2_lr
        self.phase2_iterations = phase2_iterations
        self.phase2_batch_size = phase2_batch_size
        self.real_weight = real_weight
        self.pseudo_weight = pseudo_weight
        self.g_old = copy.deepcopy(net.generator).requires_grad_(False)

    @property
    def generator(self) -> OGNetGenerator:
        """``G`` (``net.generator``)."""
        return cast(OGNetNetworks, self.net).generator

    @property
    def discriminator(self) -> OGNetDiscriminator:
        """``D`` (``net.discriminator``)."""
        return cast(OGNetNetworks, self.net).discriminator

    def snapshot_old(self) -> None:
        """``G_old <- G`` (weights and BatchNorm statistics)."""
        self.g_old.load_state_dict(self.generator.state_dict())

    def d_loss(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``L_D`` on signed images ``x`` and reconstructions ``fake`` (detached here)."""
        return discriminator_loss(self.discriminator(x), self.discriminator(fake.detach()))

    def g_loss(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``L_G`` on signed images ``x`` and reconstructions ``fake = G(x~)``, with a fresh ``D`` pass."""
        return generator_loss(fake, x, self.discriminator(fake))

    @torch.no_grad()
    def pseudo_anomalies(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        """``G((G_old(x_a) + G_old(x_b)) / 2)`` for signed images ``x_a``, ``x_b``."""
        return self.generator((self.g_old(x_a) + self.g_old(x_b)) / 2)

    def d_loss_phase_two(self, x: torch.Tensor, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        """Phase-two loss of ``D`` on signed images: ``x`` gives the good and ``G_old``
        samples, ``x_a``/``x_b`` the pseudo-anomalies (generators under no_grad)."""
        with torch.no_grad():
            good, old = self.generator(x), self.g_old(x)
        pseudo = self.pseudo_anomalies(x_a, x_b)
        d = self.discriminator
        return phase_two_loss(d(x), d(good), d(old), d(pseudo), self.real_weight, self.pseudo_weight)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Not available: OGNet trains in two phases with two optimisers."""
        raise ConfigError(
            "method 'ognet' trains in two phases with two optimisers, not with the generic fit loop; "
            "use encircle.ognet.OGNetDetector (or the protocol ognet-mnist)"
        )

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``1 - D(G(x)) = sigmoid(-logit)`` for ``x`` in ``[0, 1]``: higher = more anomalous."""
        return torch.sigmoid(-self.embed(to_signed(x)).flatten())
