"""One result row per measured value: the schema every protocol's results share.

A protocol's ``run`` returns its own details (``metrics``, ``table``, ``history``, ...)
*and* a list of :class:`ResultRow` s under ``"rows"``; ``results.json`` stores them as
objects (:meth:`ResultRow.to_dict`). Whatever tabulates runs (``encircle bench``, the
report) reads the rows only, so a new protocol needs no reader of its own.

A row says which value (``metric``, ``value``) a ``method`` reached on which data
(``dataset``, in words) and part of the protocol (``split``: a normal class, a trial, a
test set, or :data:`SUMMARY` for the figure over the whole run, the one a results table
shows). Metric names are the library's (:mod:`encircle.metrics`: ``auroc``,
``fpr_at_95_tpr_out``, ``accuracy``, ``oscr``, ``accepted_known``, ...); a published
figure to compare with is a row whose metric starts with :data:`PAPER`, its citation in
``note``. Scores and metrics keep the project's conventions (anomalies / unknowns / OOD
are the positive class).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from encircle.config import RunConfig
from encircle.errors import DataError

#: The ``split`` of a row that sums up the whole run (a mean over classes or trials, or
#: the one test set of a protocol that has a single one).
SUMMARY = "all"
#: Prefix of the metric names of published figures (``paper_auroc``, ...).
PAPER = "paper_"


@dataclass(frozen=True)
class ResultRow:
    """One value measured by one protocol run.

    Attributes:
        protocol: the protocol's registered name (never an alias).
        dataset: the data the value was measured on, in words
            (``"mnist vs fashion-mnist (OOD)"``).
        split: the part of the protocol: ``"class3"``, ``"trial0"``, ``"near"``, ...;
            :data:`SUMMARY` for the figure over the whole run.
        method: the method as the protocol labels it (``"CAC"``, ``"softmax + energy"``).
        metric: the metric's name (``"auroc"``; ``"paper_auroc"`` for a published figure).
        value: the metric's value (fractions for rates).
        seed: the seed of the run behind the value.
        seconds: wall-clock training time behind the value (pretraining included; every
            class or trial for a summary; 0 for a published figure).
        config_hash: :func:`config_hash` of the configuration that produced the value.
        note: free text; for a published figure, its citation.
    """

    protocol: str
    dataset: str
    split: str
    method: str
    metric: str
    value: float
    seed: int
    seconds: float
    config_hash: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON object (field -> value)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "row") -> ResultRow:
        """Check and build a row from a JSON object.

        Raises:
            DataError: ``data`` is no object, lacks a field, has an unknown one, or a
                field of the wrong type; the message starts with ``where``.
        """
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a result row (an object), got {data!r:.80}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise DataError(f"{where}: unknown result row fields {unknown}; expected {', '.join(names)}")
        values = {}
        for name in names:
            if name not in data:
                if name == "note":
                    continue
                raise DataError(f"{where}: expected the result row field {name!r}, got the fields {sorted(data)}")
            values[name] = _checked(where, name, data[name])
        return cls(**values)


#: field -> (accepted JSON types, what the message says)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "value": ((int, float), "a number"),
    "seconds": ((int, float), "a number"),
    "seed": ((int,), "an integer"),
}


def _checked(where: str, name: str, value: Any) -> Any:
    """``value`` when it has the type of field ``name`` (numbers as floats); else a DataError."""
    kinds, expected = _TYPES.get(name, ((str,), "a string"))
    if not isinstance(value, kinds) or isinstance(value, bool):  # JSON true/false is no number
        raise DataError(f"{where}: expected result row field {name!r} to be {expected}, got {value!r:.80}")
    return float(value) if isinstance(value, int | float) and float in kinds else value


def config_hash(config: RunConfig) -> str:
    """The first 12 hex digits of the sha256 of ``config`` as canonical JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def metric_rows(
    protocol: str,
    config: RunConfig,
    *,
    dataset: str,
    split: str,
    method: str,
    metrics: Mapping[str, float | None],
    seconds: float,
    note: str = "",
) -> list[ResultRow]:
    """One row per metric of ``metrics`` (``None`` values are left out), all from ``config``."""
    digest = config_hash(config)
    return [
        ResultRow(protocol, dataset, split, method, metric, float(value), config.seed, seconds, digest, note)
        for metric, value in metrics.items()
        if value is not None
    ]
