"""``encircle bench``: suites of protocol cells, result rows into the table, the table files and the CLI."""

import csv
import json

import pytest

from encircle import bench
from encircle.bench import COLUMNS, Cell, Suite, extract_rows, run_suite
from encircle.bench_rows import pivot, table_row
from encircle.cli import main
from encircle.errors import ConfigError, DataError
from encircle.experiments import get_protocol, list_protocols, run_protocol
from encircle.registry import Registry
from encircle.results import SUMMARY, ResultRow, config_hash

#: The smallest settings each protocol runs with (seconds each); applied after ``--quick``.
TINY = {
    "oneclass": {"data.normal_classes": [3], "data.max_train": 100, "data.max_test": 300, "method.pretrain_epochs": 1},
    "mnist-vs-fashion": {"data.max_train": 300, "data.max_test": 200, "train.epochs": 1},
    "mchad-cifar10": {  # its recipe on data that is here: no download, no pretrained weights
        "data.name": "fashion-mnist",
        "data.ood": "mnist",
        "data.outliers": "",
        "data.preprocess": "unit",
        "model.name": "seed000",
        "model.pretrained": "",
        "data.max_train": 300,
        "data.max_test": 200,
        "data.max_ood": 100,
        "train.batch_size": 64,
    },
    "ae-pretraining": {"data.max_train": 100, "data.max_test": 300, "train.epochs": 2},
    "ognet-mnist": {
        "data.max_train": 48,
        "data.max_test": 100,
        "train.epochs": 2,
        "method.phase2_iterations": 3,
        "baseline_epochs": 1,
    },
    "osr": {"data.max_train": 300, "data.max_test": 300, "train.epochs": 1},
    "cac-openset": {"data.max_train": 300, "data.max_test": 200, "data.max_ood": 50, "train.epochs": 1},
    "mchad-fashion": {"data.max_train": 120, "data.max_test": 120, "data.max_ood": 60, "train.epochs": 1},
}

#: protocol -> the method of each table row its result rows give
EXPECTED = {
    "oneclass": ["Deep SVDD (one-class)"],
    "mnist-vs-fashion": ["Deep SVDD (seed000 net, 2-d)"],
    "mchad-cifar10": ["MCHAD, seed000 net"],
    "ae-pretraining": ["Deep SVDD, no pretraining", "Deep SVDD, pretraining"],
    "ognet-mnist": ["Deep SVDD", "OGNet, phase 1", "OGNet, phase 2"],
    "osr": ["CAC"],
    "cac-openset": ["softmax + msp (baseline)", "CAC"],
    "mchad-fashion": [
        name
        for name in (
            "MCHAD + outlier exposure",
            "MCHAD",
            "CAC",
            "Deep SVDD (one-class)",
            "softmax + msp",
            "softmax + max-logit",
            "softmax + energy",
            "softmax + mahalanobis",
        )
        for _ in ("near", "far")
    ],
}


