"""scikit-learn / PyOD-style estimators over the method contract.

Each class wraps one registered method (:mod:`encircle.methods`) in the scikit-learn
estimator contract: ``__init__`` only stores its keyword arguments, ``get_params`` /
``set_params`` / ``sklearn.base.clone`` work, ``fit`` returns ``self`` and learned state
ends in ``_``. The arguments are the method's declared hyperparameters
(:func:`encircle.methods.hyperparameters`) plus the training settings every method
shares (:data:`COMMON`). Training is :class:`~encircle.detector.Detector`'s (one engine,
no second loop); the network, preprocessing and schedule come from the data
(:func:`encircle.inputs.default_config`) unless given.

Outputs (NumPy in, NumPy out):

========================  ==============================================================
call / attribute          meaning
========================  ==============================================================
``predict(X)``            one-class: ``+1`` inlier, ``-1`` outlier (scikit-learn);
                          open-set: the known class, or ``-1`` for unknown
``score_samples(X)``      higher = more normal (scikit-learn); ``= -anomaly_score(X)``
``decision_function(X)``  one-class: ``score_samples(X) - offset_``; ``< 0`` is an outlier
``anomaly_score(X)``      higher = more anomalous (PyOD's ``decision_function``, encircle's
                          score everywhere else)
``predict_proba(X)``      open-set: ``(N, K)`` class scores summing to 1 (softmax of the
                          negated distances, or of the logits)
``fit_predict(X)``        ``fit(X).predict(X)``
``decision_scores_``      ``anomaly_score`` of the training data (PyOD)
``threshold_``            anomaly scores above it are outliers (PyOD); ``offset_ = -threshold_``
``labels_``               ``0`` inlier / ``1`` outlier on the training data (PyOD)
========================  ==============================================================

The sign clash (scikit-learn's ``decision_function`` is higher = more normal, PyOD's
higher = more anomalous) is resolved by keeping scikit-learn's meaning for its method
names and giving PyOD's anomaly score its own name, ``anomaly_score``; PyOD's
*attributes* keep PyOD's meaning. The threshold follows both libraries: ``contamination``
is the share of the training data flagged, ``threshold_`` the ``1 - contamination``
percentile of ``decision_scores_`` (linearly interpolated, as PyOD). (The command line's ``Detector`` instead calibrates
on held-out normal data at a target true-positive rate.)

Example (run as a doctest by ``tests/test_estimators.py``)::

    >>> import numpy as np, encircle
    >>> X = np.random.default_rng(0).normal(size=(200, 4))
    >>> est = encircle.DeepSVDD(epochs=2, random_state=0).fit(X)
    >>> est.predict(X[:3]).shape
    (3,)
    >>> float(est.labels_.mean())  # contamination=0.1 of the training data is flagged
    0.1
    >>> bool(((est.predict(X) == -1) == (est.anomaly_score(X) > est.threshold_)).all())
    True
    >>> bool((est.score_samples(X) == -est.anomaly_score(X)).all())
    True
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from encircle import inputs
from encircle.checkpoint import load_file, save_file
from encircle.config import RunConfig, with_overrides
from encircle.detector import Detector
from encircle.errors import CheckpointError, ConfigError, DataError, TrainingError
from encircle.methods import hyperparameters, list_methods, method_class
from encircle.methods.base import Method
from encircle.preprocess import Preprocess

try:  # scikit-learn is optional: with it, the estimators are its estimators (tags, repr, checks)
    from sklearn.base import BaseEstimator as _SkBase
    from sklearn.base import ClassifierMixin as _SkClassifier
    from sklearn.base import OutlierMixin as _SkOutlier
    from sklearn.exceptions import DataConversionWarning
    from sklearn.exceptions import NotFittedError as _SkNotFitted

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    HAVE_SKLEARN = False

    class _SkBase:  # type: ignore[no-redef]
        """The parameter protocol of scikit-learn's ``BaseEstimator``."""

        @classmethod
        def _get_param_names(cls) -> list[str]:
            return sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params: Any) -> Any:
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; valid: {valid}")
                setattr(self, key, value)
            return self

        def __repr__(self) -> str:
            defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
            changed = {k: v for k, v in self.get_params().items() if v is not defaults.get(k) and v != defaults.get(k)}
            return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    class _SkOutlier:  # type: ignore[no-redef]
        pass

    class _SkClassifier:  # type: ignore[no-redef]
        pass

    class _SkNotFitted(ValueError, AttributeError):  # type: ignore[no-redef]
        pass

    class DataConversionWarning(UserWarning):  # type: ignore[no-redef]
        pass


