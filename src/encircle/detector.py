"""``Detector``: a trained method with its preprocessing and a calibrated threshold.

The estimator API follows scikit-learn: hyperparameters (a :class:`RunConfig`) go to
``__init__``, learned state lives in attributes ending in ``_``, and ``fit`` returns
``self``. Unlike PyOD's contamination rate, the threshold is calibrated from a target
true-positive rate on held-out *normal* data (no anomalies are needed, none are peeked
at): ``threshold_`` accepts at least ``calibration.tpr`` of the held-out normal samples.

One class serves both settings:

* **one-class** methods (Deep SVDD) train on normal data only; ``predict`` gives ``0``
  (normal) or ``-1`` (anomaly);
* **classifying** methods (CAC, MCHAD, the softmax classifier) train on labelled known
  classes ``0..K-1`` (plus, for outlier exposure, ``outliers``); ``predict`` gives the
  known class, or ``-1`` (unknown) when the score is above ``threshold_``. The held-out
  calibration data are known samples only.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle import batched, footprint
from encircle.checkpoint import load_file, save_file
from encircle.config import RunConfig, flatten, with_overrides
from encircle.data.dataset import ImageDataset
from encircle.engine import FitResult, InputPipeline, fit, inference_batch_size, resolve_device
from encircle.errors import CheckpointError, DataError, TrainingError
from encircle.methods import create_method, list_methods
from encircle.methods.base import Method
from encircle.methods.registry import method_class
from encircle.models import create_model, model_parameters
from encircle.models.base import Backbone
from encircle.models.pretrained import load_pretrained, pretrained_normalization
from encircle.preprocess import PREPROCESS_KINDS, Preprocess
from encircle.training_run import write_history

log = logging.getLogger(__name__)
ArrayLike = torch.Tensor | np.ndarray | ImageDataset
#: (checkpoint, history) file names in ``out_dir`` of a training run (every phase).
TRAIN_FILES = ("checkpoint.pt", "history.jsonl")


def threshold_at_tpr(normal_scores: torch.Tensor, tpr: float) -> float:
    """The smallest score threshold that accepts at least ``tpr`` of ``normal_scores``.

    With the scores sorted ``s_(1) <= ... <= s_(n)``, the threshold is ``s_(ceil(tpr*n))``
    and a sample is accepted as normal when its score is ``<= threshold``.
    """
    if normal_scores.numel() == 0:
        raise DataError("threshold calibration needs at least one normal score, got none")
    if not 0 < tpr <= 1:
        raise DataError(f"tpr must be in (0, 1], got {tpr}")
    ordered = normal_scores.flatten().sort().values
    k = max(1, math.ceil(tpr * ordered.numel() - 1e-9))
    return float(ordered[k - 1])


def _as_samples(data: ArrayLike, what: str) -> torch.Tensor:
    if isinstance(data, ImageDataset):
        return data.images
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{what} must be an ImageDataset, a tensor or a NumPy array, got {type(data).__name__}")
    if data.ndim < 2:
        raise DataError(f"{what} must have a sample axis and at least one feature axis, got shape {tuple(data.shape)}")
    if data.dtype != torch.uint8 and not data.is_floating_point():
        raise DataError(f"{what} must be uint8 images or floating-point features, got {data.dtype}")
    # float64 (NumPy's, pandas' and scikit-learn's default) and float16 features: the networks' float32
    return data.float() if data.is_floating_point() and data.dtype != torch.float32 else data


def _class_labels(data: ArrayLike, labels: torch.Tensor | np.ndarray | None, n: int) -> torch.Tensor:
    """Known-class labels ``0..K-1`` (``K >= 2``, every class present) for a classifying method."""
    if labels is None:
        if not isinstance(data, ImageDataset):
            raise DataError("this method learns known classes: pass labels=... (or an ImageDataset with labels)")
        labels = data.labels
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"labels must be 1-D with one entry per sample ({n}), got shape {tuple(y.shape)}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise DataError(f"labels must be integer class ids, got dtype {y.dtype}")
    y = y.to(torch.int64)
    if bool((y < 0).any()):
        raise DataError(
            "labels must be known classes 0..K-1: the training set holds unknown (-1) samples, which have no "
            "class to learn; pass them as outliers=... for outlier exposure, or drop them"
        )
    present = torch.bincount(y)
    if len(present) < 2 or bool((present == 0).any()):
        missing = torch.nonzero(present == 0).flatten().tolist()
        raise DataError(
            f"labels must cover classes 0..K-1 with K >= 2, got {len(present)} class(es)"
            + (f" with no samples of {missing}" if missing else "")
        )
    return y


def _targets(kind: type[Method], data: ArrayLike, labels: torch.Tensor | np.ndarray | None, n: int) -> torch.Tensor:
    """Training labels: the known classes of a method that uses labels, else zeros (normal).

    Raises:
        DataError: labels passed to a method that learns from normal data only.
    """
    if kind.uses_labels:
        return _class_labels(data, labels, n)
    if labels is not None:
        raise DataError(
            f"method {kind.name!r} learns from normal data only and takes no labels; drop labels=..., or use a "
            "method that learns known classes (cac, mchad, softmax)"
        )
    return torch.zeros(n, dtype=torch.int64)


def _outliers(kind: type[Method], outliers: ArrayLike, samples: torch.Tensor) -> torch.Tensor:
    """Outlier samples for a method that uses them, shaped like ``samples``.

    Raises:
        DataError: outliers for a method that does not use them, or of another shape.
    """
    if not kind.uses_outliers:
        users = ", ".join(n for n in list_methods() if method_class(n).uses_outliers)
        raise DataError(
            f"method {kind.name!r} does not use outliers; drop outliers=..., or use one that does ({users})"
        )
    extra = _as_samples(outliers, "outliers")
    if tuple(extra.shape[1:]) != tuple(samples.shape[1:]):
        raise DataError(f"outliers have samples of shape {tuple(extra.shape[1:])}, the data {tuple(samples.shape[1:])}")
    return extra


class Detector:
    """Anomaly detector around one registered method.

    Args:
        config: the run configuration (model, method, training, calibration, seed).

    Attributes (after ``fit`` or ``load``):
        method_: the trained method (network + learned state).
        preprocess_: the fitted batch transform.
        threshold_: score above which a sample is an anomaly.
        num_classes_: the number of known classes (1 for one-class methods).
        sample_shape_: the shape of one training sample; scored data must match it.
        fit_result_: per-epoch history and training time (``None`` after ``load``).
    """

    def __init__(self, config: RunConfig | None = None) -> None:
        self.config = config or RunConfig()

    # -- training ---------------------------------------------------------------------
    def fit(
        self,
        data: ArrayLike,
        labels: torch.Tensor | np.ndarray | None = None,
        *,
        outliers: ArrayLike | None = None,
        eval_hook: Callable[[Method], dict[str, float]] | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool | None = None,
    ) -> Detector:
        """Train on ``data`` and calibrate the threshold on a held-out part.

        One-class methods take normal ``data``. Classifying methods take known classes
        ``0..K-1``: ``labels``, or the labels of an ``ImageDataset``. Methods that use
        outliers (``uses_outliers``: MCHAD's outlier exposure, Deep SAD's labelled
        anomalies) take ``outliers``, samples of no known class, a fresh draw of up to
        ``len(train)`` of them mixed in each epoch; other methods refuse them.

        Every phase of the method (e.g. autoencoder pretraining, then training) runs in
        the one engine; ``out_dir`` receives its ``checkpoint.pt`` and ``history.jsonl``,
        and ``resume`` continues from that checkpoint in the phase it records.
        """
        samples, train, train_labels, extra, holdout_idx = self._prepare(data, labels, outliers)
        self.fit_result_: FitResult | None = self._train(
            train, train_labels, extra, eval_hook, out_dir, resume, progress
        )
        self._complete(samples, train, train_labels, holdout_idx)
        return self

    def _prepare(
        self, data: ArrayLike, labels: torch.Tensor | np.ndarray | None, outliers: ArrayLike | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Checks, the train/calibration split, the seeded network, the fitted
        preprocessing and the method: ``(samples, train, train labels, outliers, holdout)``."""
        kind = method_class(self.config.method.name)
        samples = _as_samples(data, "data")
        targets = _targets(kind, data, labels, samples.shape[0])
        extra = _outliers(kind, outliers, samples) if outliers is not None else None
        self.num_classes_ = int(targets.max()) + 1 if kind.classifies else 1
        self.sample_shape_ = tuple(samples.shape[1:])
        train_idx, holdout_idx = self._split(samples.shape[0])
        train, train_labels = samples[train_idx], targets[train_idx]
        net = self._build_network(kind.outputs_are_classes)
        self.preprocess_ = self._fit_preprocess(net, train)
        self.method_kwargs_ = self.config.method.hyperparameters()
        self.method_ = create_method(self.config.method.name, net, self.num_classes_, **self.method_kwargs_)
        return samples, train, train_labels, extra, holdout_idx

    def _complete(
        self, samples: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor, holdout_idx: torch.Tensor
    ) -> None:
        """After training: the method's statistics, then the calibrated threshold."""
        self._finalize(train, train_labels)
        self.threshold_ = threshold_at_tpr(
            self.score(samples[holdout_idx] if len(holdout_idx) else train), self.config.calibration.tpr
        )

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded ``(train, calibration)`` indices: ``calibration.holdout`` of the samples held out."""
        holdout = self.config.calibration.holdout
        n_holdout = math.ceil(holdout * n) if holdout > 0 else 0
        if n - n_holdout < 1 or (holdout > 0 and n < 2):
            raise DataError(f"fit needs at least 2 normal samples (training + calibration), got {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed))
        return order[n_holdout:].sort().values, order[:n_holdout].sort().values

    def _build_network(self, outputs_are_classes: bool) -> Backbone:
        """The network with its seeded initial weights (and pretrained weights, when named)."""
        self.model_kwargs_ = self._model_kwargs(self.sample_shape_, self.num_classes_ if outputs_are_classes else 0)
        torch.manual_seed(self.config.seed)  # the network's initial weights
        net = create_model(self.config.model.name, **self.model_kwargs_)
        if not isinstance(net, Backbone):
            raise DataError(f"model {self.config.model.name!r} is not an encircle Backbone")
        if self.config.model.pretrained:
            load_pretrained(self.config.model.pretrained, net, include_head=False)
        return net

    def _model_kwargs(self, sample_shape: tuple[int, ...], num_outputs: int) -> dict[str, Any]:
        """Network arguments: ``out_features`` is the class count for logit-space methods."""
        accepted = model_parameters(self.config.model.name)
        kwargs: dict[str, Any] = {}
        if "out_features" in accepted:
            kwargs["out_features"] = num_outputs or self.config.model.out_features
        if "in_features" in accepted:
            kwargs["in_features"] = math.prod(sample_shape)
        if "dropout" in accepted:
            kwargs["dropout"] = self.config.model.dropout
        for name in ("depth", "widen_factor"):
            value = getattr(self.config.model, name)
            if value and name in accepted:
                kwargs[name] = value
        return kwargs

    def _fit_preprocess(self, net: Backbone, train: torch.Tensor) -> Preprocess:
        """``data.preprocess`` fitted on the training samples; images resized to a
        fixed-input network's shape; a pretrained network's normalisation constants."""
        cfg = self.config
        constants: dict[str, torch.Tensor] = {}
        if cfg.model.pretrained and cfg.data.preprocess == "normalize":
            constants = pretrained_normalization(cfg.model.pretrained)
        resize = train.ndim == 4 and net.input_shape is not None and self.sample_shape_ != net.input_shape
        return Preprocess(cfg.data.preprocess, params=constants, shape=net.input_shape if resize else None).fit(train)

    def _train(
        self,
        train: torch.Tensor,
        train_labels: torch.Tensor,
        outliers: torch.Tensor | None,
        eval_hook: Callable[[Method], dict[str, float]] | None,
        out_dir: str | Path | None,
        resume: bool,
        progress: bool | None,
    ) -> FitResult:
        """Every phase of the method in the engine, with the run's files in ``out_dir``."""
        out = Path(out_dir) if out_dir is not None else None
        return fit(
            self.method_,
            train,
            train_labels,
            self.config.train,
            preprocess=self.preprocess_,
            seed=self.config.seed,
            eval_hook=eval_hook,
            checkpoint_path=out / TRAIN_FILES[0] if out else None,
            history_path=out / TRAIN_FILES[1] if out else None,
            resume=resume,
            metadata={"config": self.config.to_dict()},
            progress=progress,
            outliers=outliers,
        )

    def _finalize(self, train: torch.Tensor, train_labels: torch.Tensor) -> None:
        """The method's statistics from the training data once training is over (CAC's anchors, ...)."""
        pipeline = self.input_pipeline()
        self.method_.finalize(pipeline.batches(train, train_labels, inference_batch_size(pipeline.device)))

    # -- inference --------------------------------------------------------------------
    def input_pipeline(self) -> InputPipeline:
        train = self.config.train
        return InputPipeline(self.preprocess_, resolve_device(train.device), train.channels_last, train.amp)

    @torch.no_grad()
    def classify(self, data: ArrayLike, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted known class, anomaly score)`` of every sample, without rejection.

        The class is ``0`` for one-class methods; scores are float32, higher = more
        anomalous; both on the CPU.
        """
        self._check_fitted()
        samples = _as_samples(data, "data")
        if samples.shape[0] == 0:
            raise DataError("cannot score an empty set of samples")
        resized = self.preprocess_.shape is not None and samples.ndim == 4
        if not resized and tuple(samples.shape[1:]) != self.sample_shape_:
            raise DataError(
                f"data has samples of shape {tuple(samples.shape[1:])}, but this detector "
                f"was trained on shape {self.sample_shape_}"
            )
        pipeline = self.input_pipeline()
        self.method_.to(pipeline.device).eval()
        dummy = torch.zeros(samples.shape[0], dtype=torch.int64)
        classes, scores = [], []
        for x, _ in pipeline.batches(samples, dummy, batch_size or inference_batch_size(pipeline.device)):
            with pipeline.autocast():
                predicted, score = self.method_.classify(x)
            classes.append(predicted.cpu())
            scores.append(score.float().cpu())
        return torch.cat(classes), torch.cat(scores)

    def score(self, data: ArrayLike, batch_size: int | None = None) -> torch.Tensor:
        """Anomaly scores (higher = more anomalous), float32 on the CPU."""
        return self.classify(data, batch_size)[1]

    def predict(self, data: ArrayLike) -> torch.Tensor:
        """The known class (``0`` for one-class methods), or ``-1`` (anomaly / unknown)
        where the score is above ``threshold_`` or not a number; int64."""
        classes, scores = self.classify(data)
        accepted = scores <= self.threshold_  # a NaN score (e.g. from a NaN input) is never accepted
        return torch.where(accepted, classes, -1).to(torch.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "method_"):
            raise DataError("this Detector is not fitted: call fit() or Detector.load() first")

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the detector atomically (loadable with ``weights_only=True``)."""
        self._check_fitted()
        save_file(path, "detector", self.method_.name, self.state())

    def state(self) -> dict[str, Any]:
        """The payload :meth:`save` writes: plain values and tensors (``weights_only``-loadable)."""
        self._check_fitted()
        return {
            "config": self.config.to_dict(),
            "model_kwargs": self.model_kwargs_,
            "method_kwargs": self.method_kwargs_,
            "state": {k: v.cpu() for k, v in self.method_.state_dict().items()},
            "preprocess": self.preprocess_.state(),
            "threshold": self.threshold_,
            "num_classes": self.num_classes_,
            "sample_shape": list(self.sample_shape_),
        }

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Read a detector written by :meth:`save` (safe loading only).

        Raises:
            CheckpointError: the file cannot be loaded safely (see
                :func:`~encircle.checkpoint.load_file`), a field is missing or holds a
                value of the wrong type or range (the message names the field), or the
                weights do not fit the network the file names.
        """
        return cls.from_state(load_file(path, "detector"), path)

    @classmethod
    def from_state(cls, state: dict[str, Any], path: str | Path = "<state>") -> Detector:
        """Rebuild a detector from :meth:`state` (``path`` names it in error messages).

        Raises:
            CheckpointError: as :meth:`load`.
        """
        _check_fields(state, path)
        try:
            config = with_overrides(RunConfig(), flatten(state["config"]))
            detector = cls(config)
            net = create_model(config.model.name, **state["model_kwargs"])
            if not isinstance(net, Backbone):
                raise CheckpointError(f"model {config.model.name!r} is not an encircle Backbone")
            kwargs = dict(state["method_kwargs"])
            num_classes = int(kwargs.pop("num_classes", state.get("num_classes", 1)))  # older files kept it here
            detector.method_ = create_method(state["method"], net, num_classes, **kwargs)
            detector.method_.load_state_dict(state["state"])
            if config.train.channels_last:  # the memory format training left it in: the same kernels, scores
                detector.method_.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            detector.method_.eval()
            detector.preprocess_ = Preprocess.from_state(state["preprocess"])
            detector.threshold_ = float(state["threshold"])
            detector.num_classes_ = state.get("num_classes", 1)
            detector.sample_shape_ = tuple(state["sample_shape"])
            detector.model_kwargs_ = dict(state["model_kwargs"])
            detector.method_kwargs_ = dict(state["method_kwargs"])
            detector.fit_result_ = None
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{str(path)!r} does not fit this encircle's networks: {exc}") from None
        return detector


def _is_size(value: object) -> bool:
    """Whether ``value`` is an int >= 1 (``True`` is an int to Python, but not a size)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_named(value: object, of: type | tuple[type, ...] = object) -> bool:
    """Whether ``value`` is a dict of names (str) to values of type ``of``."""
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, of) for k, v in value.items())


