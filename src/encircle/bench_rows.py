"""The bench's results table: its columns, and the extractors that turn runs into rows.

An *extractor* reads one protocol run's ``results.json`` (through
:class:`~encircle.bench_results.CheckedResults`) and its folder, and returns table rows,
one per method (and per test set where a protocol has several). :data:`EXTRACTORS` maps
each protocol to its extractor; :func:`extract_rows` reads a run folder and fills in the
columns every row shares. The column meanings are in :mod:`encircle.bench`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from encircle.bench_results import CheckedResults
from encircle.errors import DataError
from encircle.experiments import seed002

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

Row = dict[str, Any]

#: table column -> key of ``ood_metrics`` (the out-of-distribution metrics)
_OOD_KEYS = {"auroc": "auroc", "aupr_in": "aupr_in", "aupr_out": "aupr_out", "fpr95": "fpr_at_95_tpr_out"}
#: table column -> key of ``open_set_metrics``
_OPEN_SET_KEYS = {
    "accuracy": "accuracy",
    **_OOD_KEYS,
    "oscr": "oscr",
    "known_accepted": "accepted_known",
    "unknown_rejected": "rejected_unknown",
}


def table_row(dataset: str, method: str, **values: Any) -> Row:
    """A table row: every column present (``None`` where the protocol has no value)."""
    row: Row = dict.fromkeys(COLUMNS)
    row.update(dataset=dataset, method=method, paper="-")
    row.update(values)
    return row


# ------------------------------------------------------------------------------ helpers


def _metrics(r: CheckedResults, columns: Mapping[str, str], *path: str, prefix: str = "") -> dict[str, float]:
    """Table column -> the number at ``path + (prefix + key,)``, for every column -> key of ``columns``."""
    return {column: r.number(*path, prefix + key) for column, key in columns.items()}


def _versus_ood(r: CheckedResults) -> str:
    """``<data.name> vs <data.ood> (OOD)``."""
    return f"{r.text('config', 'data', 'name')} vs {r.text('config', 'data', 'ood')} (OOD)"


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


def _detector_seconds(protocol: str, history: Mapping[str, Any], folder: Path) -> float:
    """Training time of the detectors of ``history`` (detector folder -> records); the
    records of every phase (pretraining included) are in one history."""
    return _seconds(protocol, history)


def _paper(value: str, citation: str) -> str:
    return f"{value} ({citation})"


def _method_label(r: CheckedResults) -> str:
    """``CAC``, ``MCHAD``, ``softmax + energy``, ... from a run's method config."""
    name = r.text("config", "method", "name")
    if name == "softmax":
        return f"softmax + {r.text('config', 'method', 'score_rule')}"
    return {"cac": "CAC", "mchad": "MCHAD", "deep-svdd": "Deep SVDD"}.get(name, name)


# --------------------------------------------------------------------------- extractors


def _oneclass_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    """One row: the mean AUROC over the normal classes, and the paper's mean over the same classes."""
    objective = r.text("config", "method", "objective")
    classes = [int(c) for c in r.mapping("metrics", "per_class_auroc")]
    dataset = f"{r.text('config', 'data', 'name')}, normal class {_classes(classes)} (one at a time) vs the rest"
    paper = r.optional("metrics", "paper_mean_auroc")
    which = f"class {classes[0]}" if len(classes) == 1 else f"mean of classes {_classes(classes)}"
    history = r.mapping("history")  # "class{c}/seed{s}" -> records; the detector's folder too
    return [
        table_row(
            dataset,
            f"Deep SVDD ({objective})",
            auroc=r.number("metrics", "mean_auroc"),
            train_seconds=_detector_seconds(r.protocol, history, cell_dir),
            paper="-" if paper is None else _paper(f"AUROC {paper:.3f}, {which}", r.text("paper")),
        )
    ]


def _seed000_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    dataset = _versus_ood(r)
    net = f"{r.text('config', 'model', 'name')} net, {r.number('config', 'model', 'out_features'):.0f}-d"
    return [
        table_row(
            dataset,
            f"Deep SVDD ({net})",
            **_metrics(r, _OOD_KEYS, "metrics"),
            known_accepted=r.number("metrics", "accepted_in"),
            unknown_rejected=1.0 - r.number("metrics", "accepted_out"),
            train_seconds=r.number("train_seconds"),
        )
    ]


def _seed001_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    method, outliers = _method_label(r), r.text("config", "data", "outliers")
    if outliers:
        method += f" + outlier exposure ({outliers})"
    dataset = _versus_ood(r)
    return [
        table_row(
            dataset,
            f"{method}, {r.text('config', 'model', 'name')} net",
            **_metrics(r, {"accuracy": "accuracy", **_OOD_KEYS}, "metrics"),
            train_seconds=_seconds(r.protocol, r.records("history")),
        )
    ]


