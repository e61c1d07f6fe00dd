"""Run configuration: frozen dataclasses, TOML files and ``section.key=value`` overrides.

A run's configuration is a :class:`RunConfig` with sections ``data``, ``model``,
``method``, ``train`` and ``calibration`` plus a top-level ``seed``. Protocols define
their defaults; a TOML file (``--config``) and then ``--set`` overrides change them. An
unknown key, or a value of the wrong type, is a :class:`~encircle.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encircle.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("off", "bf16", "fp16", "auto")
OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("multistep", "cosine")
AUGMENTATIONS = ("none", "shift", "resized-crop")


def _require(ok: bool, key: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {got!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how much of it.

    ``root`` empty means "resolve" (cache, system locations, download); ``ood`` names the
    test-time out-of-distribution dataset of OOD protocols and ``outliers`` the dataset
    of training outliers for outlier exposure (empty = none); ``normal_classes`` the
    classes one-class protocols sweep (empty = all); ``max_train``/``max_test``/
    ``max_ood`` (0 = all) cap the sample counts, taking a seeded stratified subset.
    """

    name: str = "mnist"
    root: str = ""
    ood: str = "fashion-mnist"
    outliers: str = ""
    normal_classes: tuple[int, ...] = ()
    preprocess: str = "unit"
    max_train: int = 0
    max_test: int = 0
    max_ood: int = 0

    def __post_init__(self) -> None:
        _require(self.max_train >= 0, "data.max_train", ">= 0", self.max_train)
        _require(self.max_test >= 0, "data.max_test", ">= 0", self.max_test)
        _require(self.max_ood >= 0, "data.max_ood", ">= 0", self.max_ood)


@dataclass(frozen=True)
class ModelConfig:
    """Network name (see ``encircle.models.list_models()``) and output size.

    ``dropout``, ``depth`` and ``widen_factor`` go to the networks that take them
    (``seed004``, ``wrn``, ``lenet-mnist``; 0 = the network's default depth/width). ``pretrained`` names
    weights (``encircle.models.pretrained.list_pretrained()``) or a weights file loaded
    into the network before training, all but its head, which gets ``out_features``.
    """

    name: str = "seed000"
    out_features: int = 2
    dropout: float = 0.5
    depth: int = 0
    widen_factor: int = 0
    pretrained: str = ""

    def __post_init__(self) -> None:
        _require(self.out_features >= 1, "model.out_features", ">= 1", self.out_features)
        _require(0 <= self.dropout < 1, "model.dropout", "in [0, 1)", self.dropout)


