"""``encircle bench``: suites of protocol cells, the extractors, the table files and the CLI."""

import csv
import json

import pytest

from encircle import bench
from encircle.bench import COLUMNS, Cell, Suite, extract_rows, run_suite
from encircle.bench_rows import table_row
from encircle.cli import main
from encircle.errors import ConfigError, DataError
from encircle.experiments import list_protocols, run_protocol
from encircle.registry import Registry

#: The smallest settings each protocol runs with (seconds each); applied after ``--quick``.
TINY = {
    "oneclass": {"data.normal_classes": [3], "data.max_train": 100, "data.max_test": 300, "method.pretrain_epochs": 1},
    "seed000": {"data.max_train": 300, "data.max_test": 200, "train.epochs": 1},
    "seed001": {  # its recipe on data that is here: no download, no pretrained weights
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
    "seed002": {"data.max_train": 100, "data.max_test": 300, "train.epochs": 2},
    "ognet-mnist": {
        "data.max_train": 48,
        "data.max_test": 100,
        "train.epochs": 2,
        "method.phase2_iterations": 3,
        "baseline_epochs": 1,
    },
    "osr": {"data.max_train": 300, "data.max_test": 300, "train.epochs": 1},
    "seed004": {"data.max_train": 300, "data.max_test": 200, "data.max_ood": 50, "train.epochs": 1},
    "mchad-fashion": {"data.max_train": 120, "data.max_test": 120, "data.max_ood": 60, "train.epochs": 1},
}

#: protocol -> (the method rows its extractor gives, a key it needs)
EXPECTED = {
    "oneclass": (["Deep SVDD (one-class)"], ("metrics", "mean_auroc")),
    "seed000": (["Deep SVDD (seed000 net, 2-d)"], ("metrics", "fpr_at_95_tpr_out")),
    "seed001": (["MCHAD, seed000 net"], ("metrics", "aupr_out")),
    "seed002": (["Deep SVDD, no pretraining", "Deep SVDD, pretraining"], ("runs", "pretraining", "history")),
    "ognet-mnist": (["Deep SVDD", "OGNet, phase 1", "OGNet, phase 2"], ("metrics", "mean_auroc_ognet_phase_two")),
    "osr": (["CAC"], ("metrics", "mean_oscr")),
    "seed004": (["softmax + msp (baseline)", "CAC"], ("metrics", "cac", "rejected_unknown")),
    "mchad-fashion": (
        [
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
        ("metrics", "per_method", "CAC", "far_auroc"),
    ),
}


def run_or_skip(protocol, out, overrides):
    try:
        return run_protocol(protocol, out_dir=out, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")


def tiny_cell(name, protocol, **overrides):
    return Cell(name, protocol, protocol, {**TINY[protocol], **overrides}, quick=True)


def test_every_protocol_has_an_extractor_and_the_suites_cover_them():
    assert set(bench.EXTRACTORS) == set(list_protocols())
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
        Suite("twice", "", (Cell("a", "osr", "x"), Cell("a", "seed000", "y")))


@pytest.mark.parametrize("protocol", list(TINY))
def test_extractor_reads_a_real_tiny_run(tmp_path, protocol):
    results = run_or_skip(protocol, tmp_path, TINY[protocol])
    rows = extract_rows(protocol, tmp_path)
    methods, needed = EXPECTED[protocol]
    assert [row["method"] for row in rows] == methods
    for row in rows:
        assert list(row) == list(COLUMNS)
        assert row["protocol"] == protocol and row["status"] == "ok"
        sources = row["source"].split("; ")  # the protocol's sources, each once
        assert sorted(sources) == sorted(set(results["data_source"].split("; ")))
        assert 0.0 <= row["auroc"] <= 1.0 and row["train_seconds"] > 0
        assert all(row[c] is None or 0.0 <= row[c] <= 1.0 for c in bench.METRIC_COLUMNS)
    # the numbers are the protocol's own, not recomputed
    if protocol == "osr":
        assert rows[0]["auroc"] == results["metrics"]["mean_auroc"]
        assert rows[0]["oscr"] == results["metrics"]["mean_oscr"]
        assert rows[0]["paper"].startswith("AUROC 0.991 (Miller et al.")
    if protocol == "oneclass":
        assert rows[0]["auroc"] == results["metrics"]["mean_auroc"]
        assert rows[0]["paper"].startswith("AUROC 0.919, class 3 (Ruff et al.")
    if protocol == "mchad-fashion":
        assert rows[1]["auroc"] == results["metrics"]["per_method"]["MCHAD + outlier exposure"]["far_auroc"]
        assert rows[6]["accuracy"] is None and rows[6]["dataset"].endswith("(near)")
    if protocol == "seed004":
        assert rows[1]["paper"].startswith("known accepted 0.9516, unknown rejected 0.8540")
    # a layout the extractor does not expect fails loudly, naming the protocol and the key
    data = json.loads((tmp_path / "results.json").read_text())
    node = data
    for key in needed[:-1]:
        node = node[key]
    del node[needed[-1]]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"^{protocol} results.json: expected {'.'.join(needed)}"):
        extract_rows(protocol, tmp_path)


def test_extractor_errors(tmp_path):
    with pytest.raises(DataError, match="no bench extractor for protocol 'nope'"):
        extract_rows("nope", tmp_path)
    with pytest.raises(DataError, match="osr: cannot read"):
        extract_rows("osr", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"protocol": "seed000", "data_source": "x"}))
    with pytest.raises(DataError, match="expected results of protocol 'osr', got 'seed000'"):
        extract_rows("osr", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"protocol": "osr", "data_source": 3}))
    with pytest.raises(DataError, match="osr results.json: expected data_source to be a string, got 3"):
        extract_rows("osr", tmp_path)


def test_cli_suite_end_to_end_with_a_failing_cell(tmp_path, monkeypatch, capsys):
    """A good cell, a bad override, another good cell, an unregistered protocol: every one is
    in the table, the suite goes on after the failure, and the exit status is 1."""
    suite = Suite(
        "tiny",
        "test",
        (
            tiny_cell("seed000", "seed000"),
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
        ("seed000", "ok"),
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
    assert (out / "seed000" / "report.html").is_file() and (out / "osr-msp" / "report.html").is_file()
    assert not (out / "bad" / "report.html").exists()
    log = (out / bench.LOG_FILE).read_text()
    for text in ("cell seed000 start", "cell seed000 end: 1 row(s) in", "cell bad failed after", "Traceback"):
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
    assert bench._keep(Cell("s", "seed004", "CAC", methods=("CAC",)), rows) == rows[1:]
    assert bench._keep(Cell("s", "seed004", "both"), rows) == rows
    with pytest.raises(DataError, match=r"cell 's': methods \['MCHAD'\] not among the rows of seed004"):
        bench._keep(Cell("s", "seed004", "x", methods=("MCHAD",)), rows)


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