def _seed002_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    classes = r.integers("config", "data", "normal_classes") or list(range(10))
    dataset = f"{r.text('config', 'data', 'name')}, normal class {_classes(classes)} vs the rest"
    rows = []
    for variant, review in seed002.REVIEW_AUROC.items():
        history = r.mapping("runs", variant, "history")
        rows.append(
            table_row(
                dataset,
                f"Deep SVDD, {variant}",
                auroc=r.number("metrics", f"auroc_{variant.replace(' ', '_')}"),
                train_seconds=_detector_seconds(r.protocol, history, cell_dir / variant.replace(" ", "-")),
                paper=_paper(f"AUROC {review / 100:.4f}", "Deep SVDD review, seed 002, class 0"),
            )
        )
    return rows


def _ognet_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    """Deep SVDD and OGNet after each phase; phase two's time includes phase one's."""
    classes = [int(c) for c in r.mapping("metrics", "per_class_auroc", "deep_svdd")]
    dataset = f"{r.text('config', 'data', 'name')}, normal class {_classes(classes)} vs 100 of each other class"
    svdd = 0.0
    phases = {"phase-one": 0.0, "phase-two": 0.0}
    for name in r.mapping("history"):
        svdd += _seconds(r.protocol, r.records("history", name, "deep_svdd"))
        ognet = r.records("history", name, "ognet")
        for phase in phases:
            phases[phase] += _seconds(r.protocol, [rec for rec in ognet if rec.get("phase") == phase])
    runs = (
        ("Deep SVDD", "deep_svdd", svdd),
        ("OGNet, phase 1", "ognet_phase_one", phases["phase-one"]),
        ("OGNet, phase 2", "ognet_phase_two", phases["phase-one"] + phases["phase-two"]),
    )
    return [
        table_row(dataset, method, auroc=r.number("metrics", f"mean_auroc_{key}"), train_seconds=seconds)
        for method, key, seconds in runs
    ]


def _osr_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    """One row: means over the trials; training time summed over them."""
    splits = {name: r.integers("splits", name) for name in r.mapping("splits")}
    sizes = "/".join(sorted({str(len(known)) for known in splits.values()}))
    dataset = f"{r.text('config', 'data', 'name')}, {sizes} known classes, {', '.join(splits)}"
    paper = r.optional("metrics", "paper_auroc")
    return [
        table_row(
            dataset,
            _method_label(r),
            **_metrics(r, _OPEN_SET_KEYS, "metrics", prefix="mean_"),
            train_seconds=sum(r.number("metrics", "per_trial", t, "train_seconds") for t in splits),
            paper="-" if paper is None else _paper(f"AUROC {paper:.3f}", r.text("paper")),
        )
    ]


def _seed004_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    known, unknown = r.text("config", "data", "name"), r.text("config", "data", "ood")
    dataset = f"{known} (all classes known) + {r.number('data', 'test_out', 'size'):.0f} {unknown} unknowns"
    seed = _paper(
        f"known accepted {r.number('metrics', 'seed_success', 'known'):.4f}, "
        f"unknown rejected {r.number('metrics', 'seed_success', 'unknown'):.4f}",
        "seed 004: CAC, threshold 0.5, MNIST + 500 grayscale CIFAR-10",
    )
    return [
        table_row(
            dataset,
            {"softmax": "softmax + msp (baseline)", "cac": "CAC"}.get(slug, slug),
            **_metrics(r, _OPEN_SET_KEYS, "metrics", slug),
            train_seconds=r.number("metrics", slug, "train_seconds"),
            paper=seed if slug == "cac" else "-",
        )
        for slug in r.mapping("metrics")
        if slug != "seed_success"
    ]


def _mchad_rows(r: CheckedResults, cell_dir: Path) -> list[Row]:
    """Two rows per method: near unknowns (held-out classes) and far unknowns (``data.ood``)."""
    data = r.text("config", "data", "name")
    known = _classes(r.integers("classes", "known"))
    test_sets = {
        "near": f"{data} {known} vs {_classes(r.integers('classes', 'near_unknown'))} (near)",
        "far": f"{data} {known} vs {r.text('config', 'data', 'ood')} (far)",
    }
    return [
        table_row(
            dataset,
            method,
            accuracy=r.optional("metrics", "per_method", method, "accuracy"),
            **_metrics(r, _OOD_KEYS, "metrics", "per_method", method, prefix=f"{test}_"),
            train_seconds=r.number("metrics", "per_method", method, "train_seconds"),
        )
        for method in r.mapping("metrics", "per_method")
        for test, dataset in test_sets.items()
    ]


#: protocol name -> function from (checked results, cell folder) to table rows
EXTRACTORS: dict[str, Callable[[CheckedResults, Path], list[Row]]] = {
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
    results = CheckedResults(protocol, data)
    found = results.text("protocol")
    if found != protocol:
        raise DataError(f"{str(path)!r}: expected results of protocol {protocol!r}, got {found!r}")
    source = "; ".join(dict.fromkeys(results.text("data_source").split("; ")))  # each source once
    rows = EXTRACTORS[protocol](results, folder)
    for row in rows:
        row.update(protocol=protocol, source=source, status="ok", error="")
    return rows
