"""``encircle bench``: run a suite of protocol cells and gather one results table.

A :class:`Suite` is a list of :class:`Cell` s. Each cell runs one registered protocol
through :func:`~encircle.experiments.run_protocol` (the protocol's defaults, its
``--quick`` settings when the cell asks for them, the cell's overrides, then the
caller's) into ``OUT/<cell name>/``, gets its own ``report.html``, and an *extractor*
for that protocol turns the cell's ``results.json`` into table rows, one per method
(and per test set where a protocol has several). :func:`run_suite` then writes the
whole table as ``OUT/results.md``, ``OUT/results.csv`` and ``OUT/results.json`` (a list
of row objects: what :func:`encircle.report.write_report` reads as a bench directory)
and ``OUT/report.html``; ``OUT/bench.log`` records every cell's start, end, wall time
and any failure.

Columns (:data:`COLUMNS`): ``dataset``, ``protocol``, ``method``, the metrics as
fractions (``accuracy`` closed-set on known classes; ``auroc``, ``aupr_in``,
``aupr_out`` and ``fpr95`` = FPR at 95% TPR with anomalies / unknowns / OOD as the
positive class; ``oscr``; the thresholded ``known_accepted`` and ``unknown_rejected``),
``train_seconds`` (the method's training, autoencoder pretraining included),
``wall_seconds`` (the whole cell), ``paper`` (the published number with its citation,
``-`` where none), ``source`` (the data's provenance), ``cell``, ``status`` (``ok``,
``failed`` or ``skipped``) and ``error``. A metric a protocol does not report is empty.

A failing cell becomes one ``failed`` row with its error and the suite goes on. A cell
is ``skipped`` instead, with a logged note, when its protocol is not registered, or when
it stops on a dataset that is nowhere on this machine (offline, no local copy): such a
cell cannot run here, which says nothing about the code.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from encircle import __version__
from encircle._io import atomic_write_json, atomic_write_text
from encircle.detector import PRETRAIN_FILES
from encircle.errors import DataError
from encircle.experiments import build_config, get_protocol, list_protocols, run_protocol, seed002
from encircle.registry import Registry

log = logging.getLogger(__name__)

#: The columns of the results table, in order.
COLUMNS = (
    "dataset",
    "protocol",
    "method",
    "accuracy",
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr95",
    "oscr",
    "known_accepted",
    "unknown_rejected",
    "train_seconds",
    "wall_seconds",
    "paper",
    "source",
    "cell",
    "status",
    "error",
)
#: Columns holding fractions in [0, 1] (three decimals in the Markdown table).
METRIC_COLUMNS = COLUMNS[3:11]
LOG_FILE = "bench.log"
TABLE_FILES = ("results.md", "results.csv", "results.json")

Row = dict[str, Any]


@dataclass(frozen=True)
class Cell:
    """One protocol run of a suite.

    Attributes:
        name: the folder under the bench's output directory (unique in a suite).
        protocol: a registered protocol name.
        label: the method(s) it runs, for the progress bar and a failed row.
        overrides: ``section.key`` settings applied after the protocol's defaults
            (and its quick settings).
        quick: start from the protocol's ``--quick`` settings.
        methods: the method rows to keep (all when empty); a name the protocol did not
            report is an error of the cell.
    """

    name: str
    protocol: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A named list of cells."""

    name: str
    summary: str
    cells: tuple[Cell, ...]

    def __post_init__(self) -> None:
        names = [cell.name for cell in self.cells]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"suite {self.name!r}: cell names must be unique, got {repeated} more than once")


@dataclass(frozen=True)
class BenchResult:
    """What :func:`run_suite` wrote: the rows, the count of failed cells and the wall time."""

    rows: list[Row]
    failed: int
    seconds: float


# ------------------------------------------------------------------------ extractors


