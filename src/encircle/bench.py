"""``encircle bench``: run a suite of protocol cells and gather one results table.

A :class:`Suite` is a list of :class:`Cell` s. Each cell runs one registered protocol
through :func:`~encircle.experiments.run_protocol` (the protocol's defaults, its
``--quick`` settings when the cell asks for them, the cell's overrides, then the
caller's) into ``OUT/<cell name>/``, gets its own ``report.html``, and the result rows
its ``results.json`` holds (:mod:`encircle.results`, the same schema for every protocol)
become table rows, one per method and dataset (:mod:`encircle.bench_rows`: the summary
rows pivoted into the columns). :func:`run_suite` then writes the
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
import logging
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from encircle import __version__
from encircle._io import atomic_write_json, atomic_write_text
from encircle.bench_rows import COLUMNS, METRIC_COLUMNS, Row, extract_rows, table_row
from encircle.errors import DataError
from encircle.experiments import build_config, get_protocol, run_protocol
from encircle.experiments.protocol import PROTOCOLS
from encircle.registry import Registry

__all__ = [
    "COLUMNS",
    "LOG_FILE",
    "METRIC_COLUMNS",
    "QUICK_SETTINGS",
    "SUITES",
    "TABLE_FILES",
    "BenchResult",
    "Cell",
    "Row",
    "Suite",
    "extract_rows",
    "get_suite",
    "markdown_table",
    "run_suite",
    "write_tables",
]

log = logging.getLogger(__name__)

LOG_FILE = "bench.log"
TABLE_FILES = ("results.md", "results.csv", "results.json")


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
    "ae-pretraining": {"train.epochs": 10, "train.batch_size": 128},
    "osr": {
        "train.optimizer": "adam",
        "train.lr": 1e-3,
        "train.lr_milestones": [],
        "train.epochs": 5,
        "data.max_train": 1800,
        "data.max_test": 600,
    },
    "cac-openset": {"train.epochs": 5, "data.max_train": 3000},
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
        cell("mnist-vs-fashion", "mnist-vs-fashion", "Deep SVDD"),
        cell("mchad-cifar10", "mchad-cifar10", "MCHAD + OE (pretrained WRN)"),
        cell("ae-pretraining", "ae-pretraining", "Deep SVDD +/- pretraining"),
        cell("ognet-mnist", "ognet-mnist", "OGNet, Deep SVDD"),
        cell("osr-cac", "osr", "CAC"),
        *softmax,
        cell("osr-softmax-mahalanobis", "osr", "softmax + mahalanobis", **mahalanobis),
        cell("cac-openset", "cac-openset", "softmax, CAC"),
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
    if cell.protocol not in PROTOCOLS:
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
        rows = _keep(cell, extract_rows(get_protocol(cell.protocol).name, folder))
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
    row = table_row("-", cell.label, protocol=cell.protocol, cell=cell.name, status=status, error=error)
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
