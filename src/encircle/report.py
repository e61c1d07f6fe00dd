"""``encircle report``: one self-contained HTML page for a run or a bench directory.

A **run directory** holds a ``results.json`` object (as :func:`~encircle.experiments.run_protocol`
writes it). Its page shows the metrics, the protocol's ``table``, its result rows
(:mod:`encircle.results`, one sortable table), every figure
(:func:`~encircle.figures.write_run_figures` is run first when matplotlib is installed;
every PNG in ``figures/`` is embedded), the data provenance, the configuration, the
per-epoch history as a table, any other fields and the versions.

A **bench directory** holds a ``results.json`` that is a list of row objects, or a
``results.csv`` with a header row. Its page shows those rows as a table whose columns
sort on a click (numerically where every cell is a number), its own figures, and a
section for every sub-run (a subfolder with a ``results.json`` object).

The page needs nothing outside itself: figures are ``data:image/png;base64`` URIs, the
CSS and the few lines of JavaScript are inline. Everything read from files is
HTML-escaped. The page is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from encircle import __version__
from encircle._io import atomic_write_text
from encircle.errors import DataError
from encircle.figures import FIGURES_DIR, plotting_available, write_run_figures

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: The ``results.json`` fields with a section of their own; the rest go to "Other fields".
_RUN_FIELDS = (
    "protocol",
    "quick",
    "data_source",
    "data",
    "config",
    "metrics",
    "table",
    "rows",
    "history",
    "wall_seconds",
)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out`` (default ``run_dir/report.html``).

    Returns:
        The path written.

    Raises:
        DataError: ``run_dir`` is not a directory, holds neither ``results.json`` nor
            ``results.csv``, or one of them (or an artifact) cannot be read.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"RUN_DIR must be an existing directory, got {str(run)!r}")
    target = Path(out) if out is not None else run / REPORT_FILE
    atomic_write_text(target, render_report(run))
    return target


def render_report(run: Path) -> str:
    """The HTML page of a run or bench directory (see the module docstring)."""
    results = _read_results(run)
    if isinstance(results, dict):
        title = f"encircle report: {results.get('protocol', run.name)}"
        body = _run_body(run, results, level=2)
    else:
        title = f"encircle bench report: {run.name}"
        body = _bench_body(run, results)
    body += _subruns(run)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_esc(title)}</h1><p class='muted'>{_esc(str(run.resolve()))} &middot; "
        f"generated {_esc(stamp)} by encircle {_esc(__version__)}</p></header>\n"
        f"<main>\n{body}</main>\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------- reading


def _read_results(run: Path) -> dict[str, Any] | list[dict[str, Any]]:
    """A run's results object, or a bench's list of rows (``results.json`` first)."""
    path = run / "results.json"
    if path.is_file():
        data = _load_json(path)
        if isinstance(data, dict):
            return data
        if isinstance(data, list) and all(isinstance(row, dict) for row in data):
            return data
        raise DataError(
            f"{str(path)!r} must hold a results object (a run) or a list of row objects (a bench), "
            f"got {type(data).__name__}"
        )
    path = run / "results.csv"
    if path.is_file():
        return _read_csv(path)
    raise DataError(f"RUN_DIR {str(run)!r} holds no results.json or results.csv: is it a run or bench directory?")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(path)!r} is not valid JSON: {exc}") from None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [{k: _parse_cell(v) for k, v in row.items() if k is not None} for row in reader]
            header = reader.fieldnames
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {str(path)!r} as CSV: {exc}") from None
    if not header:
        raise DataError(f"{str(path)!r} must start with a header row of column names, got an empty file")
    return rows


def _parse_cell(text: str | None) -> Any:
    """A CSV cell as int or float where it is one, else the text."""
    if text is None:
        return ""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


# -------------------------------------------------------------------------- sections


def _run_body(run: Path, results: Mapping[str, Any], level: int) -> str:
    h = f"h{level}"
    parts = [_summary_line(results)]
    metrics = results.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        parts.append(f"<{h}>Metrics</{h}>\n" + _key_values(_flatten(metrics)))
    table = results.get("table")
    if isinstance(table, list) and table and all(isinstance(r, Mapping) for r in table):
        parts.append(f"<{h}>Results table</{h}>\n" + _rows_table(table))
    rows = results.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
        parts.append(f"<{h}>Result rows</{h}>\n" + _rows_table(rows))
    parts.append(f"<{h}>Figures</{h}>\n" + _figures(run))
    parts.append(f"<{h}>Data provenance</{h}>\n" + _provenance(results))
    config = results.get("config")
    if isinstance(config, Mapping) and config:
        parts.append(f"<{h}>Configuration</{h}>\n" + _grouped(config))
    parts.append(f"<{h}>History</{h}>\n" + _history(results.get("history")))
    other = {k: v for k, v in results.items() if k not in _RUN_FIELDS and k != "versions"}
    if other:
        parts.append(f"<{h}>Other fields</{h}>\n" + _key_values(_flatten(other)))
    versions = results.get("versions")
    if isinstance(versions, Mapping) and versions:
        parts.append(f"<{h}>Versions</{h}>\n" + _key_values(_flatten(versions)))
    return "\n".join(f"<section>{p}</section>" for p in parts) + "\n"


def _summary_line(results: Mapping[str, Any]) -> str:
    items = [("protocol", results.get("protocol", "-"))]
    if "quick" in results:
        items.append(("quick", results["quick"]))
    if isinstance(results.get("wall_seconds"), int | float):
        items.append(("wall time", f"{results['wall_seconds']:.1f} s"))
    return "<p class='summary'>" + " &middot; ".join(f"<b>{_esc(k)}</b> {_esc(_fmt(v))}" for k, v in items) + "</p>"


def _bench_body(run: Path, rows: list[dict[str, Any]]) -> str:
    parts = [
        f"<h2>Results</h2>\n<p class='summary'><b>rows</b> {len(rows)} &middot; click a column header to sort</p>"
        + (_rows_table(rows) if rows else "<p class='muted'>the results file holds no rows</p>")
    ]
    figures = _figures(run)
    if "<img" in figures:
        parts.append("<h2>Figures</h2>\n" + figures)
    return "\n".join(f"<section>{p}</section>" for p in parts) + "\n"


def _subruns(run: Path) -> str:
    """A collapsible section per subfolder holding a ``results.json`` object."""
    sections = []
    for path in sorted(run.rglob("results.json")):
        if path.parent == run:
            continue
        data = _load_json(path)
        if not isinstance(data, dict):
            continue
        name = path.parent.relative_to(run).as_posix()
        sections.append(
            f"<details class='subrun'><summary>{_esc(name)} <span class='muted'>"
            f"({_esc(_fmt(data.get('protocol', '-')))})</span></summary>\n"
            f"{_run_body(path.parent, data, level=3)}</details>"
        )
    if not sections:
        return ""
    return f"<section><h2>Sub-runs ({len(sections)})</h2>\n" + "\n".join(sections) + "</section>\n"


def _figures(run: Path) -> str:
    """Every PNG of ``run/figures`` as an embedded image (drawn anew when possible)."""
    notes, written = [], []
    if plotting_available():
        try:
            written = write_run_figures(run)
        except DataError as exc:
            log.warning("figures of %s: %s", run, exc)
            notes.append(f"<p class='warn'>figures could not be drawn: {_esc(str(exc))}</p>")
    else:
        notes.append(
            "<p class='warn'>matplotlib is not installed (pip install encircle[plot]): "
            "only figures already in figures/ are shown</p>"
        )
    folder = run / FIGURES_DIR
    paths = list(written) + [p for p in sorted(folder.glob("*.png")) if p not in written]
    items = []
    for path in paths:
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            notes.append(f"<p class='warn'>{_esc(path.name)} is not a PNG file; skipped</p>")
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        width, height = struct.unpack(">II", data[16:24]) if len(data) >= 24 else (0, 0)
        wide = " class='wide'" if width > 2 * height else ""  # a row of panels gets the whole width
        items.append(
            f"<figure{wide}><img src='{uri}' alt='{_esc(path.stem)}'>"
            f"<figcaption>{_esc(path.stem)}</figcaption></figure>"
        )
    if not items:
        notes.append("<p class='muted'>no figures (no artifacts/ and no history to draw)</p>")
    return "".join(notes) + (f"<div class='figures'>{''.join(items)}</div>" if items else "")


def _provenance(results: Mapping[str, Any]) -> str:
    parts = []
    if results.get("data_source"):
        parts.append(f"<p><b>source</b> {_esc(_fmt(results['data_source']))}</p>")
    data = results.get("data")
    if isinstance(data, Mapping) and data:
        splits = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
        columns = ["split", *dict.fromkeys(c for _, v in splits for c in v)]
        rows = [{"split": k, **v} for k, v in splits]
        parts.append(_rows_table(rows, columns) if rows else "")
        rest = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
        if rest:
            parts.append(_key_values(_flatten(rest)))
    return "".join(parts) or "<p class='muted'>no data provenance recorded</p>"


def _history(history: Any) -> str:
    """One table for a list of epoch records; one collapsible table per name for a mapping."""
    if isinstance(history, list) and history and all(isinstance(r, Mapping) for r in history):
        return _rows_table(history)
    if isinstance(history, Mapping) and history:
        blocks = []
        for name, records in history.items():
            inner = _history(records)
            blocks.append(f"<details><summary>{_esc(str(name))}</summary>{inner}</details>")
        return "".join(blocks)
    return "<p class='muted'>no per-epoch history recorded</p>"


# --------------------------------------------------------------------------- elements


def _rows_table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    """A sortable table of row objects (columns in order of first appearance)."""
    rows = list(rows)
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th title='click to sort'>{_esc(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_td(r.get(c, "")) for c in cols) + "</tr>" for r in rows)
    return (
        f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _key_values(items: Mapping[str, Any], caption: str = "") -> str:
    head = f"<caption>{_esc(caption)}</caption>" if caption else ""
    body = "".join(f"<tr><th>{_esc(k)}</th>{_td(v)}</tr>" for k, v in items.items())
    return f"<table class='kv'>{head}<tbody>{body}</tbody></table>"


def _grouped(obj: Mapping[str, Any]) -> str:
    """Key-value tables side by side: the plain top-level keys, then one per nested section."""
    plain = {k: v for k, v in obj.items() if not (isinstance(v, Mapping) and v)}
    tables = [_key_values(plain)] if plain else []
    tables += [_key_values(_flatten(v), str(k)) for k, v in obj.items() if isinstance(v, Mapping) and v]
    return f"<div class='groups'>{''.join(tables)}</div>"


def _td(value: Any) -> str:
    """A cell; numbers carry their exact value in ``data-v`` for sorting."""
    if _is_number(value) and math.isfinite(value):
        return f"<td class='num' data-v='{float(value)!r}'>{_esc(_fmt(value))}</td>"
    return f"<td>{_esc(_fmt(value))}</td>"


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a.b.c`` keys; other values as they are."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    """Floats: 4 decimals in [0.01, 1], else 4 significant digits; flat lists item by item, the rest as JSON."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if value == 0 or 1e-2 <= abs(value) <= 1 else f"{value:.4g}"
    if value is None:
        return "-"
    if isinstance(value, list | tuple) and all(isinstance(v, int | float | str | bool) for v in value):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value, default=str)
    return str(value)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:16px 32px}header h1{margin:0;font-size:22px}