class _Results:
    """Checked access to one cell's ``results.json``: a missing or mistyped key is a
    :class:`DataError` naming the protocol, the key and what was found."""

    def __init__(self, protocol: str, data: Any) -> None:
        self.protocol = protocol
        if not isinstance(data, Mapping):
            raise DataError(f"{protocol} results.json must hold an object, got {type(data).__name__}")
        self.data = data

    def get(self, *keys: str, kind: type | tuple[type, ...], expected: str) -> Any:
        node: Any = self.data
        for i, key in enumerate(keys):
            if not isinstance(node, Mapping) or key not in node:
                where = ".".join(keys[: i + 1])
                raise DataError(f"{self.protocol} results.json: expected {'.'.join(keys)} ({expected}), no {where!r}")
            node = node[key]
        if not isinstance(node, kind) or isinstance(node, bool):  # JSON true/false is no number
            raise DataError(
                f"{self.protocol} results.json: expected {'.'.join(keys)} to be {expected}, got {node!r:.80}"
            )
        return node

    def number(self, *keys: str) -> float:
        return float(self.get(*keys, kind=(int, float), expected="a number"))

    def optional(self, *keys: str) -> float | None:
        """A number, or ``None`` when the last key is absent (a metric a method lacks)."""
        parent = self.mapping(*keys[:-1]) if len(keys) > 1 else self.data
        return self.number(*keys) if keys[-1] in parent else None

    def mapping(self, *keys: str) -> Mapping[str, Any]:
        return self.get(*keys, kind=Mapping, expected="an object")

    def text(self, *keys: str) -> str:
        return str(self.get(*keys, kind=str, expected="a string"))

    def records(self, *keys: str) -> list[Mapping[str, Any]]:
        """A list of history records (objects)."""
        values = self.get(*keys, kind=list, expected="a list of history records")
        if not all(isinstance(v, Mapping) for v in values):
            raise DataError(
                f"{self.protocol} results.json: expected {'.'.join(keys)} to hold objects, got {values!r:.80}"
            )
        return list(values)

    def integers(self, *keys: str) -> list[int]:
        values = self.get(*keys, kind=list, expected="a list of integers")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DataError(f"{self.protocol} results.json: expected {'.'.join(keys)} to be integers, got {values}")
        return list(values)


def _row(dataset: str, method: str, **values: Any) -> Row:
    """A table row: every column present (``None`` where the protocol has no value)."""
    row: Row = dict.fromkeys(COLUMNS)
    row.update(dataset=dataset, method=method, paper="-")
    row.update(values)
    return row


def _classes(values: Sequence[int]) -> str:
    """``[0..9]`` as ``0-9``; other lists as ``0,3,5``."""
    ordered = sorted(values)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


def _seconds(protocol: str, records: Any) -> float:
    """Sum of ``seconds`` over history records, in a list or nested mappings of lists."""
    if isinstance(records, Mapping):
        return sum(_seconds(protocol, value) for value in records.values())
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise DataError(f"{protocol} results.json: expected history records (objects), got {records!r:.80}")
    return float(sum(r.get("seconds", 0.0) for r in records))


def _pretrain_seconds(folder: Path) -> float:
    """Seconds of the autoencoder pretraining a detector recorded in ``folder`` (0 without one)."""
    path = folder / PRETRAIN_FILES[1]
    if not path.is_file():
        return 0.0
    total = 0.0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            total += float(json.loads(line).get("seconds", 0.0)) if line.strip() else 0.0
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise DataError(f"{str(path)!r}: expected one JSON record per line, got {line[:80]!r}") from None
    return total


def _paper(value: str, citation: str) -> str:
    return f"{value} ({citation})"


def _oneclass_rows(r: _Results, cell_dir: Path) -> list[Row]:
    """One row: the mean AUROC over the normal classes, and the paper's mean over the same classes."""
    objective = r.text("config", "method", "objective")
    classes = [int(c) for c in r.mapping("metrics", "per_class_auroc")]
    dataset = f"{r.text('config', 'data', 'name')}, normal class {_classes(classes)} (one at a time) vs the rest"
    paper = r.optional("metrics", "paper_mean_auroc")
    which = f"class {classes[0]}" if len(classes) == 1 else f"mean of classes {_classes(classes)}"
    history = r.mapping("history")  # "class{c}/seed{s}" -> records; the detector's folder too
    return [
        _row(
            dataset,
            f"Deep SVDD ({objective})",
            auroc=r.number("metrics", "mean_auroc"),
            train_seconds=_seconds(r.protocol, history) + sum(_pretrain_seconds(cell_dir / key) for key in history),
            paper="-" if paper is None else _paper(f"AUROC {paper:.3f}, {which}", r.text("paper")),
        )
    ]


