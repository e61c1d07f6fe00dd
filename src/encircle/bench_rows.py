"""The bench's results table: its columns, and the pivot of a run's result rows into it.

Every protocol run stores its result rows (:class:`~encircle.results.ResultRow`, one per
measured value) in ``results.json``; :func:`extract_rows` reads them (and nothing else
but the run's data provenance) and turns the summary rows (split
:data:`~encircle.results.SUMMARY`) into table rows, one per dataset and method: each
metric goes to its column (:data:`METRIC_COLUMNS`), the published figures (metrics
``paper_*``) to ``paper`` with their citation, the training time to ``train_seconds``.
The column meanings are in :mod:`encircle.bench`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from encircle.errors import DataError
from encircle.results import PAPER, SUMMARY, ResultRow

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
#: metric of a result row -> its column (metrics without one stay in ``results.json``)
METRIC_TO_COLUMN = {
    "accuracy": "accuracy",
    "auroc": "auroc",
    "aupr_in": "aupr_in",
    "aupr_out": "aupr_out",
    "fpr_at_95_tpr_out": "fpr95",
    "oscr": "oscr",
    "accepted_known": "known_accepted",
    "rejected_unknown": "unknown_rejected",
}

Row = dict[str, Any]


def table_row(dataset: str, method: str, **values: Any) -> Row:
    """A table row: every column present (``None`` where the protocol has no value)."""
    row: Row = dict.fromkeys(COLUMNS)
    row.update(dataset=dataset, method=method, paper="-")
    row.update(values)
    return row


def pivot(rows: Sequence[ResultRow]) -> list[Row]:
    """One table row per (dataset, method) of the summary rows, in the order they come.

    ``train_seconds`` is the largest training time among the group's measured rows.
    """
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in rows:
        if row.split == SUMMARY:
            groups.setdefault((row.dataset, row.method), []).append(row)
    table = []
    for (dataset, method), group in groups.items():
        measured = [r for r in group if not r.metric.startswith(PAPER)]
        values = {METRIC_TO_COLUMN[r.metric]: r.value for r in measured if r.metric in METRIC_TO_COLUMN}
        seconds = max((r.seconds for r in measured), default=None)
        table.append(table_row(dataset, method, **values, train_seconds=seconds, paper=_paper(group)))
    return table


def _paper(group: Sequence[ResultRow]) -> str:
    """``AUROC 0.948 (citation)``, or ``-`` when the group has no published figure."""
    papers = [r for r in group if r.metric.startswith(PAPER)]
    if not papers:
        return "-"
    figures = ", ".join(f"{_metric_words(r.metric.removeprefix(PAPER))} {r.value:.4g}" for r in papers)
    return f"{figures} ({papers[0].note})" if papers[0].note else figures


def _metric_words(metric: str) -> str:
    """``auroc`` -> ``AUROC``, ``accepted_known`` -> ``known accepted``."""
    column = METRIC_TO_COLUMN.get(metric, metric)
    return column.upper() if column in ("auroc", "oscr") else column.replace("_", " ")


def read_result_rows(protocol: str, cell_dir: str | Path) -> tuple[list[ResultRow], str]:
    """The result rows of a run of ``protocol`` in ``cell_dir``, and its data provenance.

    Raises:
        DataError: no readable ``results.json``, results of another protocol, or rows
            that do not fit the schema (the message names the protocol and the row).
    """
    path = Path(cell_dir) / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{protocol}: cannot read {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{protocol} results.json must hold an object, got {type(data).__name__}")
    if data.get("protocol") != protocol:
        raise DataError(f"{str(path)!r}: expected results of protocol {protocol!r}, got {data.get('protocol')!r}")
    rows, source = data.get("rows"), data.get("data_source")
    if not isinstance(rows, list):
        raise DataError(f"{protocol} results.json: expected rows (a list of result rows), got {rows!r:.80}")
    if not isinstance(source, str):
        raise DataError(f"{protocol} results.json: expected data_source to be a string, got {source!r:.80}")
    checked = [ResultRow.from_dict(row, f"{protocol} results.json: rows[{i}]") for i, row in enumerate(rows)]
    return checked, source


def extract_rows(protocol: str, cell_dir: str | Path) -> list[Row]:
    """The table rows of one protocol run, from ``cell_dir/results.json``'s result rows.

    ``protocol``, ``source`` and ``status`` are filled in; ``cell`` and
    ``wall_seconds`` are left to the caller.
    """
    rows, source = read_result_rows(protocol, cell_dir)
    source = "; ".join(dict.fromkeys(source.split("; ")))  # each source once
    table = pivot(rows)
    for row in table:
        row.update(protocol=protocol, source=source, status="ok", error="")
    return table