header .muted{color:#c9d1d9}main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:12px 0 8px}
.muted{color:#656d76}.warn{color:#9a6700}.summary{margin:4px 0}
.scroll{overflow:auto;max-height:640px}.groups{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
caption{text-align:left;font-weight:600;padding:2px 0}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
td{max-width:720px;overflow-wrap:anywhere}td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f0f3f6;position:sticky;top:0}table.kv th{background:#f6f8fa;font-weight:600;white-space:nowrap}
tbody tr:nth-child(even) td{background:#fafbfc}
table.sortable thead th{cursor:pointer;user-select:none;white-space:nowrap}
table.sortable th[data-dir=asc]::after{content:' \\25B2'}table.sortable th[data-dir=desc]::after{content:' \\25BC'}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:14px;align-items:start;grid-auto-flow:dense}
figure.wide{grid-column:1/-1}figure.wide img{max-width:1100px;margin:0 auto}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:6px;background:#fff}
figure img{width:100%;height:auto;display:block}figcaption{text-align:center;color:#656d76;font-size:12px}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}details.subrun{border-top:1px solid #d0d7de;padding-top:6px}
"""

_JS = """
document.querySelectorAll('table.sortable thead th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.dataset.dir !== 'asc';
    table.querySelectorAll('thead th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    var key = function (row) {
      var cell = row.cells[col];
      if (!cell) return '';
      return cell.dataset.v !== undefined ? parseFloat(cell.dataset.v) : cell.textContent.trim();
    };
    var numeric = rows.every(function (r) { var k = key(r); return typeof k === 'number' || k === '' || k === '-'; });
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), d;
      if (numeric) {
        x = typeof x === 'number' ? x : -Infinity; y = typeof y === 'number' ? y : -Infinity;
        d = x < y ? -1 : x > y ? 1 : 0;
      } else {
        d = String(x).localeCompare(String(y), undefined, {numeric: true});
      }
      return asc ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