def _seed000_rows(r: _Results, cell_dir: Path) -> list[Row]:
    return [
        _row(
            f"{r.text('config', 'data', 'name')} vs {r.text('config', 'data', 'ood')} (OOD)",
            f"Deep SVDD ({r.text('config', 'model', 'name')} net, {r.number('config', 'model', 'out_features'):.0f}-d)",
            auroc=r.number("metrics", "auroc"),
            aupr_in=r.number("metrics", "aupr_in"),
            aupr_out=r.number("metrics", "aupr_out"),
            fpr95=r.number("metrics", "fpr_at_95_tpr_out"),
            known_accepted=r.number("metrics", "accepted_in"),
            unknown_rejected=1.0 - r.number("metrics", "accepted_out"),
            train_seconds=r.number("train_seconds"),
        )
    ]


def _seed001_rows(r: _Results, cell_dir: Path) -> list[Row]:
    method, outliers = _method_label(r), r.text("config", "data", "outliers")
    if outliers:
        method += f" + outlier exposure ({outliers})"
    return [
        _row(
            f"{r.text('config', 'data', 'name')} vs {r.text('config', 'data', 'ood')} (OOD)",
            f"{method}, {r.text('config', 'model', 'name')} net",
            accuracy=r.number("metrics", "accuracy"),
            auroc=r.number("metrics", "auroc"),
            aupr_in=r.number("metrics", "aupr_in"),
            aupr_out=r.number("metrics", "aupr_out"),
            fpr95=r.number("metrics", "fpr_at_95_tpr_out"),
            train_seconds=_seconds(r.protocol, r.records("history")),
        )
    ]


def _seed002_rows(r: _Results, cell_dir: Path) -> list[Row]:
    classes = r.integers("config", "data", "normal_classes") or list(range(10))
    dataset = f"{r.text('config', 'data', 'name')}, normal class {_classes(classes)} vs the rest"
    rows = []
    for variant, review in seed002.REVIEW_AUROC.items():
        key = variant.replace(" ", "_")
        history = r.mapping("runs", variant, "history")
        folder = cell_dir / variant.replace(" ", "-")
        rows.append(
            _row(
                dataset,
                f"Deep SVDD, {variant}",
                auroc=r.number("metrics", f"auroc_{key}"),
                train_seconds=_seconds(r.protocol, history) + sum(_pretrain_seconds(folder / k) for k in history),
                paper=_paper(f"AUROC {review / 100:.4f}", "Deep SVDD review, seed 002, class 0"),
            )
        )
    return rows


def _ognet_rows(r: _Results, cell_dir: Path) -> list[Row]:
    """Deep SVDD and OGNet after each phase; phase two's time includes phase one's."""
    classes = [int(c) for c in r.mapping("metrics", "per_class_auroc", "deep_svdd")]
    dataset = f"{r.text('config', 'data', 'name')}, normal class {_classes(classes)} vs 100 of each other class"
    svdd = sum(_pretrain_seconds(cell_dir / f"class{c}" / "deep-svdd") for c in classes)
    phases = {1: 0.0, 2: 0.0}
    for name in r.mapping("history"):
        svdd += _seconds(r.protocol, r.records("history", name, "deep_svdd"))
        ognet = r.records("history", name, "ognet")
        for phase in phases:
            phases[phase] += _seconds(r.protocol, [rec for rec in ognet if rec.get("phase") == phase])
    return [
        _row(dataset, "Deep SVDD", auroc=r.number("metrics", "mean_auroc_deep_svdd"), train_seconds=svdd),
        _row(
            dataset, "OGNet, phase 1", auroc=r.number("metrics", "mean_auroc_ognet_phase_one"), train_seconds=phases[1]
        ),
        _row(
            dataset,
            "OGNet, phase 2",
            auroc=r.number("metrics", "mean_auroc_ognet_phase_two"),
            train_seconds=phases[1] + phases[2],
        ),
    ]


def _method_label(r: _Results) -> str:
    """``CAC``, ``MCHAD``, ``softmax + energy``, ... from a run's method config."""
    name = r.text("config", "method", "name")
    if name == "softmax":
        return f"softmax + {r.text('config', 'method', 'score_rule')}"
    return {"cac": "CAC", "mchad": "MCHAD", "deep-svdd": "Deep SVDD"}.get(name, name)