@dataclass(frozen=True)
class MethodConfig:
    """Method name (see ``encircle.methods.list_methods()``) and its hyperparameters.

    Each method takes the fields its constructor names (Deep SVDD: ``objective``,
    ``nu``, ``eps``, ``warm_up_epochs``, ``radius_update``; CAC: ``alpha``,
    ``lambda_anchor``, ``reestimate_anchors``; MCHAD: ``weight_ce``, ``weight_center``,
    ``weight_oe``, ``margin``; OGNet: ``d_lr``, ``old_epoch``, ``noise_std``,
    ``phase2_lr``, ``phase2_iterations``, ``phase2_batch_size``, ``real_weight``,
    ``pseudo_weight``; the cross-entropy classifier: ``score_rule``,
    ``shrinkage``); values are checked there.
    ``pretrain`` trains an autoencoder whose encoder is the network first (Ruff et al.;
    the authors' MNIST settings: Adam lr 1e-4, weight decay 5e-4, lr x0.1 at epoch 50).
    """

    name: str = "deep-svdd"
    objective: str = "one-class"
    nu: float = 0.1
    eps: float = 0.1
    warm_up_epochs: int = 10
    radius_update: str = "batch"
    pretrain: bool = False
    pretrain_epochs: int = 150
    pretrain_lr: float = 1e-4
    pretrain_weight_decay: float = 5e-4
    pretrain_lr_milestones: tuple[int, ...] = (50,)
    # Class Anchor Clustering (Miller et al., WACV 2021)
    alpha: float = 10.0
    lambda_anchor: float = 0.1
    reestimate_anchors: bool = True
    # MCHAD (Kirchheim et al., ICPR 2022)
    weight_ce: float = 1.0
    weight_center: float = 1.0
    weight_oe: float = 1.0
    margin: float = 4.0
    # OGNet (Zaheer et al., CVPR 2020); phase one uses train.lr/epochs/batch_size for G
    d_lr: float = 1e-4
    old_epoch: int = 1
    noise_std: float = 0.155
    phase2_lr: float = 5e-5
    phase2_iterations: int = 75
    phase2_batch_size: int = 8
    real_weight: float = 0.1
    pseudo_weight: float = 0.05
    # cross-entropy classifier with a post-hoc score
    score_rule: str = "msp"
    shrinkage: float = 0.0

    def __post_init__(self) -> None:
        _require(self.pretrain_epochs >= 1, "method.pretrain_epochs", ">= 1", self.pretrain_epochs)
        _require(self.pretrain_lr > 0, "method.pretrain_lr", "> 0", self.pretrain_lr)

    def pretrain_config(self, train: TrainConfig) -> TrainConfig:
        """The autoencoder's fit settings: ``train`` with the ``pretrain_*`` values."""
        return dataclasses.replace(
            train,
            epochs=self.pretrain_epochs,
            lr=self.pretrain_lr,
            weight_decay=self.pretrain_weight_decay,
            lr_milestones=self.pretrain_lr_milestones,
        )

    def to_kwargs(self) -> dict[str, Any]:
        """Every hyperparameter but ``name``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


@dataclass(frozen=True)
class TrainConfig:
    """The fit loop's settings.

    ``scheduler`` is ``"multistep"`` (``lr_milestones`` are epochs at which the learning
    rate is multiplied by ``lr_gamma``) or ``"cosine"`` (cosine annealing to 0 over
    ``epochs``, as MCHAD);
    ``amp`` runs the network body in bf16/fp16 autocast (heads and distances stay
    float32; ``"auto"``: bf16 on GPUs that support it, fp16 on older GPUs, off on the
    CPU); ``checkpoint_every`` = 0 writes a checkpoint only at the end;
    ``eval_every`` = 0 evaluates only at the end;
    ``augment`` transforms training batches on the device (:mod:`encircle.augment`):
    ``"shift"`` translates by up to ``augment_shift`` pixels, ``"resized-crop"`` crops
    ``augment_min_scale``..1 of the area and resizes back (the CAC authors' recipe).
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    scheduler: str = "multistep"
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = True
    checkpoint_every: int = 0
    eval_every: int = 1
    augment: str = "none"
    augment_shift: int = 2
    augment_min_scale: float = 0.7

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", ">= 1", self.epochs)
        _require(self.batch_size >= 1, "train.batch_size", ">= 1", self.batch_size)
        _require(self.lr > 0, "train.lr", "> 0", self.lr)
        _require(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        _require(self.momentum >= 0, "train.momentum", ">= 0", self.momentum)
        _require(self.lr_gamma > 0, "train.lr_gamma", "> 0", self.lr_gamma)
        _require(self.optimizer in OPTIMIZERS, "train.optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        _require(self.scheduler in SCHEDULERS, "train.scheduler", f"one of {SCHEDULERS}", self.scheduler)
        _require(self.amp in AMP_MODES, "train.amp", f"one of {AMP_MODES}", self.amp)
        _require(
            self.device in DEVICES or self.device.startswith("cuda:"),
            "train.device",
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
            self.device,
        )
        _require(self.checkpoint_every >= 0, "train.checkpoint_every", ">= 0", self.checkpoint_every)
        _require(self.eval_every >= 0, "train.eval_every", ">= 0", self.eval_every)
        _require(self.augment in AUGMENTATIONS, "train.augment", f"one of {AUGMENTATIONS}", self.augment)
        _require(self.augment_shift >= 0, "train.augment_shift", ">= 0", self.augment_shift)
        _require(0 < self.augment_min_scale <= 1, "train.augment_min_scale", "in (0, 1]", self.augment_min_scale)


@dataclass(frozen=True)
class CalibrationConfig:
    """Threshold calibration: the fraction ``holdout`` of the normal training data is
    kept out of training, and the threshold accepts ``tpr`` of it as normal.

    ``holdout = 0`` trains on all the data and calibrates on the training scores, which
    are optimistic (lower than on unseen normal data): use it only to reproduce a
    protocol that trains on every sample.
    """

    tpr: float = 0.95
    holdout: float = 0.1

    def __post_init__(self) -> None:
        _require(0 < self.tpr <= 1, "calibration.tpr", "in (0, 1]", self.tpr)
        _require(0 <= self.holdout < 1, "calibration.holdout", "in [0, 1)", self.holdout)


@dataclass(frozen=True)
class OpenSetConfig:
    """Which classes are known in open-set and outlier-exposure protocols.

    ``trial`` picks open-set trials (the five known/unknown splits of Neal et al.,
    ECCV 2018, used by Miller et al., WACV 2021; empty = all five); ``known_classes``,
    when set, replaces the trials with one explicit split; ``outlier_classes`` are
    classes given to training as outliers (label -1) for outlier exposure, never
    tested as unknowns.
    """

    trial: tuple[int, ...] = ()
    known_classes: tuple[int, ...] = ()
    outlier_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        overlap = set(self.known_classes) & set(self.outlier_classes)
        _require(not overlap, "osr.outlier_classes", "disjoint from osr.known_classes", sorted(overlap))


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``seed`` drives every random generator.

    ``seeds``, when not empty, asks protocols that repeat runs to train once per seed
    (data splits keep ``seed``) and report the mean and standard deviation.
    """

    seed: int = 1234
    seeds: tuple[int, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    osr: OpenSetConfig = field(default_factory=OpenSetConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), e.g. for ``results.json``."""
        return dataclasses.asdict(self, dict_factory=_plain_dict)


def _plain_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"section.key=value"``; the value is read as a TOML value when it is one
    (``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"text"``) and as a plain string otherwise."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a nested dict."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with dotted-key ``overrides`` applied, each type-checked."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    run_fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in run_fields:
            raise ConfigError(f"unknown config key {key!r}; sections are {', '.join(_sections())}")
        if not name:
            if dataclasses.is_dataclass(_hints(RunConfig)[section]):
                raise ConfigError(f"config key {key!r} names a section; use {key}.KEY=VALUE")
            top[section] = _coerce(key, value, _hints(RunConfig)[section])
            continue
        section_type = _hints(RunConfig)[section]
        if not dataclasses.is_dataclass(section_type):
            raise ConfigError(f"unknown config key {key!r}: {section!r} is not a section")
        hints = _hints(section_type)
        if name not in hints:
            raise ConfigError(f"unknown config key {key!r}; {section} keys are {', '.join(sorted(hints))}")
        sections.setdefault(section, {})[name] = _coerce(key, value, hints[name])
    changes: dict[str, Any] = dict(top)
    for section, values in sections.items():
        changes[section] = dataclasses.replace(getattr(config, section), **values)
    return dataclasses.replace(config, **changes)


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (int, float, bool, str, tuple[int, ...])."""
    if annotation is bool:
        _require(isinstance(value, bool), key, "true or false", value)
    elif annotation is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
    elif annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok, key, "a number", value)
        value = float(value)
    elif annotation is str:
        _require(isinstance(value, str), key, "a string", value)
    elif typing.get_origin(annotation) is tuple:
        items = list(value) if isinstance(value, list | tuple) else [value]
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in items)
        _require(ok, key, "an integer or a list of integers", value)
        value = tuple(items)
    else:  # pragma: no cover - a new field type needs a rule here
        raise ConfigError(f"{key}: no rule for values of type {annotation}")
    return value
