"""``Detector``: a trained method with its preprocessing and a calibrated threshold.

The estimator API follows scikit-learn: hyperparameters (a :class:`RunConfig`) go to
``__init__``, learned state lives in attributes ending in ``_``, and ``fit`` returns
``self``. Unlike PyOD's contamination rate, the threshold is calibrated from a target
true-positive rate on held-out *normal* data (no anomalies are needed, none are peeked
at): ``threshold_`` accepts at least ``calibration.tpr`` of the held-out normal samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encircle.checkpoint import load_file, save_file
from encircle.config import RunConfig, TrainConfig, flatten, with_overrides
from encircle.data.dataset import ImageDataset
from encircle.engine import FitResult, InputPipeline, fit, resolve_device, score_samples
from encircle.errors import CheckpointError, DataError
from encircle.methods import create_method, method_parameters
from encircle.methods.base import Method
from encircle.models import create_model, model_parameters
from encircle.models.base import Backbone
from encircle.preprocess import Preprocess

ArrayLike = torch.Tensor | np.ndarray | ImageDataset
#: (checkpoint, history) file names in ``out_dir`` for the training and pretraining runs.
TRAIN_FILES = ("checkpoint.pt", "history.jsonl")
PRETRAIN_FILES = ("pretrain.pt", "pretrain_history.jsonl")


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
    return data


class Detector:
    """Anomaly detector around one registered method.

    Args:
        config: the run configuration (model, method, training, calibration, seed).

    Attributes (after ``fit`` or ``load``):
        method_: the trained method (network + learned state).
        preprocess_: the fitted batch transform.
        threshold_: score above which a sample is an anomaly.
        sample_shape_: the shape of one training sample; scored data must match it.
        fit_result_: per-epoch history and training time (``None`` after ``load``).
    """

    def __init__(self, config: RunConfig | None = None) -> None:
        self.config = config or RunConfig()

    # -- training ---------------------------------------------------------------------
    def fit(
        self,
        data: ArrayLike,
        *,
        eval_hook: Callable[[Method], dict[str, float]] | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool | None = None,
    ) -> Detector:
        """Train on normal ``data`` and calibrate the threshold on a held-out part.

        With ``method.pretrain``, an autoencoder whose encoder is the network is trained
        first (``pretrain_result_`` holds its history). ``out_dir`` receives
        ``checkpoint.pt`` and ``history.jsonl`` (and ``pretrain.pt``,
        ``pretrain_history.jsonl``); ``resume`` continues from those checkpoints.
        """
        cfg = self.config
        samples = _as_samples(data, "data")
        train_idx, holdout_idx = self._split(samples.shape[0])
        train = samples[train_idx]
        self.sample_shape_ = tuple(samples.shape[1:])
        self.model_kwargs_ = self._model_kwargs(self.sample_shape_)
        torch.manual_seed(cfg.seed)  # the network's initial weights
        net = create_model(cfg.model.name, **self.model_kwargs_)
        if not isinstance(net, Backbone):
            raise DataError(f"model {cfg.model.name!r} is not an encircle Backbone")
        resize = samples.ndim == 4 and net.input_shape is not None and self.sample_shape_ != net.input_shape
        self.preprocess_ = Preprocess(cfg.data.preprocess, shape=net.input_shape if resize else None).fit(train)
        out = Path(out_dir) if out_dir is not None else None

        def train_method(method: Method, settings: TrainConfig, files: tuple[str, str], **extra: Any) -> FitResult:
            return fit(
                method,
                train,
                torch.zeros(len(train), dtype=torch.int64),
                settings,
                preprocess=self.preprocess_,
                seed=cfg.seed,
                checkpoint_path=out / files[0] if out else None,
                history_path=out / files[1] if out else None,
                resume=resume,
                progress=progress,
                **extra,
            )

        self.pretrain_result_: FitResult | None = None
        main_checkpoint_exists = out is not None and (out / TRAIN_FILES[0]).is_file()
        if cfg.method.pretrain and not (resume and main_checkpoint_exists):
            # the autoencoder shares `net` as its encoder: its trained weights carry over
            autoencoder = create_method("autoencoder", net)
            self.pretrain_result_ = train_method(autoencoder, cfg.method.pretrain_config(cfg.train), PRETRAIN_FILES)
        accepted = method_parameters(cfg.method.name)
        self.method_kwargs_ = {k: v for k, v in cfg.method.to_kwargs().items() if k in accepted}
        self.method_ = create_method(cfg.method.name, net, **self.method_kwargs_)
        self.fit_result_: FitResult | None = train_method(
            self.method_, cfg.train, TRAIN_FILES, eval_hook=eval_hook, metadata={"config": cfg.to_dict()}
        )
        calibration = samples[holdout_idx] if len(holdout_idx) else train
        self.threshold_ = threshold_at_tpr(self.score(calibration), cfg.calibration.tpr)
        return self

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        holdout = self.config.calibration.holdout
        n_holdout = math.ceil(holdout * n) if holdout > 0 else 0
        if n - n_holdout < 1 or (holdout > 0 and n < 2):
            raise DataError(f"fit needs at least 2 normal samples (training + calibration), got {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed))
        return order[n_holdout:].sort().values, order[:n_holdout].sort().values

    def _model_kwargs(self, sample_shape: tuple[int, ...]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"out_features": self.config.model.out_features}
        if "in_features" in model_parameters(self.config.model.name):
            kwargs["in_features"] = math.prod(sample_shape)
        return kwargs

    # -- inference --------------------------------------------------------------------
    def input_pipeline(self) -> InputPipeline:
        train = self.config.train
        return InputPipeline(self.preprocess_, resolve_device(train.device), train.channels_last, train.amp)

    def score(self, data: ArrayLike, batch_size: int | None = None) -> torch.Tensor:
        """Anomaly scores (higher = more anomalous), float32 on the CPU."""
        self._check_fitted()
        samples = _as_samples(data, "data")
        resized = self.preprocess_.shape is not None and samples.ndim == 4
        if not resized and tuple(samples.shape[1:]) != self.sample_shape_:
            raise DataError(
                f"data has samples of shape {tuple(samples.shape[1:])}, but this detector "
                f"was trained on shape {self.sample_shape_}"
            )
        pipeline = self.input_pipeline()
        self.method_.to(pipeline.device)
        return score_samples(self.method_, samples, pipeline, batch_size).cpu()

    def predict(self, data: ArrayLike) -> torch.Tensor:
        """``0`` (normal) or ``-1`` (anomaly, score above ``threshold_``), int64."""
        scores = self.score(data)
        return torch.where(scores > self.threshold_, -1, 0).to(torch.int64)

    def _check_fitted(self) -> None:
        if not hasattr(self, "method_"):
            raise DataError("this Detector is not fitted: call fit() or Detector.load() first")

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the detector atomically (loadable with ``weights_only=True``)."""
        self._check_fitted()
        save_file(
            path,
            "detector",
            self.method_.name,
            {
                "config": self.config.to_dict(),
                "model_kwargs": self.model_kwargs_,
                "method_kwargs": self.method_kwargs_,
                "state": {k: v.cpu() for k, v in self.method_.state_dict().items()},
                "preprocess": self.preprocess_.state(),
                "threshold": self.threshold_,
                "sample_shape": list(self.sample_shape_),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Read a detector written by :meth:`save` (safe loading only)."""
        state = load_file(path, "detector")
        try:
            config = with_overrides(RunConfig(), flatten(state["config"]))
            detector = cls(config)
            net = create_model(config.model.name, **state["model_kwargs"])
            if not isinstance(net, Backbone):
                raise CheckpointError(f"model {config.model.name!r} is not an encircle Backbone")
            detector.method_ = create_method(state["method"], net, **state["method_kwargs"])
            detector.method_.load_state_dict(state["state"])
            detector.method_.eval()
            detector.preprocess_ = Preprocess.from_state(state["preprocess"])
            detector.threshold_ = float(state["threshold"])
            detector.sample_shape_ = tuple(state["sample_shape"])
            detector.model_kwargs_ = dict(state["model_kwargs"])
            detector.method_kwargs_ = dict(state["method_kwargs"])
            detector.fit_result_ = None
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{str(path)!r} does not fit this encircle's networks: {exc}") from None
        return detector