def _is_preprocess_state(value: object) -> bool:
    """Whether ``value`` is what :meth:`Preprocess.state` writes: a known kind, tensor
    constants and an optional ``(C, H, W)``-like shape."""
    if not isinstance(value, dict):
        return False
    shape = value.get("shape")
    return (
        value.get("kind") in PREPROCESS_KINDS
        and _is_named(value.get("params", {}), torch.Tensor)
        and (shape is None or (isinstance(shape, list) and all(_is_size(side) for side in shape)))
    )


#: What each field of a detector file must hold (see :meth:`Detector.save`), and a check.
_FIELDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "config": ("a dict of configuration sections", _is_named),
    "model_kwargs": ("a dict of keyword arguments", _is_named),
    "method_kwargs": ("a dict of keyword arguments", _is_named),
    "state": ("a dict of tensors (the method's state dict)", lambda v: _is_named(v, torch.Tensor)),
    "preprocess": (
        f"a preprocessing state (a 'kind' among {', '.join(PREPROCESS_KINDS)}, tensor 'params', 'shape' None "
        "or a list of sizes >= 1)",
        _is_preprocess_state,
    ),
    "threshold": ("a real number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "num_classes": ("an integer >= 1", _is_size),
    "sample_shape": ("a list of sizes >= 1", lambda v: isinstance(v, list | tuple) and all(map(_is_size, v))),
}
#: Fields files of older versions may lack, and the value they stand for.
_DEFAULTS = {"num_classes": 1}


