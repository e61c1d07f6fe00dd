"""OGNet: adversarially learned one-class classification, "Old is Gold" (Zaheer et al., CVPR 2020).

A generator ``G`` (autoencoder) and a discriminator ``D`` are trained in two phases
(:meth:`OGNet.phases`), both run by the one engine (:mod:`encircle.engine`) like every
other method's: phase one with two optimisers (``G``: Adam ``train.lr``; ``D``: Adam
``d_lr``) for ``train.epochs`` epochs, phase two with a fresh Adam on ``D`` alone
(``phase2_lr``) for ``phase2_iterations`` steps that continue phase one's random streams.
Images enter in ``[0, 1]`` (``data.preprocess = "unit"``) and are mapped to ``[-1, 1]``
first, as the authors' ``Normalize(0.5, 0.5)``. ``D`` returns a logit; ``D(x) =
sigmoid(logit)`` is the probability that ``x`` is real / a good reconstruction, and
every ``BCE`` below is ``binary_cross_entropy_with_logits``.

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

**Order of a phase-one step.** The authors' code computes ``D(G(x~))`` once, steps
``D``, then back-propagates ``G``'s adversarial loss through that old ``D`` output with
``retain_graph=True``; PyTorch >= 1.5 refuses this, because ``d_optim.step()`` changed
``D``'s weights in place that the saved graph still needs. Here, as in the PyTorch DCGAN
example, ``D`` steps first on ``G(x~).detach()``, then ``G``'s loss uses a fresh ``D``
forward pass through the *updated* ``D``, and its backward pass computes gradients for
``G``'s parameters only (``inputs=``), so ``D`` gets no stray gradient.

Not used: ``train.optimizer`` must be ``"adam"`` (the paper's); the paper uses constant
learning rates (``train.lr_milestones`` empty); ``train.amp`` may be ``"off"`` or
``"bf16"``; ``train.augment`` must be ``"none"`` (the input noise is OGNet's own).

The authors label real data 0 and fakes 1 (``D`` then outputs "fake" probabilities);
the labels here are the usual GAN ones (real 1). The two are the same model up to the
sign of the logit.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from encircle.errors import ConfigError, DataError
from encircle.methods.base import Method, Phase, Step, make_optimizer
from encircle.methods.registry import register_method
from encircle.models.base import Backbone
from encircle.models.ognet import OGNetDiscriminator, OGNetGenerator, OGNetNetworks
from encircle.train_config import TrainConfig


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
        num_classes: 1 (one-class).
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
    #: The paper's settings (Zaheer et al., CVPR 2020, and the authors' code): 45x45 inputs
    #: in [-1, 1], Adam with G lr 1e-3 and D lr 1e-4, batch 64. The phase-one length (25
    #: epochs) is encircle's choice.
    recipe: ClassVar[dict[str, Any]] = {
        "model.name": "ognet",
        "model.out_features": 1,
        "data.preprocess": "unit",
        "train.epochs": 25,
        "train.batch_size": 64,
        "train.lr": 1e-3,
        "train.eval_every": 0,
    }

    def __init__(
        self,
        net: Backbone,
        num_classes: int = 1,
        *,
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
        super().__init__(net, num_classes)
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

    # -- training through the engine --------------------------------------------------
    def phases(self, train: TrainConfig, num_samples: int) -> list[Phase]:
        """Phase one (``train.epochs`` epochs), then phase two (``phase2_iterations`` steps of
        ``3 * min(phase2_batch_size, N // 3)`` samples: ``x`` and two batches for the
        pseudo-anomalies) continuing phase one's random streams.

        Raises:
            ConfigError: settings the two phases cannot run with.
            DataError: fewer than 3 training samples.
        """
        if num_samples < 3:
            raise DataError(
                f"OGNet needs at least 3 training samples (phase two draws three batches per step), got {num_samples}"
            )
        if self.old_epoch >= train.epochs:
            raise ConfigError(
                f"method.old_epoch must be < train.epochs (G_old is G after old_epoch of the train.epochs "
                f"phase-one epochs, and must be older than G), got old_epoch={self.old_epoch} with "
                f"train.epochs={train.epochs}"
            )
        if train.optimizer != "adam":
            raise ConfigError(f"OGNet trains with Adam: train.optimizer must be 'adam', got {train.optimizer!r}")
        if train.amp == "fp16":
            raise ConfigError("OGNet supports train.amp 'off' or 'bf16', got 'fp16' (two optimisers, no GradScaler)")
        if train.augment != "none":
            raise ConfigError(
                "OGNet adds its own input noise and does not augment: train.augment must be 'none', "
                f"got {train.augment!r}"
            )
        draw = 3 * min(self.phase2_batch_size, num_samples // 3)
        two = dataclasses.replace(train, lr=self.phase2_lr, batch_size=draw)
        return [Phase("phase-one", train), Phase("phase-two", two, steps=self.phase2_iterations, reseed=False)]

    def configure_optimizers(self, phase: Phase) -> dict[str, torch.optim.Optimizer]:
        """Phase one: ``generator`` (Adam, ``train.lr``) and ``discriminator`` (Adam,
        ``d_lr``); phase two: ``main``, a fresh Adam on ``D`` (``phase2_lr``)."""
        if phase.name == "phase-one":
            return {
                "generator": make_optimizer(list(self.generator.parameters()), phase.train),
                "discriminator": make_optimizer(list(self.discriminator.parameters()), phase.train, self.d_lr),
            }
        return {"main": make_optimizer(list(self.discriminator.parameters()), phase.train)}

    def training_step(self, x: torch.Tensor, y: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        """Phase one: ``D`` steps, then ``G`` against the updated ``D`` (``G``, ``D`` in
        training mode). Phase two: ``D`` alone; ``G`` and ``G_old`` in eval mode get no
        gradient, so their weights and BatchNorm statistics stay as they are."""
        x = to_signed(x)
        self.train()
        self.g_old.eval()
        if step.phase.name == "phase-one":
            with step.autocast():
                fake = self.generator(add_noise(x, self.noise_std))
                d_loss = self.d_loss(x, fake)
            step.optimize(d_loss, "discriminator")
            with step.autocast():
                g_loss = self.g_loss(x, fake)  # a fresh pass through the updated D
            step.optimize(g_loss, "generator", inputs=list(self.generator.parameters()))
            return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}
        self.generator.eval()
        real, x_a, x_b = x.split(len(x) // 3)
        with step.autocast():
            loss = self.d_loss_phase_two(real, x_a, x_b)
        step.optimize(loss)
        return {"loss": loss.detach()}

    def after_epoch(self, epoch: int, batches: object) -> None:
        """``G_old <- G`` after ``old_epoch`` phase-one epochs."""
        if epoch + 1 == self.old_epoch:
            self.snapshot_old()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``1 - D(G(x)) = sigmoid(-logit)`` for ``x`` in ``[0, 1]``: higher = more anomalous."""
        return torch.sigmoid(-self.embed(to_signed(x)).flatten())
