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
from encircle.methods.hyperparameters import coerce, defaults, hyperparameters
from encircle.methods.registry import method_class
from encircle.train_config import TrainConfig
from encircle.train_config import require as _require

__all__ = [
    "CalibrationConfig",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OpenSetConfig",
    "RunConfig",
    "TrainConfig",
    "flatten",
    "load_toml",
    "parse_override",
    "with_overrides",
]


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how much of it.

    ``root`` empty means "resolve" (cache, system locations, download); ``ood`` names the
    test-time out-of-distribution dataset of OOD protocols and ``outliers`` the dataset
    of training outliers for outlier exposure (empty = none); ``normal_classes`` the
    classes one-class protocols sweep (empty = all); ``max_train``/``max_test``/
    ``max_ood`` (0 = all) cap the sample counts, taking a seeded stratified subset.
    ``labelled_anomalies`` is the share ``m / (n + m)`` of labelled anomalies in a
    one-class training set (Deep SAD's ``gamma_l``), drawn from ``anomaly_class``
    (``-1``: the class after the normal one).
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
    labelled_anomalies: float = 0.0
    anomaly_class: int = -1

    def __post_init__(self) -> None:
        _require(0 <= self.labelled_anomalies < 1, "data.labelled_anomalies", "in [0, 1)", self.labelled_anomalies)
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


@dataclass(frozen=True, eq=False)
class MethodConfig:
    """Method name (see ``encircle.methods.list_methods()``) and the hyperparameters set for it.

    A method declares its hyperparameters once, in its ``__init__``
    (:mod:`encircle.methods.hyperparameters`); ``params`` holds the values set here, each
    checked against that declaration (an unknown key or a value of the wrong type is a
    :class:`ConfigError`), and :meth:`hyperparameters` adds the declared defaults.
    ``MethodConfig.of("cac", alpha=5.0)`` is the short form.
    """

    name: str = "deep-svdd"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = {h.name: h for h in hyperparameters(method_class(self.name))}
        checked = {}
        for key, value in self.params.items():
            if key not in declared:
                raise ConfigError(
                    f"unknown config key 'method.{key}': method {self.name!r} has the hyperparameters "
                    f"{', '.join(declared) or '(none)'}"
                )
            checked[key] = declared[key].check(value)
        object.__setattr__(self, "params", checked)

    def __eq__(self, other: object) -> bool:
        """Equal when the method and every hyperparameter (set or default) are."""
        if not isinstance(other, MethodConfig):
            return NotImplemented
        return self.name == other.name and self.hyperparameters() == other.hyperparameters()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of(cls, name: str, **params: Any) -> MethodConfig:
        """``MethodConfig(name, params)``."""
        return cls(name, params)

    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter of the method: its declared defaults, then ``params``."""
        return defaults(method_class(self.name)) | self.params

    def __getitem__(self, key: str) -> Any:
        values = self.hyperparameters()
        if key not in values:
            raise ConfigError(f"method {self.name!r} has no hyperparameter {key!r}")
        return values[key]

    def updated(self, **params: Any) -> MethodConfig:
        """This method with ``params`` set too."""
        return MethodConfig(self.name, self.params | params)

    def renamed(self, name: str, **params: Any) -> MethodConfig:
        """Method ``name`` with this config's values that it declares too, then ``params``.

        Protocols that compare methods start each from one shared config this way.
        """
        accepted = set(defaults(method_class(name)))
        return MethodConfig(name, {k: v for k, v in self.params.items() if k in accepted} | params)


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
    ``baseline_epochs`` is the length of a baseline a protocol trains beside its own
    method (``ognet-mnist``'s Deep SVDD: that many epochs of pretraining and of training).
    """

    seed: int = 1234
    seeds: tuple[int, ...] = ()
    baseline_epochs: int = 150
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    osr: OpenSetConfig = field(default_factory=OpenSetConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), e.g. for ``results.json``."""
        plain = dataclasses.asdict(self, dict_factory=_plain_dict)
        plain["method"] = _plain_dict([("name", self.method.name), *self.method.hyperparameters().items()])
        return plain


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
    method_values: dict[str, Any] = {}
    run_fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in run_fields:
            raise ConfigError(f"unknown config key {key!r}; sections are {', '.join(_sections())}")
        if not name:
            if dataclasses.is_dataclass(_hints(RunConfig)[section]):
                raise ConfigError(f"config key {key!r} names a section; use {key}.KEY=VALUE")
            top[section] = coerce(key, value, _hints(RunConfig)[section])
            continue
        if section == "method":  # checked against the method's declaration (MethodConfig)
            method_values[name] = value
            continue
        section_type = _hints(RunConfig)[section]
        if not dataclasses.is_dataclass(section_type):
            raise ConfigError(f"unknown config key {key!r}: {section!r} is not a section")
        hints = _hints(section_type)
        if name not in hints:
            raise ConfigError(f"unknown config key {key!r}; {section} keys are {', '.join(sorted(hints))}")
        sections.setdefault(section, {})[name] = coerce(key, value, hints[name])
    changes: dict[str, Any] = dict(top)
    for section, values in sections.items():
        changes[section] = dataclasses.replace(getattr(config, section), **values)
    if method_values:
        name = coerce("method.name", method_values.pop("name", config.method.name), str)
        changes["method"] = config.method.renamed(name, **method_values)
    return dataclasses.replace(config, **changes)


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)