def _check_fields(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a detector file whose fields are missing or of the wrong type or range, naming the field.

    The file's sha256 proves only that it is unchanged since it was written, not that what
    wrote it wrote sensible values; unchecked, a junk field fails far from its cause (an
    ``AttributeError`` inside the preprocessing, an ``OverflowError`` from ``int(inf)``),
    or worse, loads and fails only when scoring.
    """
    for name, (expected, ok) in _FIELDS.items():
        if name not in state and name not in _DEFAULTS:
            raise CheckpointError(f"{str(path)!r} is not a complete detector file: field {name!r} is missing")
        value = state.get(name, _DEFAULTS.get(name))
        if not ok(value):
            raise CheckpointError(f"{str(path)!r}: field {name!r} must be {expected}, got {value!r:.80}")


def fit_detectors(
    jobs: Sequence[tuple[Detector, ArrayLike, torch.Tensor | np.ndarray | None]],
    *,
    tags: list[str] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> list[Detector | TrainingError]:
    """Fit many detectors of one method and architecture (a sweep over classes, seeds or
    trials): ``jobs`` are ``(detector, data, labels)``; returns each fitted detector, or
    the :class:`TrainingError` that stopped it (the others still train).

    ``train.batch_models`` (of the first detector's config) says how many train at once
    (:mod:`encircle.batched`): 0 = automatic (all of them on a GPU, chunks of
    :data:`~encircle.batched.CPU_MODELS_IN_FLIGHT` on a CPU, and no more than fit in half
    the free memory, see :func:`~encircle.batched.models_in_flight`), 1 = one after another with
    :meth:`Detector.fit` (the sequential path), ``N`` = chunks of ``N``. Batched, each
    model still trains exactly as it would alone, to float rounding. ``out_dir`` holds
    ``chunkI/checkpoint.pt`` of each chunk (``resume`` continues it) and ``TAG/history.jsonl``.
    """
    if not jobs:
        return []
    tags = tags or [f"model{i}" for i in range(len(jobs))]
    out = Path(out_dir) if out_dir is not None else None
    first = jobs[0][0].config
    device = resolve_device(first.train.device)
    per_chunk = batched.models_in_flight(first.train.batch_models, len(jobs), device)
    results: list[Detector | TrainingError] = []
    reason = batched.unbatchable(method_class(first.method.name), first.train)
    if reason and per_chunk > 1:
        log.info("training %d models one after another: %s", len(jobs), reason)
    if per_chunk == 1 or reason:
        for (detector, data, labels), tag in zip(jobs, tags, strict=True):
            try:
                results.append(
                    detector.fit(data, labels, out_dir=out / tag if out else None, resume=resume, progress=progress)
                )
            except TrainingError as exc:
                results.append(TrainingError(f"{tag}: {exc}"))
        return results
    pending = iter(zip(jobs, tags, strict=True))
    ready = [_batch_member(*next(pending))]
    if first.train.batch_models == 0:  # automatic: no more models than fit in memory
        member = ready[0][2]
        shape = tuple(member.preprocess(member.samples[:1]).shape[1:])
        need = footprint.training_bytes(member.method.net, shape, first.train.batch_size)
        per_chunk = batched.models_in_flight(0, len(jobs), device, per_model_bytes=need)
        log.info("training %d models, %d at a time (about %.0f MiB each)", len(jobs), per_chunk, need / 2**20)
    for index in itertools.count():
        ready += [_batch_member(*job) for job in itertools.islice(pending, per_chunk - len(ready))]
        if not ready:
            break
        chunk, ready = ready, []
        chunk_tags = [member.tag for _, _, member in chunk]
        fitted = batched.fit_many(
            [member for _, _, member in chunk],
            first.train,
            checkpoint_path=out / f"chunk{index}" / TRAIN_FILES[0] if out else None,
            resume=resume,
            metadata={"config": first.to_dict(), "tags": chunk_tags},
            progress=progress,
        )
        for (detector, parts, member), result in zip(chunk, fitted, strict=True):
            if isinstance(result, TrainingError):
                results.append(result)
                continue
            detector.fit_result_ = result
            if out is not None:
                write_history(out / member.tag / TRAIN_FILES[1], result.history)
            detector._complete(*parts)
            results.append(detector)
    return results


def _batch_member(
    job: tuple[Detector, ArrayLike, torch.Tensor | np.ndarray | None], tag: str
) -> tuple[Detector, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], batched.Member]:
    """A job's detector prepared (network, preprocessing, method), what its
    ``_complete`` needs after training, and its batched-trainer member."""
    detector, data, labels = job
    samples, train, train_labels, _, holdout = detector._prepare(data, labels, None)
    member = batched.member(
        detector.method_,
        train,
        train_labels,
        detector.config.train,
        preprocess=detector.preprocess_,
        seed=detector.config.seed,
        tag=tag,
    )
    return detector, (samples, train, train_labels, holdout), member


def all_fitted(results: list[Detector | TrainingError], what: str = "models") -> list[Detector]:
    """The detectors of :func:`fit_detectors`, or one :class:`TrainingError` naming every
    model that failed (for callers that need them all, e.g. a protocol's table)."""
    failures = [str(r) for r in results if isinstance(r, TrainingError)]
    if failures:
        raise TrainingError(f"{len(failures)} of {len(results)} {what} failed: " + "; ".join(failures))
    return [r for r in results if isinstance(r, Detector)]