def _osr_rows(r: _Results, cell_dir: Path) -> list[Row]:
    """One row: means over the trials; training time summed over them."""
    splits = {name: r.integers("splits", name) for name in r.mapping("splits")}
    sizes = "/".join(sorted({str(len(known)) for known in splits.values()}))
    dataset = f"{r.text('config', 'data', 'name')}, {sizes} known classes, {', '.join(splits)}"
    paper = r.optional("metrics", "paper_auroc")
    return [
        _row(
            dataset,
            _method_label(r),
            **{col: r.number("metrics", f"mean_{key}") for col, key in _OPEN_SET_KEYS.items()},
            train_seconds=sum(r.number("metrics", "per_trial", t, "train_seconds") for t in splits),
            paper="-" if paper is None else _paper(f"AUROC {paper:.3f}", r.text("paper")),
        )
    ]


#: table column -> key of ``open_set_metrics``
_OPEN_SET_KEYS = {
    "accuracy": "accuracy",
    "auroc": "auroc",
    "aupr_in": "aupr_in",
    "aupr_out": "aupr_out",
    "fpr95": "fpr_at_95_tpr_out",
    "oscr": "oscr",
    "known_accepted": "accepted_known",
    "unknown_rejected": "rejected_unknown",
}


def _seed004_rows(r: _Results, cell_dir: Path) -> list[Row]:
    known, unknown = r.text("config", "data", "name"), r.text("config", "data", "ood")
    dataset = f"{known} (all classes known) + {r.number('data', 'test_out', 'size'):.0f} {unknown} unknowns"
    seed = _paper(
        f"known accepted {r.number('metrics', 'seed_success', 'known'):.4f}, "
        f"unknown rejected {r.number('metrics', 'seed_success', 'unknown'):.4f}",
        "seed 004: CAC, threshold 0.5, MNIST + 500 grayscale CIFAR-10",
    )
    rows = []
    for slug in r.mapping("metrics"):
        if slug == "seed_success":
            continue
        label = {"softmax": "softmax + msp (baseline)", "cac": "CAC"}.get(slug, slug)
        rows.append(
            _row(
                dataset,
                label,
                **{col: r.number("metrics", slug, key) for col, key in _OPEN_SET_KEYS.items()},
                train_seconds=r.number("metrics", slug, "train_seconds"),
                paper=seed if slug == "cac" else "-",
            )
        )
    return rows


def _mchad_rows(r: _Results, cell_dir: Path) -> list[Row]:
    """Two rows per method: near unknowns (held-out classes) and far unknowns (``data.ood``)."""
    data = r.text("config", "data", "name")
    known = _classes(r.integers("classes", "known"))
    test_sets = {
        "near": f"{data} {known} vs {_classes(r.integers('classes', 'near_unknown'))} (near)",
        "far": f"{data} {known} vs {r.text('config', 'data', 'ood')} (far)",
    }
    rows = []
    for method in r.mapping("metrics", "per_method"):
        for test, dataset in test_sets.items():
            rows.append(
                _row(
                    dataset,
                    method,
                    accuracy=r.optional("metrics", "per_method", method, "accuracy"),
                    auroc=r.number("metrics", "per_method", method, f"{test}_auroc"),
                    aupr_in=r.number("metrics", "per_method", method, f"{test}_aupr_in"),
                    aupr_out=r.number("metrics", "per_method", method, f"{test}_aupr_out"),
                    fpr95=r.number("metrics", "per_method", method, f"{test}_fpr_at_95_tpr_out"),
                    train_seconds=r.number("metrics", "per_method", method, "train_seconds"),
                )
            )
    return rows


#: protocol name -> function from (checked results, cell folder) to table rows
EXTRACTORS: dict[str, Callable[[_Results, Path], list[Row]]] = {
    "oneclass": _oneclass_rows,
    "seed000": _seed000_rows,
    "seed001": _seed001_rows,
    "seed002": _seed002_rows,
    "ognet-mnist": _ognet_rows,
    "osr": _osr_rows,
    "seed004": _seed004_rows,
    "mchad-fashion": _mchad_rows,
}


