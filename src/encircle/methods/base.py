"""The method contract: what every method declares, and what the one engine calls.

A method is one module with one :class:`Method` subclass. It declares

* its **hyperparameters**, once: the keyword-only parameters of ``__init__`` (typed,
  with defaults, one ``Args:`` docstring line each; :mod:`encircle.methods.hyperparameters`).
  Config keys, ``--set method.*``, TOML, ``encircle list`` and the estimators derive from it;
* what it learns from: ``uses_labels`` (known classes ``0..K-1``), ``uses_outliers``
  (outlier exposure, label ``-1``), and whether it ``classifies`` known classes;
* its **phases** (:meth:`Method.phases`): stages of training, each with its own epochs or
  steps, settings and optimisers (autoencoder pretraining, then Deep SVDD; OGNet's phase
  one, then phase two). One phase ``"train"`` by default;
* its **optimisers** (:meth:`Method.configure_optimizers`): named, per phase; by default
  one Adam or SGD (``train.optimizer``) over the trainable parameters;
* one **training step** (:meth:`Method.training_step`): computes losses and calls
  ``step.optimize(loss, name)`` for each optimiser it steps (by default: ``loss`` and
  the one optimiser). The engine runs AMP, gradient averaging under DDP, the NaN guard,
  checkpoints, history and progress around it;
* hooks: :meth:`setup` (state from the data before a phase, e.g. Deep SVDD's center),
  :meth:`after_step` (e.g. the soft-boundary radius), :meth:`after_epoch`,
  :meth:`finalize` (statistics after training, e.g. CAC's re-estimated anchors);
* its **score** (higher = more anomalous) and, for classifying methods, :meth:`classify`.

The worked example is ``docs/architecture.md``'s; Deep SAD (:mod:`encircle.methods.deep_sad`)
is a whole method in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from encircle.models.base import Backbone
from encircle.train_config import TrainConfig

#: Preprocessed ``(x, y)`` training batches on the device.
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Phase:
    """One stage of a method's training.

    Attributes:
        name: shown in the history (``record["phase"]``) and in error messages.
        train: this phase's settings (epochs, learning rate, schedule, batch size).
        steps: 0 for a phase of ``train.epochs`` passes over the shuffled training data;
            ``> 0`` for that many steps, each on ``train.batch_size`` samples drawn
            without replacement from the training data (OGNet's phase two).
        reseed: start the phase like a fresh run: the global torch RNG and the
            data-order generator re-seeded with the run's seed. ``False`` continues both
            (OGNet's phase two continues phase one's streams).
        module: what trains in this phase when it is not the method itself (the
            autoencoder around the method's network during pretraining); its hooks and
            score are used during the phase, then it is dropped.
        evaluate: run the evaluation hook in this phase (at ``train.eval_every`` and at
            its end).
    """

    name: str
    train: TrainConfig
    steps: int = 0
    reseed: bool = True
    module: Method | None = None
    evaluate: bool = True


class Step(Protocol):
    """What a training step gets from the engine."""

    phase: Phase
    epoch: int

    def autocast(self) -> AbstractContextManager[Any]:
        """The AMP context for forward passes (a no-op with ``train.amp = "off"``)."""

    def optimize(self, loss: torch.Tensor, optimizer: str = "main", inputs: list[nn.Parameter] | None = None) -> None:
        """Check ``loss`` is finite, back-propagate it (into ``inputs`` only, when given)
        and step the named optimiser."""


class Method(nn.Module):
    """Base class of every method: a network plus the state its objective learns.

    Args:
        net: the network (a :class:`~encircle.models.base.Backbone`).
        num_classes: known classes ``K`` (1 for one-class methods); set by the detector
            from the training labels.
    """

    name: ClassVar[str] = ""
    #: whether training needs class labels ``0..K-1`` (False for one-class methods).
    uses_labels: ClassVar[bool] = False
    #: whether training takes outliers (outlier exposure / labelled anomalies, label -1).
    uses_outliers: ClassVar[bool] = False
    #: whether the method predicts known classes ``0..K-1`` (open-set recognition).
    classifies: ClassVar[bool] = False
    #: whether the network's output size must be the number of classes (logit-space
    #: methods such as CAC and a softmax classifier) rather than ``model.out_features``.
    outputs_are_classes: ClassVar[bool] = False
    #: the paper's settings of the other config sections (dotted keys, e.g.
    #: ``{"train.epochs": 25}``), applied by ``encircle fit`` on top of its data-based defaults.
    recipe: ClassVar[dict[str, Any]] = {}

    def __init__(self, net: Backbone, num_classes: int = 1) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output, with the head run in float32.

        Under mixed precision the features may be bf16/fp16; distances to centers are
        then computed from a float32 head, so they keep their precision.
        """
        features = self.net.forward_features(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.net.forward_head(features.float())

    # -- training -----------------------------------------------------------------------
    def phases(self, train: TrainConfig, num_samples: int) -> list[Phase]:
        """The stages of training on ``num_samples`` samples; default: one ``"train"`` phase.

        Raises:
            ConfigError: settings this method cannot train with.
        """
        return [Phase("train", train)]

    def configure_optimizers(self, phase: Phase) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers of ``phase``; default ``{"main": Adam or SGD}`` over the
        trainable parameters of the phase's module, with ``phase.train``'s settings."""
        module = phase.module or self
        return {"main": make_optimizer([p for p in module.parameters() if p.requires_grad], phase.train)}

    def training_step(self, x: torch.Tensor, y: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        """One step on a preprocessed batch; returns the detached metrics for the history.

        Default: ``loss(x, y)`` under autocast, optimised by the ``"main"`` optimiser.
        """
        with step.autocast():
            loss = self.loss(x, y)
        step.optimize(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def setup(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Initialise learned state from preprocessed training batches before a phase (default: none)."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss on a preprocessed batch ``x`` with labels ``y``.

        Default: :meth:`batch_loss`'s loss, its auxiliary tensors handed to :meth:`observe`.
        """
        value, aux = self.batch_loss(x, y)
        self.observe(aux)
        return value

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss as a *pure* function of the batch, the parameters and the
        buffers: ``(loss, aux)``, ``aux`` a dict of detached tensors for :meth:`observe`.

        Pure means no attribute is set and no state changes (BatchNorm's running
        statistics aside), so the batched trainer (:mod:`encircle.batched`) can run it
        for K models at once under ``torch.vmap``; state that depends on the batch (Deep
        SVDD's output spread, the soft-boundary radius) is kept by :meth:`observe`,
        which the batched trainer calls per model outside ``vmap``. A method that only
        overrides :meth:`loss` trains one model at a time.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no batch_loss")

    def observe(self, aux: dict[str, torch.Tensor]) -> None:
        """Keep what a training batch's :meth:`batch_loss` returned besides the loss (default: nothing)."""

    def after_step(self, epoch: int) -> None:
        """Called after every training step (``epoch`` counts from 0); default: nothing."""

    def after_epoch(self, epoch: int, batches: Callable[[], Batches]) -> None:
        """Called after every epoch with a factory of training batches; default: nothing."""

    @torch.no_grad()
    def finalize(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """After training, gather statistics from preprocessed training batches (default: none)."""

    # -- scoring ------------------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Outlier score of a preprocessed batch, higher = more anomalous, float32."""
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted class, score)`` of a preprocessed batch from one forward pass.

        One-class methods predict class 0 (normal) for every sample.
        """
        score = self.score(x)
        return torch.zeros(score.shape[0], dtype=torch.int64, device=score.device), score


def make_optimizer(params: list[Any], train: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """``train.optimizer`` (Adam, or SGD with ``train.momentum``) over ``params`` with
    ``train.weight_decay`` and learning rate ``lr`` (default ``train.lr``)."""
    rate = train.lr if lr is None else lr
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=rate, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=rate, weight_decay=train.weight_decay)