def run_or_skip(protocol, out, overrides):
    try:
        return run_protocol(protocol, out_dir=out, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")


def tiny_cell(name, protocol, **overrides):
    return Cell(name, protocol, protocol, {**TINY[get_protocol(protocol).name], **overrides}, quick=True)


def test_every_protocol_has_a_tiny_config_and_the_suites_cover_them():
    assert set(TINY) == set(EXPECTED) == set(list_protocols())
    for name in ("quick", "full"):
        suite = bench.get_suite(name)
        assert {cell.protocol for cell in suite.cells} == set(list_protocols())
        assert all(cell.quick == (name == "quick") for cell in suite.cells)
    osr_methods = {
        c.overrides.get("method.score_rule", "cac") for c in bench.get_suite("full").cells if c.protocol == "osr"
    }
    assert osr_methods == {"cac", "msp", "max-logit", "energy", "mahalanobis"}
    with pytest.raises(ConfigError, match="unknown suite 'nope'; expected one of full, quick"):
        bench.get_suite("nope")
    with pytest.raises(DataError, match=r"cell names must be unique, got \['a'\]"):
        Suite("twice", "", (Cell("a", "osr", "x"), Cell("a", "mnist-vs-fashion", "y")))


@pytest.mark.parametrize("protocol", list(TINY))
def test_result_rows_of_a_real_tiny_run_fit_the_schema_and_make_the_table(tmp_path, protocol):
    results = run_or_skip(protocol, tmp_path, TINY[protocol])
    # every row fits the schema, in memory and in results.json
    stored = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert stored == results["rows"] and stored
    rows = [ResultRow.from_dict(row) for row in stored]
    assert all(row.protocol == protocol for row in rows)
    assert all(len(row.config_hash) == 12 and int(row.config_hash, 16) >= 0 for row in rows)
    assert all(row.seconds >= 0 and row.dataset and row.method and row.metric for row in rows)
    assert any(row.split == SUMMARY for row in rows)
    config = get_protocol(protocol).defaults
    assert {row.seed for row in rows} <= {config.seed, results["config"]["seed"], *results.get("seeds", [])}
    # the table reads the rows
    table = extract_rows(protocol, tmp_path)
    assert [row["method"] for row in table] == EXPECTED[protocol]
    for row in table:
        assert list(row) == list(COLUMNS)
        assert row["protocol"] == protocol and row["status"] == "ok"
        sources = row["source"].split("; ")  # the protocol's sources, each once
        assert sorted(sources) == sorted(set(results["data_source"].split("; ")))
        assert 0.0 <= row["auroc"] <= 1.0 and row["train_seconds"] > 0
        assert all(row[c] is None or 0.0 <= row[c] <= 1.0 for c in bench.METRIC_COLUMNS)
    # the numbers are the protocol's own, not recomputed
    if protocol == "osr":
        assert table[0]["auroc"] == results["metrics"]["mean_auroc"]
        assert table[0]["oscr"] == results["metrics"]["mean_oscr"]
        assert table[0]["paper"].startswith("AUROC 0.991 (Miller et al.")
    if protocol == "oneclass":
        assert table[0]["auroc"] == results["metrics"]["mean_auroc"]
        assert table[0]["paper"].startswith("AUROC 0.919 (Ruff et al.") and table[0]["paper"].endswith(", class 3)")
        (per_class,) = [row for row in rows if row.split == "class3"]
        assert per_class.value == results["metrics"]["per_class_auroc"]["3"]
    if protocol == "mchad-fashion":
        assert table[1]["auroc"] == results["metrics"]["per_method"]["MCHAD + outlier exposure"]["far_auroc"]
        assert table[6]["accuracy"] is None and table[6]["dataset"].endswith("(near)")
    if protocol == "cac-openset":
        assert table[1]["paper"].startswith("known accepted 0.9516, unknown rejected 0.854 (seed 004")
    if protocol == "ae-pretraining":
        assert table[0]["paper"] == "AUROC 0.9825 (Deep SVDD review, seed 002, class 0)"
    # a row that does not fit the schema fails loudly, naming the protocol, the row and the field
    data = json.loads((tmp_path / "results.json").read_text())
    del data["rows"][0]["metric"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=rf"^{protocol} results.json: rows\[0\]: expected the result row field 'metric'"
    ):
        extract_rows(protocol, tmp_path)


def test_result_row_schema_errors_and_the_pivot():
    row = ResultRow("osr", "mnist", SUMMARY, "CAC", "auroc", 0.9, 0, 1.5, "0123456789ab")
    assert ResultRow.from_dict(row.to_dict()) == row
    with pytest.raises(DataError, match="expected result row field 'value' to be a number, got 'x'"):
        ResultRow.from_dict(row.to_dict() | {"value": "x"})
    with pytest.raises(DataError, match="expected result row field 'seed' to be an integer, got True"):
        ResultRow.from_dict(row.to_dict() | {"seed": True})
    with pytest.raises(DataError, match=r"unknown result row fields \['extra'\]"):
        ResultRow.from_dict(row.to_dict() | {"extra": 1})
    with pytest.raises(DataError, match="expected a result row"):
        ResultRow.from_dict([1])
    assert config_hash(get_protocol("osr").defaults) == config_hash(get_protocol("osr").defaults)
    assert config_hash(get_protocol("osr").defaults) != config_hash(get_protocol("oneclass").defaults)
    # one table row per (dataset, method) of the summary rows; per-split rows stay out
    rows = [
        row,
        ResultRow("osr", "mnist", "trial0", "CAC", "auroc", 0.5, 0, 1.0, "0123456789ab"),
        ResultRow("osr", "mnist", SUMMARY, "CAC", "fpr_at_95_tpr_out", 0.2, 0, 1.5, "0123456789ab"),
        ResultRow("osr", "mnist", SUMMARY, "CAC", "paper_auroc", 0.95, 0, 0.0, "0123456789ab", "a paper"),
        ResultRow("osr", "mnist", SUMMARY, "softmax + msp", "auroc", 0.8, 0, 2.0, "0123456789ab"),
    ]
    table = pivot(rows)
    assert [(r["method"], r["auroc"], r["fpr95"], r["train_seconds"], r["paper"]) for r in table] == [
        ("CAC", 0.9, 0.2, 1.5, "AUROC 0.95 (a paper)"),
        ("softmax + msp", 0.8, None, 2.0, "-"),
    ]


def test_extractor_errors(tmp_path):
    with pytest.raises(DataError, match="osr: cannot read"):
        extract_rows("osr", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"protocol": "oneclass", "data_source": "x", "rows": []}))
    with pytest.raises(DataError, match="expected results of protocol 'osr', got 'oneclass'"):
        extract_rows("osr", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"protocol": "osr", "data_source": 3, "rows": []}))
    with pytest.raises(DataError, match="osr results.json: expected data_source to be a string, got 3"):
        extract_rows("osr", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"protocol": "osr", "data_source": "x"}))
    with pytest.raises(DataError, match="osr results.json: expected rows"):
        extract_rows("osr", tmp_path)