def extract_rows(protocol: str, cell_dir: str | Path) -> list[Row]:
    """The table rows of one protocol run, read from ``cell_dir/results.json``.

    ``protocol``, ``source`` and ``status`` are filled in; ``cell`` and
    ``wall_seconds`` are left to the caller.

    Raises:
        DataError: no extractor for ``protocol``, no readable ``results.json``, or a
            key the extractor needs is missing or of the wrong type (the message names
            the protocol and the key).
    """
    if protocol not in EXTRACTORS:
        raise DataError(f"no bench extractor for protocol {protocol!r}; expected one of {', '.join(EXTRACTORS)}")
    folder = Path(cell_dir)
    path = folder / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{protocol}: cannot read {str(path)!r}: {exc}") from None
    results = _Results(protocol, data)
    found = results.text("protocol")
    if found != protocol:
        raise DataError(f"{str(path)!r}: expected results of protocol {protocol!r}, got {found!r}")
    source = "; ".join(dict.fromkeys(results.text("data_source").split("; ")))  # each source once
    rows = EXTRACTORS[protocol](results, folder)
    for row in rows:
        row.update(protocol=protocol, source=source, status="ok", error="")
    return rows


# ------------------------------------------------------------------------------ suites

SUITES: Registry[Suite] = Registry("suite")


def get_suite(name: str) -> Suite:
    """The suite called ``name`` (a :class:`~encircle.errors.ConfigError` names the known ones)."""
    return SUITES.get(name)


#: Overrides of the ``quick`` suite per protocol, on top of the protocol's ``--quick``
#: settings: small data, few epochs, and for the networks that the papers train slowly
#: (lr 1e-4, or SGD) Adam at 1e-3, so that every method learns in seconds.
QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "oneclass": {
        "data.max_train": 400,
        "train.epochs": 10,
        "method.pretrain_epochs": 10,
        "train.lr": 1e-3,
        "method.pretrain_lr": 1e-3,
        "train.batch_size": 64,
        "train.lr_milestones": [],
    },
    "seed002": {"train.epochs": 10, "train.batch_size": 128},
    "osr": {
        "train.optimizer": "adam",
        "train.lr": 1e-3,
        "train.lr_milestones": [],
        "train.epochs": 5,
        "data.max_train": 1800,
        "data.max_test": 600,
    },
    "seed004": {"train.epochs": 5, "data.max_train": 3000},
    "mchad-fashion": {"train.epochs": 8, "data.max_train": 3000, "data.max_test": 600, "data.max_ood": 400},
}


def _cells(quick: bool) -> tuple[Cell, ...]:
    """Every protocol with every applicable method (quick: with :data:`QUICK_SETTINGS`)."""

    def cell(name: str, protocol: str, label: str, **overrides: Any) -> Cell:
        settings = QUICK_SETTINGS.get(protocol, {}) if quick else {}
        return Cell(name, protocol, label, {**settings, **overrides}, quick)

    soft = {"method.objective": "soft-boundary"} | ({"method.warm_up_epochs": 2} if quick else {})
    softmax = [
        cell(f"osr-softmax-{rule}", "osr", f"softmax + {rule}", **{"method.name": "softmax", "method.score_rule": rule})
        for rule in ("msp", "max-logit", "energy")
    ]
    mahalanobis = {"method.name": "softmax", "method.score_rule": "mahalanobis", "method.shrinkage": 0.01}
    return (
        cell("oneclass", "oneclass", "Deep SVDD (one-class)"),
        cell("oneclass-soft-boundary", "oneclass", "Deep SVDD (soft-boundary)", **soft),
        cell("seed000", "seed000", "Deep SVDD"),
        cell("seed001", "seed001", "MCHAD + OE (pretrained WRN)"),
        cell("seed002", "seed002", "Deep SVDD +/- pretraining"),
        cell("ognet-mnist", "ognet-mnist", "OGNet, Deep SVDD"),
        cell("osr-cac", "osr", "CAC"),
        *softmax,
        cell("osr-softmax-mahalanobis", "osr", "softmax + mahalanobis", **mahalanobis),
        cell("seed004", "seed004", "softmax, CAC"),
        cell("mchad-fashion", "mchad-fashion", "MCHAD +/- OE, CAC, Deep SVDD, softmax"),
    )