class NotFittedError(DataError, _SkNotFitted):
    """An estimator used before ``fit`` (scikit-learn's ``NotFittedError`` when installed)."""


#: The training settings every estimator takes: ``(name, default, doc)``.
COMMON: tuple[tuple[str, Any, str], ...] = (
    ("model", "auto", "network name (``encircle.models.list_models()``); ``'auto'`` picks it from the data"),
    ("epochs", None, "training epochs; ``None``: the method's recipe, else about 150 steps (10..100 epochs)"),
    ("batch_size", None, "mini-batch size; ``None``: the method's recipe, else 128 (``N/8``, >= 16, for small N)"),
    ("lr", None, "learning rate; ``None``: the method's recipe, else 1e-3"),
    ("weight_decay", None, "weight decay; ``None``: the method's recipe, else 0"),
    (
        "preprocess",
        "auto",
        "``'auto'`` (standardize features, scale images), or unit, gcn-minmax, standardize, normalize",
    ),
    ("contamination", 0.1, "share of the training data flagged as outliers, in (0, 0.5]: sets ``threshold_``"),
    ("device", "auto", "``'auto'`` (CUDA when present), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``"),
    ("amp", "off", "mixed precision: ``'off'``, ``'bf16'``, ``'fp16'`` or ``'auto'``"),
    ("random_state", None, "seed of every random generator (an int repeats a run exactly on the CPU)"),
    ("verbose", False, "show a progress bar while training"),
    (
        "n_jobs",
        None,
        "torch threads while fitting and scoring (-1: every core); ``None``: one for feature vectors on the CPU "
        "(tiny networks, where more threads only add overhead), torch's setting otherwise",
    ),
)
#: The softmax baseline's score rules by their estimator spelling.
SOFTMAX_SCORES = {"msp": "msp", "maxlogit": "max-logit", "max-logit": "max-logit", "energy": "energy"} | {
    "mahalanobis": "mahalanobis"
}
#: Every estimator class by name (for :func:`load`).
ESTIMATORS: dict[str, type[EncircleEstimator]] = {}