def test_cli_suite_end_to_end_with_a_failing_cell(tmp_path, monkeypatch, capsys):
    """A good cell, a bad override, another good cell, an unregistered protocol: every one is
    in the table, the suite goes on after the failure, and the exit status is 1."""
    suite = Suite(
        "tiny",
        "test",
        (
            tiny_cell("mnist-vs-fashion", "seed000"),  # an alias works in a cell
            tiny_cell("bad", "osr", **{"train.epoch": 1}),
            tiny_cell("osr-msp", "osr", **{"method.name": "softmax", "method.score_rule": "msp"}),
            Cell("later", "not-yet-registered", "future method"),
        ),
    )
    suites: Registry[Suite] = Registry("suite")
    suites.add("tiny", suite)
    monkeypatch.setattr(bench, "SUITES", suites)
    out = tmp_path / "bench"
    try:
        status = main(["bench", "--suite", "tiny", "--out", str(out), "--set", "seed=1"])
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")
    printed = capsys.readouterr().out
    assert status == 1
    rows = json.loads((out / "results.json").read_text())
    assert [(r["cell"], r["status"]) for r in rows] == [
        ("mnist-vs-fashion", "ok"),
        ("bad", "failed"),
        ("osr-msp", "ok"),
        ("later", "skipped"),
    ]
    assert rows[1]["error"].startswith("ConfigError: unknown config key 'train.epoch'")
    assert rows[1]["auroc"] is None and rows[0]["auroc"] > 0
    assert rows[2]["method"] == "softmax + msp" and rows[2]["oscr"] is not None
    assert "not registered" in rows[3]["error"]
    assert json.loads((out / "osr-msp" / "results.json").read_text())["config"]["seed"] == 1  # --set reaches cells
    # the three table files agree
    with (out / "results.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(COLUMNS) and [r["status"] for r in table] == ["ok", "failed", "ok", "skipped"]
    assert float(table[0]["auroc"]) == pytest.approx(rows[0]["auroc"]) and table[1]["auroc"] == ""
    markdown = (out / "results.md").read_text()
    assert markdown == printed.split("\n1 failed cell(s)")[0]
    assert "| " + " | ".join(COLUMNS) + " |" in markdown
    assert f"| {rows[0]['auroc']:.3f} |" in markdown and "| failed | ConfigError: unknown config key" in markdown
    # reports: the bench page reads the rows; every successful cell has its own page
    page = (out / "report.html").read_text()
    assert "encircle bench report" in page and "<th title='click to sort'>fpr95</th>" in page
    assert "Sub-runs (2)" in page
    assert "<td>softmax + msp</td>" in page and "<td>skipped</td>" in page
    assert (out / "mnist-vs-fashion" / "report.html").is_file() and (out / "osr-msp" / "report.html").is_file()
    assert not (out / "bad" / "report.html").exists()
    log = (out / bench.LOG_FILE).read_text()
    for text in (
        "cell mnist-vs-fashion start",
        "cell mnist-vs-fashion end: 1 row(s) in",
        "cell bad failed",
        "Traceback",
    ):
        assert text in log
    assert "cell later skipped: protocol 'not-yet-registered' is not registered" in log


def test_progress_bar_names_the_cell_and_skips_do_not_fail(tmp_path, capsys):
    suite = Suite("later", "", (Cell("a", "not-yet-registered", "method A"), Cell("b", "also-not", "method B")))
    result = run_suite(suite, tmp_path, progress=True)
    assert result.failed == 0 and [r["status"] for r in result.rows] == ["skipped", "skipped"]
    err = capsys.readouterr().err
    assert "not-yet-registered/method A" in err and "also-not/method B" in err and "2/2" in err
    assert json.loads((tmp_path / "results.json").read_text()) == result.rows
    assert (tmp_path / "report.html").is_file()


def test_cell_methods_pick_rows_and_name_a_missing_one():
    rows = [table_row("mnist", "softmax + msp (baseline)"), table_row("mnist", "CAC")]
    assert bench._keep(Cell("s", "cac-openset", "CAC", methods=("CAC",)), rows) == rows[1:]
    assert bench._keep(Cell("s", "cac-openset", "both"), rows) == rows
    with pytest.raises(DataError, match=r"cell 's': methods \['MCHAD'\] not among the rows of cac-openset"):
        bench._keep(Cell("s", "cac-openset", "x", methods=("MCHAD",)), rows)


def test_a_cell_whose_data_is_missing_is_skipped(isolated_cache, tmp_path):
    """Offline with an empty cache, SVHN is nowhere: the cell is skipped, not failed."""
    suite = Suite("svhn", "", (tiny_cell("osr-svhn", "osr", **{"data.name": "svhn"}),))
    result = run_suite(suite, tmp_path / "bench", progress=False)
    assert result.failed == 0
    (row,) = result.rows
    assert row["status"] == "skipped" and row["error"].startswith(
        "data missing (svhn): dataset 'svhn' (train) not found"
    )


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "--suite", "nope", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown suite 'nope'; expected one of full, quick"
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert main(["bench", "--suite", "quick", "--out", str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: bench output directory must be a directory, got the file {str(afile)!r}"