SUITES.add("quick", Suite("quick", "every protocol and method, small settings (minutes on a CPU)", _cells(True)))
SUITES.add("full", Suite("full", "every protocol and method with the papers' settings (the defaults)", _cells(False)))


# ------------------------------------------------------------------------------ runner


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> BenchResult:
    """Run every cell of ``suite`` into ``out_dir/<cell>/`` and write the table and reports.

    Args:
        suite: the cells to run, in order.
        out_dir: the bench directory (created; it must not be a file).
        config_file: a TOML file applied to every cell (after the protocol's quick
            settings, before the cell's overrides).
        overrides: ``section.key`` settings applied to every cell, after its own.
        progress: the bar over the cells (``None``: only on a terminal).

    Returns:
        The rows written and the count of failed cells.

    Raises:
        DataError: ``out_dir`` exists and is not a directory.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"bench output directory must be a directory, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[Row] = []
    failed = 0
    with _log_file(out / LOG_FILE) as trace, _console_through_tqdm():
        log.info("suite %s: %d cells -> %s (encircle %s)", suite.name, len(suite.cells), out, __version__)
        bar = tqdm(suite.cells, desc=f"bench {suite.name}", unit="cell", disable=_disabled(progress))
        for cell in bar:
            bar.set_description(f"{cell.protocol}/{cell.label}")
            cell_rows = _run_cell(cell, out, config_file, dict(overrides or {}), trace)
            failed += any(row["status"] == "failed" for row in cell_rows)
            rows.extend(cell_rows)
        bar.close()
        seconds = time.perf_counter() - started
        write_tables(out, rows, title=f"encircle bench: {suite.name}", seconds=seconds)
        _write_report(out)
        log.info("suite %s: %d rows, %d failed cell(s), %.1f s", suite.name, len(rows), failed, seconds)
    return BenchResult(rows, failed, seconds)


def _disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: ``None`` hides the bar when not on a terminal."""
    return None if progress is None else not progress


def _run_cell(
    cell: Cell, out: Path, config_file: str | Path | None, overrides: dict[str, Any], trace: logging.Handler
) -> list[Row]:
    """Run one cell and write its report: its rows, or one ``failed``/``skipped`` row."""
    if cell.protocol not in list_protocols():
        note = f"protocol {cell.protocol!r} is not registered in this version of encircle"
        log.warning("cell %s skipped: %s", cell.name, note)
        return [_status_row(cell, "skipped", note, 0.0)]
    folder = out / cell.name
    log.info("cell %s start: protocol %s, %s", cell.name, cell.protocol, cell.label)
    started = time.perf_counter()
    try:
        run_protocol(
            cell.protocol,
            out_dir=folder,
            quick=cell.quick,
            config_file=config_file,
            overrides={**cell.overrides, **overrides},
            progress=False,
        )
        rows = _keep(cell, extract_rows(cell.protocol, folder))
    except Exception as exc:  # a bench records a failing cell and goes on
        seconds = time.perf_counter() - started
        missing = _missing_data(cell, exc, config_file, overrides)
        if missing:
            note = f"data missing ({', '.join(missing)}): {' '.join(str(exc).split())}"
            log.warning("cell %s skipped: %s", cell.name, note)
            return [_status_row(cell, "skipped", note, seconds)]
        return [_status_row(cell, "failed", _failure(cell, exc, seconds, trace), seconds)]
    try:
        _write_report(folder)
    except Exception as exc:  # the rows stand; the cell still counts as failed
        error = f"report.html: {_failure(cell, exc, time.perf_counter() - started, trace)}"
        for row in rows:
            row.update(status="failed", error=error)
    seconds = time.perf_counter() - started
    for row in rows:
        row.update(cell=cell.name, wall_seconds=seconds)
    log.info("cell %s end: %d row(s) in %.1f s", cell.name, len(rows), seconds)
    return rows