class EncircleEstimator(_SkBase):
    """The shared part of every estimator: the parameters, ``fit``, scoring, save, export."""

    #: the registered method this estimator trains
    _method: ClassVar[str] = ""
    _is_open_set: ClassVar[bool] = False
    #: the method's networks take images only (OGNet)
    _images_only: ClassVar[bool] = False

    # -- parameters -------------------------------------------------------------------
    def _method_params(self) -> dict[str, Any]:
        """The method's hyperparameters from this estimator's arguments."""
        values = {h.name: getattr(self, h.name) for h in hyperparameters(self._kind())}
        if "score_rule" in values:
            rule = values["score_rule"]
            if rule not in SOFTMAX_SCORES:
                raise ConfigError(f"score_rule must be one of {', '.join(SOFTMAX_SCORES)}, got {rule!r}")
            values["score_rule"] = SOFTMAX_SCORES[rule]
        return values

    @classmethod
    def _kind(cls) -> type[Method]:
        return method_class(cls._method)

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.randint(0, 2**31 - 1))
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        if not isinstance(self.random_state, int | np.integer) or isinstance(self.random_state, bool):
            raise ConfigError(f"random_state must be None or an integer, got {self.random_state!r}")
        return int(self.random_state)

    def _config(self, samples: torch.Tensor, seed: int) -> RunConfig:
        """The run configuration: the data's defaults, the method's recipe, then the arguments."""
        p = self.get_params()
        contamination = p["contamination"]
        if (
            not isinstance(contamination, int | float)
            or isinstance(contamination, bool)
            or not 0 < contamination <= 0.5
        ):
            raise ConfigError(f"contamination must be a number in (0, 0.5], got {contamination!r}")
        overrides: dict[str, Any] = {
            "seed": seed,
            "method.name": self._method,
            "calibration.holdout": 0.0,
            "train.device": p["device"],
            "train.amp": p["amp"],
            "train.eval_every": 0,
        }
        if p["epochs"] is not None:
            overrides["train.epochs"] = p["epochs"]
        if p["batch_size"] is not None:
            overrides["train.batch_size"] = p["batch_size"]
        if p["model"] != "auto":
            overrides["model.name"] = p["model"]
        if p["preprocess"] != "auto":
            overrides["data.preprocess"] = p["preprocess"]
        if p["lr"] is not None:
            overrides["train.lr"] = p["lr"]
        if p["weight_decay"] is not None:
            overrides["train.weight_decay"] = p["weight_decay"]
        overrides.update({f"method.{k}": v for k, v in self._method_params().items()})
        return with_overrides(inputs.default_config(samples, self._method), overrides)

    # -- training ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, outliers: Any = None) -> Any:
        """Train on ``X`` and set the threshold from ``contamination``; returns ``self``.

        Args:
            X: training samples (features, images, a DataFrame, tensor, encircle dataset,
                torch Dataset or DataLoader; see :mod:`encircle.inputs`).
            y: known-class labels, required by the open-set methods (default: the labels
                of an encircle dataset, or of a DataLoader's ``(x, y)`` batches); ignored by
                the one-class ones (scikit-learn passes ``y`` along in pipelines and searches).
            outliers: samples of no known class (Deep SAD's labelled anomalies, MCHAD's
                outlier exposure); refused by methods that do not use them.
        """
        kind = self._kind()
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)  # a refit starts clean (no classes_ or feature names of an earlier fit)
        samples = inputs.as_samples(X, "X")
        n = samples.shape[0]
        if n < 2:
            raise DataError(f"{type(self).__name__} needs at least 2 samples to fit, got 1 sample")
        if self._images_only and inputs.is_features(samples):
            raise DataError(
                f"{type(self).__name__} trains on images (N, H, W), (N, C, H, W) or (N, H, W, C); X holds feature "
                f"vectors of shape {tuple(samples.shape)}"
            )
        if outliers is not None and not kind.uses_outliers:
            users = [name for name, cls in ESTIMATORS.items() if cls._kind().uses_outliers]
            raise DataError(
                f"{type(self).__name__} does not use outliers; drop outliers=..., or use one that does "
                f"({', '.join(users)})"
            )
        extra = inputs.as_samples(outliers, "outliers") if outliers is not None else None
        if extra is not None and (extra.shape[1:] != samples.shape[1:] or extra.dtype != samples.dtype):
            raise DataError(
                f"outliers have samples of shape {tuple(extra.shape[1:])} {_dtype(extra)}, X has "
                f"{tuple(samples.shape[1:])} {_dtype(samples)}"
            )
        if y is None and kind.uses_labels:  # an encircle dataset's labels, or a DataLoader's (x, y) batches
            y = inputs.labels_of(X)
        labels = self._encode_labels(y, n) if kind.uses_labels else None
        config = self._config(samples, self._seed())
        detector = Detector(config)
        try:
            with self._threads(inputs.is_features(samples)):
                detector.fit(samples, labels, outliers=extra, progress=bool(self.verbose) or False)
        except TrainingError as exc:
            # the engine names config keys (train.lr, method.eps): here they are this estimator's arguments
            message = re.sub(r"\b(train|method)\.(\w+)", r"\2", str(exc))
            raise TrainingError(f"{type(self).__name__}: {message}") from exc
        self.detector_ = detector
        self.input_dtype_ = _dtype(samples)
        self.sample_shape_ = tuple(samples.shape[1:])
        if inputs.is_features(samples):
            self.n_features_in_ = int(samples.shape[1])
            columns = getattr(X, "columns", None)
            if columns is not None and all(isinstance(c, str) for c in columns):
                self.feature_names_in_ = np.asarray(list(columns), dtype=object)
        scores = self._anomaly_scores(samples)
        self.decision_scores_ = scores
        # PyOD's threshold: the (1 - contamination) percentile, linearly interpolated, so that
        # it falls between two training scores and float rounding cannot flip one of them
        self.threshold_ = float(np.percentile(scores, 100 * (1 - float(self.contamination))))
        detector.threshold_ = self.threshold_
        self.offset_ = -self.threshold_
        self.labels_ = (scores > self.threshold_).astype(np.int64)
        return self

    def _encode_labels(self, y: Any, n: int) -> torch.Tensor:
        """``y`` as ``0..K-1``; ``classes_`` keeps the original labels (integers, ``-1`` reserved)."""
        if y is None:
            raise DataError(
                f"{type(self).__name__} learns known classes, so it requires y to be passed, but the target y is "
                f"None: call fit(X, y) with {n} labels"
            )
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected; it is flattened",
                DataConversionWarning,
                stacklevel=3,
            )
            labels = labels.ravel()
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DataError(f"y must be 1-D with one label per sample ({n}), got shape {labels.shape}")
        if labels.dtype == object:
            with contextlib.suppress(TypeError, ValueError):
                labels = labels.astype(np.float64)
        if labels.dtype.kind not in "iu" and not (
            labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all()
        ):
            kind = "continuous" if labels.dtype.kind == "f" else str(labels.dtype)
            raise DataError(
                f"Unknown label type: {kind}; y must hold integer class labels (-1 is reserved for unknown)"
            )
        classes, encoded = np.unique(labels.astype(np.int64), return_inverse=True)
        if (classes < 0).any():
            raise DataError(
                "y holds negative labels; -1 means unknown in encircle: pass unknown samples as outliers=... "
                "(methods that use them), and known classes as labels >= 0"
            )
        if len(classes) < 2:
            raise DataError(f"y must hold at least 2 known classes, got 1 class ({classes.tolist()})")
        self.classes_ = classes
        return torch.from_numpy(encoded.astype(np.int64).reshape(-1))

    # -- scoring ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "detector_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )

    def _batches(self, X: Any) -> list[torch.Tensor]:
        """``X`` as batches of samples checked against the training data's shape and type."""
        self._check_fitted()
        batches = list(inputs.iter_batches(X, 4096)) if inputs.is_stream(X) else [inputs.as_samples(X, "X")]
        for samples in batches:
            shape = tuple(samples.shape[1:])
            if shape != self.sample_shape_:
                if len(shape) == 1 and len(self.sample_shape_) == 1:
                    raise DataError(
                        f"X has {shape[0]} features, but {type(self).__name__} is expecting "
                        f"{self.sample_shape_[0]} features as input"
                    )
                raise DataError(
                    f"X has samples of shape {shape}, but {type(self).__name__} was fitted on shape "
                    f"{self.sample_shape_}"
                )
            dtype = _dtype(samples)
            if dtype != self.input_dtype_:
                raise DataError(
                    f"X holds {dtype} images, but {type(self).__name__} was fitted on {self.input_dtype_} images; "
                    "pass them as the training data were (integers 0..255 or floats)"
                )
        return batches

    def _anomaly_scores(self, samples: torch.Tensor) -> np.ndarray:
        with self._threads(inputs.is_features(samples)):
            return self.detector_.score(samples).numpy().astype(np.float64)

    @contextlib.contextmanager
    def _threads(self, features: bool) -> Iterator[None]:
        """Run with ``n_jobs`` torch threads (see :data:`COMMON`), restoring the setting after."""
        wanted = self.n_jobs
        if wanted is None:
            on_cpu = self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available())
            wanted = 1 if features and on_cpu else 0
        elif not isinstance(wanted, int) or isinstance(wanted, bool) or wanted == 0 or wanted < -1:
            raise ConfigError(f"n_jobs must be None, -1 or a positive integer, got {wanted!r}")
        if wanted == -1:
            wanted = os.cpu_count() or 1
        before = torch.get_num_threads()
        if wanted and wanted != before:
            torch.set_num_threads(wanted)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Anomaly scores, higher = more anomalous (PyOD's ``decision_function``), float64."""
        return np.concatenate([self._anomaly_scores(b) for b in self._batches(X)])

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality scores, higher = more normal (scikit-learn): ``-anomaly_score(X)``."""
        return -self.anomaly_score(X)

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the fitted estimator atomically; :func:`encircle.load` reads it back
        (safe loading, ``weights_only=True``)."""
        self._check_fitted()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        fitted: dict[str, Any] = {
            "threshold_": self.threshold_,
            "decision_scores_": torch.from_numpy(self.decision_scores_),
            "sample_shape_": list(self.sample_shape_),
            "input_dtype_": self.input_dtype_,
        }
        for name in ("n_features_in_",):
            if hasattr(self, name):
                fitted[name] = getattr(self, name)
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        if hasattr(self, "classes_"):
            fitted["classes_"] = self.classes_.tolist()
        payload = {
            "estimator": type(self).__name__,
            "params": params,
            "detector": {**self.detector_.state(), "method": self._method},
            "fitted": fitted,
        }
        save_file(path, "estimator", self._method, payload)

    # -- export -----------------------------------------------------------------------
    def export(self, path: str | Path, format: str = "torch") -> Path:
        """Write preprocessing + network + score as one self-contained program.

        ``format="torch"``: a ``torch.export`` program (``.pt2``), loaded with plain
        PyTorch, no encircle needed::

            import torch
            scorer = torch.export.load("detector.pt2").module()
            scores = scorer(torch.as_tensor(X, dtype=torch.float32))  # higher = more anomalous

        ``format="onnx"``: an ONNX model (needs the ``onnx`` package to write, and
        ``onnxruntime`` to run)::

            import onnxruntime, numpy as np
            session = onnxruntime.InferenceSession("detector.onnx")
            scores = session.run(None, {"x": X.astype(np.float32)})[0]

        The program takes a batch of samples as :mod:`encircle.inputs` reads them:
        float32 features ``(N, D)``, or images ``(N, C, H, W)`` of the training dtype
        (``uint8`` or float32), and returns float32 anomaly scores (higher = more
        anomalous, :meth:`anomaly_score`). A ``.json`` file beside it records the
        threshold, input shape and dtype. Returns the program's path.
        """
        self._check_fitted()
        if format not in ("torch", "onnx"):
            raise ConfigError(f"format must be 'torch' or 'onnx', got {format!r}")
        path = Path(path)
        module = ScoringModule(self.detector_.method_, self.detector_.preprocess_).eval()
        dtype = getattr(torch, self.input_dtype_)
        example = torch.zeros((2, *self.sample_shape_), dtype=dtype)
        batch = torch.export.Dim("batch", min=1, max=2**20)
        if format == "torch":
            program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, str(path))
        else:
            _export_onnx(module, example, path)
        meta = {
            "format": format,
            "input": {"shape": ["N", *self.sample_shape_], "dtype": self.input_dtype_},
            "output": "float32 anomaly scores, higher = more anomalous",
            "threshold": self.threshold_,
            "estimator": repr(self),
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path


def _dtype(samples: torch.Tensor) -> str:
    """``"float32"`` for ``torch.float32``."""
    return str(samples.dtype).removeprefix("torch.")


class ScoringModule(nn.Module):
    """Preprocessing, network and score as one module (what :meth:`EncircleEstimator.export` writes).

    A CPU float32 copy of the method, so that exporting leaves the estimator as it is.
    """

    def __init__(self, method: Method, preprocess: Preprocess) -> None:
        super().__init__()
        self.method = copy.deepcopy(method).float().cpu().eval()
        self.method.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        self.method.requires_grad_(False)
        self.preprocess = Preprocess(
            preprocess.kind, {k: v.detach().clone().cpu() for k, v in preprocess.params.items()}, preprocess.shape
        )
        for name, value in self.preprocess.params.items():
            self.register_buffer(f"preprocess_{name}", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.preprocess.params = {k.removeprefix("preprocess_"): v for k, v in self.named_buffers() if "." not in k}
        return self.method.score(self.preprocess(x)).float()


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``module`` as an ONNX model with a dynamic batch axis (input ``x``, output ``score``)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'encircle[export]'") from None
    with warnings.catch_warnings():  # the TorchScript exporter: the dynamo one needs onnxscript too
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["score"],
            dynamic_axes={"x": {0: "N"}, "score": {0: "N"}},
            dynamo=False,
        )


class OutlierEstimator(_SkOutlier, EncircleEstimator):
    """A one-class estimator: scikit-learn's outlier-detector API plus PyOD's attributes."""

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers, ``>= 0`` for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """``+1`` for inliers, ``-1`` for outliers (anomaly score above ``threshold_``)."""
        return np.where(self.decision_function(X) >= 0, 1, -1).astype(np.int64)

    def fit_predict(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X, y, **fit_params).predict(X)``."""
        return self.fit(X, y, **fit_params).predict(X)


class OpenSetEstimator(_SkClassifier, EncircleEstimator):
    """An open-set classifier: the known class or ``-1`` for unknown, class scores, anomaly scores."""

    _is_open_set = True

    def predict(self, X: Any) -> np.ndarray:
        """The known class (a label of ``classes_``), or ``-1`` where the anomaly score is
        above ``threshold_`` (unknown)."""
        out = []
        for samples in self._batches(X):
            with self._threads(inputs.is_features(samples)):
                classes, scores = self.detector_.classify(samples)
            known = scores.numpy() <= self.threshold_
            out.append(np.where(known, self.classes_[classes.numpy()], -1))
        return np.concatenate(out).astype(np.int64)

    @torch.no_grad()
    def predict_proba(self, X: Any) -> np.ndarray:
        """``(N, K)`` class scores that sum to 1 per sample, columns in ``classes_`` order:
        softmax of the negated distances (CAC, MCHAD) or of the logits (softmax)."""
        self._check_fitted()
        method, pipeline = self.detector_.method_, self.detector_.input_pipeline()
        method.to(pipeline.device).eval()
        out = []
        for samples in self._batches(X):
            for chunk in samples.split(1024):
                x = pipeline(chunk)
                with pipeline.autocast(), self._threads(inputs.is_features(samples)):
                    distances = getattr(method, "distances", None)
                    logits = -distances(x) if distances is not None else method.embed(x)
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64))
        return np.concatenate(out)


def _estimator_class(name: str, method: str, base: type[EncircleEstimator], summary: str) -> type[EncircleEstimator]:
    """A class whose ``__init__`` takes the method's hyperparameters and :data:`COMMON`, keyword-only.

    The signature is explicit (``inspect.signature`` shows every argument and its
    default), as ``get_params`` needs; ``__init__`` only stores the values.
    """
    specs = [(h.name, h.default, h.doc) for h in hyperparameters(method_class(method))] + list(COMMON)
    parameters = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d, _ in specs]
    defaults = {n: d for n, d, _ in specs}

    def __init__(self: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(defaults))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(unknown)}; "
                f"it takes {', '.join(defaults)}"
            )
        for key, default in defaults.items():
            setattr(self, key, kwargs.get(key, default))

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = inspect.Signature([self_parameter, *parameters])  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{name}.__init__"
    args = "\n".join(f"        {n}: {doc} (default ``{d!r}``)" for n, d, doc in specs)
    doc = (
        f"{summary}\n\n    Method ``{method}`` (:mod:`encircle.methods`); outputs: see "
        f":mod:`encircle.estimators`.\n\n    Args:\n{args}\n    "
    )
    attributes: dict[str, Any] = {"__init__": __init__, "__doc__": doc, "_method": method}
    attributes["_images_only"] = method_class(method).recipe.get("model.name", "").startswith("ognet")
    cls = type(name, (base,), attributes)
    cls.__module__ = __name__
    ESTIMATORS[name] = cls
    return cls


DeepSVDD = _estimator_class(
    "DeepSVDD",
    "deep-svdd",
    OutlierEstimator,
    "Deep SVDD (Ruff et al., ICML 2018): one hypersphere around the normal data; "
    "``objective='one-class'`` or ``'soft-boundary'``.",
)
DeepSAD = _estimator_class(
    "DeepSAD",
    "deep-sad",
    OutlierEstimator,
    "Deep SAD (Ruff et al., ICLR 2020): Deep SVDD that pushes labelled anomalies (``fit(X, outliers=A)``) away.",
)
Autoencoder = _estimator_class(
    "Autoencoder",
    "autoencoder",
    OutlierEstimator,
    "An autoencoder scored by its reconstruction error (the Deep SVDD paper's baseline).",
)
OGNet = _estimator_class(
    "OGNet",
    "ognet",
    OutlierEstimator,
    "OGNet (Zaheer et al., CVPR 2020): adversarial one-class learning on images "
    "(``model='ognet-small'`` is the fast CPU variant).",
)
CAC = _estimator_class(
    "CAC",
    "cac",
    OpenSetEstimator,
    "Class Anchor Clustering (Miller et al., WACV 2021): open-set recognition of the classes in ``y``.",
)
MCHAD = _estimator_class(
    "MCHAD",
    "mchad",
    OpenSetEstimator,
    "MCHAD (Kirchheim et al., ICPR 2022): one learnable center per class; optional outlier exposure "
    "(``fit(X, y, outliers=A)``).",
)
Softmax = _estimator_class(
    "Softmax",
    "softmax",
    OpenSetEstimator,
    "A softmax classifier with a post-hoc unknown score (``score_rule``): max softmax probability ``'msp'``, "
    "max logit ``'maxlogit'``, ``'energy'`` or ``'mahalanobis'``. (Not ``score=``: that is scikit-learn's "
    "accuracy method.)",
)


def load(path: str | Path) -> EncircleEstimator:
    """Read an estimator written by :meth:`EncircleEstimator.save` (safe loading only).

    Raises:
        CheckpointError: the file cannot be loaded safely, is not an estimator file, or
            names an estimator, argument or field this encircle does not know.
    """
    state = load_file(path, "estimator")
    try:
        cls = ESTIMATORS[state["estimator"]]
        params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["params"].items()}
        est = cls(**params)
        fitted = dict(state["fitted"])
        est.detector_ = Detector.from_state(state["detector"], path)
        est.threshold_ = float(fitted["threshold_"])
        est.offset_ = -est.threshold_
        est.decision_scores_ = fitted["decision_scores_"].numpy()
        est.labels_ = (est.decision_scores_ > est.threshold_).astype(np.int64)
        est.sample_shape_ = tuple(fitted["sample_shape_"])
        est.input_dtype_ = str(fitted["input_dtype_"])
        if "n_features_in_" in fitted:
            est.n_features_in_ = int(fitted["n_features_in_"])
        if "feature_names_in_" in fitted:
            est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
        if "classes_" in fitted:
            est.classes_ = np.asarray(fitted["classes_"], dtype=np.int64)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{str(path)!r} is not a complete encircle estimator file: {exc!r}") from None
    return est


def list_estimators() -> dict[str, str]:
    """``{estimator class name: method name}``; every registered method but the
    protocol-internal ones has one."""
    return {name: cls._method for name, cls in ESTIMATORS.items()}


#: methods without an estimator class (none today); kept for the contract test
UNWRAPPED: frozenset[str] = frozenset(set(list_methods()) - {cls._method for cls in ESTIMATORS.values()})