def _missing_data(cell: Cell, exc: Exception, config_file: str | Path | None, overrides: dict[str, Any]) -> list[str]:
    """The datasets behind a :class:`DataError` that are nowhere on this machine.

    A dataset counts when the cell's configuration names it (``data.name``, ``data.ood``
    or ``data.outliers``), ``describe_datasets`` finds it nowhere, and the error names it.
    """
    if not isinstance(exc, DataError):
        return []
    from encircle.data import describe_datasets

    config = build_config(
        get_protocol(cell.protocol),
        quick=cell.quick,
        config_file=config_file,
        overrides={**cell.overrides, **overrides},
    )
    named = {config.data.name, config.data.ood, config.data.outliers} - {""}
    rows = describe_datasets(config.data.root or None)
    missing = {row["name"] for row in rows if row["name"] in named and row["resolved_from"] == "missing"}
    return sorted(name for name in missing if repr(name) in str(exc))


def _failure(cell: Cell, exc: Exception, seconds: float, trace: logging.Handler) -> str:
    """Log a cell's failure (its traceback to the log file only); the one-line message."""
    message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    log.error("cell %s failed after %.1f s: %s", cell.name, seconds, message)
    details = (cell.name, traceback.format_exc())
    trace.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "traceback of cell %s:\n%s", details, None))
    return message


def _keep(cell: Cell, rows: list[Row]) -> list[Row]:
    """The rows of the methods the cell asks for (all when it names none)."""
    if not cell.methods:
        return rows
    found = [row["method"] for row in rows]
    missing = [m for m in cell.methods if m not in found]
    if missing:
        raise DataError(f"cell {cell.name!r}: methods {missing} not among the rows of {cell.protocol}: {found}")
    return [row for row in rows if row["method"] in cell.methods]


def _status_row(cell: Cell, status: str, error: str, seconds: float) -> Row:
    row = _row("-", cell.label, protocol=cell.protocol, cell=cell.name, status=status, error=error)
    row.update(wall_seconds=seconds, paper="-", source="-")
    return row


def _write_report(folder: Path) -> None:
    """``folder/report.html`` (a run or the bench directory)."""
    from encircle.report import write_report  # report imports the figures: matplotlib loads on use

    write_report(folder)


@contextlib.contextmanager
def _console_through_tqdm() -> Iterator[None]:
    """Console log lines go through ``tqdm.write`` (above the bar, not through it), at the
    console handler's level; nothing changes when the root logger has no console handler."""
    root = logging.getLogger()
    before = set(root.handlers)
    console = [h for h in before if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)]
    if not console:
        yield
        return
    with logging_redirect_tqdm():
        for handler in set(root.handlers) - before:  # tqdm's handler does not keep the level
            handler.setLevel(min(h.level for h in console))
        yield


@contextlib.contextmanager
def _log_file(path: Path) -> Iterator[logging.Handler]:
    """Log INFO and up (this module's INFO too) to ``path`` while the suite runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root, level = logging.getLogger(), log.level
    root.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.setLevel(level)
        root.removeHandler(handler)
        handler.close()


# ------------------------------------------------------------------------------ tables


def write_tables(out_dir: str | Path, rows: Sequence[Row], *, title: str, seconds: float) -> list[Path]:
    """Write ``results.md``, ``results.csv`` and ``results.json`` (each atomically); returns the paths."""
    out = Path(out_dir)
    paths = [out / name for name in TABLE_FILES]
    atomic_write_text(paths[0], markdown_table(rows, title=title, seconds=seconds))
    atomic_write_text(paths[1], _csv(rows))
    atomic_write_json(paths[2], [{col: row.get(col) for col in COLUMNS} for row in rows])
    return paths


def markdown_table(rows: Sequence[Row], *, title: str, seconds: float) -> str:
    """The table as Markdown: metrics to three decimals, seconds to one, ``-`` where empty."""
    failed = sum(row["status"] == "failed" for row in rows)
    lines = [
        f"# {title}",
        "",
        f"{len(rows)} rows, {failed} failed, wall time {seconds:.0f} s (encircle {__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}). Metrics are fractions; fpr95 is the FPR at 95% TPR "
        "with anomalies / unknowns / OOD as the positive class.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in METRIC_COLUMNS or c.endswith("seconds") else "---" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(col, row.get(col)) for col in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_cell(column: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if column in METRIC_COLUMNS else f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _csv(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({col: "" if row.get(col) is None else row[col] for col in COLUMNS})
    return buffer.getvalue()
