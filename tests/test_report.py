"""The run artifacts convention, the HTML report (run and bench directories) and the
figures a protocol run draws."""

import base64
import json
import logging
import struct
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from encircle.artifacts import embed_samples, load_artifacts, save_scores
from encircle.cli import main
from encircle.config import RunConfig, with_overrides
from encircle.detector import Detector
from encircle.errors import DataError, TrainingError
from encircle.experiments import protocol as protocol_module
from encircle.experiments import run_protocol
from encircle.experiments.protocol import PROTOCOLS, Protocol
from encircle.report import write_report
from encircle.results import ResultRow
from tests.test_figures import make_run

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert('x')</script>&"


class Page(HTMLParser):
    """The parts of a report page the tests look at."""

    def __init__(self, text):
        super().__init__()
        self.images, self.tables, self.headings, self.scripts, self.links = [], [], [], 0, []
        self._heading = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.tables.append({"class": attrs.get("class", ""), "th": [], "td": []})
        elif tag in ("th", "td"):
            self._cell = [tag, ""]
        elif tag in ("h2", "h3", "summary"):
            self._heading = ""
        for name in ("src", "href"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell:
            self.tables[-1][self._cell[0]].append(self._cell[1].strip())
            self._cell = None
        elif tag in ("h2", "h3", "summary") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        if self._heading is not None:
            self._heading += data


def decoded_png(img):
    """The bytes of an embedded image, checked to be a non-empty PNG."""
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix), "figures are embedded, not linked"
    data = base64.b64decode(img["src"][len(prefix) :], validate=True)
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100 and len(data) > 2000
    return data


def table_with(page, header):
    return next(t for t in page.tables if header in t["th"])


def rich_run(run):
    make_run(run)
    results = json.loads((run / "results.json").read_text())
    results.update(
        protocol=HOSTILE,
        quick=True,
        data_source=f"synthetic {HOSTILE}",
        data={"train": {"name": "blobs", "source": "numpy", "size": 100, "shape": [2]}, "note": "two splits"},
        config={"seed": 3, "train": {"epochs": 3, "lr": 0.001}, "model": {"name": "mlp"}},
        metrics={"auroc": 0.91234, "per_class": {"0": 0.5, "1": 0.75}, "threshold": 4.0},
        table=[{"normal class": 0, "AUROC %": 91.2, "paper %": 98.0}, {"normal class": 1, "AUROC %": 88.0}],
        wall_seconds=12.5,
        versions={"encircle": "0.1.0", "torch": "2.13"},
        paper="Ruff et al. 2018",
    )
    (run / "results.json").write_text(json.dumps(results))
    return run


# -------------------------------------------------------------------------- run mode


def test_run_report_embeds_every_figure_and_the_tables(tmp_path):
    run = rich_run(tmp_path / "run")
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text()
    page = Page(text)
    figures = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert len(figures) == 9
    assert sorted(img["alt"] + ".png" for img in page.images) == figures
    for img in page.images:
        assert decoded_png(img) == (run / "figures" / (img["alt"] + ".png")).read_bytes()
    headings = set(page.headings)
    assert {"Metrics", "Results table", "Figures", "Data provenance", "Configuration", "History"} <= headings
    assert {"Other fields", "Versions"} <= headings
    metrics = table_with(page, "auroc")
    assert "0.9123" in metrics["td"] and "per_class.1" in metrics["th"]
    results_table = table_with(page, "AUROC %")
    assert results_table["class"] == "sortable" and results_table["th"] == ["normal class", "AUROC %", "paper %"]
    history = table_with(page, "test_auroc")
    assert history["th"] == ["epoch", "loss", "test_auroc"] and len(history["td"]) == 9
    provenance = table_with(page, "split")
    assert provenance["th"] == ["split", "name", "source", "size", "shape"] and "blobs" in provenance["td"]
    assert "lr" in table_with(page, "epochs")["th"]
    assert "Ruff et al. 2018" in table_with(page, "paper")["td"]


def test_report_escapes_what_comes_from_files_and_needs_no_network(tmp_path):
    text = write_report(rich_run(tmp_path / "run")).read_text()
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in text
    page = Page(text)
    assert page.scripts == 1, "only the report's own sorting script"
    assert page.links == [] and "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text


def test_report_of_a_bare_run_and_a_custom_output(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"protocol": "p", "metrics": {}}))
    out = write_report(run, out=tmp_path / "elsewhere" / "page.html")
    text = out.read_text()
    assert "no figures" in text and "no per-epoch history" in text and "no data provenance" in text
    assert not (run / "report.html").exists()


def test_report_shows_a_figure_error_instead_of_failing(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "artifacts" / "broken.npz").write_bytes(b"not a zip file")
    text = write_report(run).read_text()
    assert "figures could not be drawn" in text and "broken.npz" in text


def test_report_without_matplotlib_embeds_existing_figures(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    (run / "figures").mkdir()
    (run / "figures" / "old.png").write_bytes((tmp_path / "run" / "results.json").read_bytes())  # not a PNG
    monkeypatch.setattr("encircle.report.plotting_available", lambda: False)
    text = write_report(run).read_text()
    assert "pip install encircle[plot]" in text and "old.png is not a PNG file" in text
    assert Page(text).images == []


# ------------------------------------------------------------------------ bench mode

BENCH_ROWS = [
    {"dataset": "mnist", "method": "cac", "auroc": 0.947, "fpr95": 0.21, "train_seconds": 120.5, "paper": "-"},
    {"dataset": "mnist", "method": "softmax", "auroc": 0.883, "fpr95": 0.4, "train_seconds": 9.5, "paper": 0.9},
    {"dataset": "fashion", "method": HOSTILE, "auroc": 0.855, "fpr95": 0.33, "train_seconds": 88.0, "paper": "-"},
]


def bench_dir(root, *, csv=False):
    root.mkdir()
    if csv:
        header = list(BENCH_ROWS[0])
        lines = [",".join(header)] + [",".join(f'"{r[k]}"' for k in header) for r in BENCH_ROWS]
        (root / "results.csv").write_text("\n".join(lines) + "\n")
    else:
        (root / "results.json").write_text(json.dumps(BENCH_ROWS))
    rich_run(root / "mnist" / "cac")
    (root / "mnist" / "softmax").mkdir(parents=True)
    (root / "mnist" / "softmax" / "results.json").write_text(json.dumps({"protocol": "osr", "metrics": {"a": 1.0}}))
    return root


@pytest.mark.parametrize("csv", [False, True])
def test_bench_report_has_a_sortable_table_and_the_sub_runs(tmp_path, csv):
    root = bench_dir(tmp_path / "bench", csv=csv)
    text = write_report(root).read_text()
    page = Page(text)
    bench = page.tables[0]
    assert bench["class"] == "sortable"
    assert bench["th"] == ["dataset", "method", "auroc", "fpr95", "train_seconds", "paper"]
    assert len(bench["td"]) == 18 and "0.9470" in bench["td"] and "120.5" in bench["td"]
    assert text.count("data-v='0.947'") == 1, "numbers carry their value for numeric sorting"
    assert "Sub-runs (2)" in page.headings
    assert any(h.startswith("mnist/cac") for h in page.headings)
    assert any(h.startswith("mnist/softmax") for h in page.headings)
    assert len(page.images) == 9, "the sub-run's figures are embedded"
    assert all(decoded_png(img) for img in page.images)
    assert "<script>alert" not in text and page.scripts == 1
    assert "addEventListener('click'" in text


# ------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "RUN_DIR must be an existing directory"),
        (lambda d: d.mkdir(), "holds no results.json or results.csv"),
        (lambda d: (d.mkdir(), (d / "results.json").write_text('{"protocol": ')), "results.json' is not valid JSON"),
        (lambda d: (d.mkdir(), (d / "results.json").write_text("42")), "must hold a results object"),
        (lambda d: (d.mkdir(), (d / "results.json").write_text("[1, 2]")), "list of row objects"),
        (lambda d: (d.mkdir(), (d / "results.json").write_bytes(b"\xff\xfe")), "cannot read"),
        (lambda d: (d.mkdir(), (d / "results.csv").write_text("")), "must start with a header row"),
    ],
)
def test_bad_run_dir(tmp_path, capsys, setup, message):
    run = tmp_path / "run"
    setup(run)
    with pytest.raises(DataError, match=message):
        write_report(run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_sub_run_is_a_data_error(tmp_path):
    root = tmp_path / "bench"
    root.mkdir()
    (root / "results.json").write_text("[]")
    (root / "a").mkdir()
    (root / "a" / "results.json").write_text("{")
    with pytest.raises(DataError, match="a/results.json' is not valid JSON"):
        write_report(root)


def test_cli_report(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"report written to {run / 'report.html'}"
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert Page((tmp_path / "r.html").read_text()).images


# ----------------------------------------------------------------- artifacts convention


def test_artifacts_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "scores": torch.tensor(rng.random(20), dtype=torch.float32),
        "labels": np.r_[np.arange(10) % 3, -np.ones(10, int)],
        "predictions": torch.tensor(np.r_[np.arange(10) % 3, np.zeros(10, int) - 1]),
        "embeddings": rng.normal(size=(20, 4)),
        "centers": rng.normal(size=(3, 4)),
        "images": rng.integers(0, 256, size=(4, 3, 5, 5), dtype=np.uint8),
        "image_index": np.array([0, 5, 10, 19]),
    }
    path = save_scores(tmp_path, "trial-0.a", radius=1.5, threshold=-0.5, class_names=("a", "b", "c"), **arrays)
    assert path == tmp_path / "artifacts" / "trial-0.a.npz"
    assert not list(path.parent.glob(".*"))
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {*arrays, "radius", "threshold", "class_names"}
    loaded = load_artifacts(tmp_path)["trial-0.a"]
    for key, value in arrays.items():
        expected = value.numpy() if isinstance(value, torch.Tensor) else value
        np.testing.assert_array_equal(getattr(loaded, key), expected)
    assert loaded.scores.dtype == np.float32 and loaded.labels.dtype == np.int64
    assert (loaded.radius, loaded.threshold, loaded.class_names) == (1.5, -0.5, ("a", "b", "c"))
    assert loaded.num_classes == 3

    save_scores(tmp_path, "minimal", scores=np.ones(3), labels=np.array([0, 4, -1]))
    minimal = load_artifacts(tmp_path)["minimal"]
    assert minimal.predictions is None and minimal.images is None and minimal.class_names is None
    assert minimal.num_classes == 5
    assert list(load_artifacts(tmp_path)) == ["minimal", "trial-0.a"]


def test_load_artifacts_of_a_run_without_any(tmp_path):
    assert load_artifacts(tmp_path) == {}
    with pytest.raises(DataError, match="existing run directory"):
        load_artifacts(tmp_path / "missing")


N = 4
GOOD = {"scores": np.arange(N, dtype=np.float32), "labels": np.array([0, 1, -1, -1])}


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("../x", {}, "name must be letters"),
        (".hidden", {}, "name must be letters"),
        ("ok", {"scores": np.zeros((N, 1))}, r"scores must be real numbers of shape \(N,\)"),
        ("ok", {"scores": np.zeros(0), "labels": np.zeros(0, int)}, "scores must hold at least one"),
        ("ok", {"scores": np.array([0, np.nan, 1, 2])}, "scores must be finite"),
        ("ok", {"scores": [1.0, 2.0]}, "scores must be a torch.Tensor or numpy.ndarray, got list"),
        ("ok", {"labels": None}, "labels must be given"),
        ("ok", {"labels": np.zeros(N)}, "labels must be integer class ids"),
        ("ok", {"labels": np.zeros(3, int)}, r"labels must have one entry per score \(4\), got 3"),
        ("ok", {"labels": np.array([0, -2, 0, 0])}, "labels must be -1"),
        ("ok", {"predictions": np.zeros(5, int)}, "predictions must have one entry per score"),
        ("ok", {"embeddings": np.zeros((3, 2))}, r"embeddings must have shape \(N, D\) with N = 4"),
        ("ok", {"embeddings": np.zeros(N)}, r"embeddings must be real numbers of shape \(N, D\)"),
        ("ok", {"embeddings": np.zeros((N, 2)), "centers": np.zeros((1, 3))}, "dimension D = 2"),
        ("ok", {"centers": np.zeros((0, 3))}, r"centers must have shape \(K, D\) with K, D >= 1"),
        ("ok", {"radius": -1.0}, "radius must be a finite number >= 0.0"),
        ("ok", {"radius": float("nan")}, "radius must be a finite number"),
        ("ok", {"threshold": "high"}, "threshold must be a number, got str"),
        ("ok", {"images": np.zeros((2, 1, 3, 3))}, "images must be uint8"),
        ("ok", {"images": np.zeros((2, 2, 3, 3), np.uint8)}, "C = 1 or 3"),
        ("ok", {"images": np.zeros((5, 1, 3, 3), np.uint8)}, "images must hold 1 to N = 4 images, got 5"),
        ("ok", {"image_index": np.array([0])}, "image_index needs images"),
        ("ok", {"images": np.zeros((1, 1, 2, 2), np.uint8), "image_index": np.array([4])}, r"indices in 0..3"),
        ("ok", {"images": np.zeros((1, 1, 2, 2), np.uint8), "image_index": np.array([0, 1])}, "1 integer indices"),
        ("ok", {"class_names": ["a"]}, "got 1 names but class id 1"),
        ("ok", {"class_names": "ab"}, "class_names must be a non-empty sequence of strings"),
        ("ok", {"class_names": []}, "class_names must be a non-empty sequence of strings"),
    ],
)
def test_save_scores_bad_input(tmp_path, name, extra, message):
    with pytest.raises(DataError, match=message):
        save_scores(tmp_path, name, **{**GOOD, **extra})
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").iterdir())


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (None, "cannot be read as .npz without pickle"),
        ({"labels": np.zeros(2, int)}, "lacks the array 'scores'"),
        ({**GOOD, "extra": np.zeros(1)}, r"unknown arrays \['extra'\]"),
        ({**GOOD, "class_names": np.array([object()], dtype=object)}, "without pickle"),
        ({**GOOD, "labels": np.zeros(2, int)}, "labels must have one entry per score"),
    ],
)
def test_load_artifacts_bad_files(tmp_path, arrays, message):
    path = tmp_path / "artifacts" / "bad.npz"
    path.parent.mkdir()
    if arrays is None:
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_artifacts(tmp_path)


def test_embed_samples_gives_the_method_outputs_batch_wise():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32))
    settings = {"model.name": "mlp", "model.out_features": 3, "data.preprocess": "standardize", "train.epochs": 1}
    detector = Detector(with_overrides(RunConfig(), settings)).fit(x, progress=False)
    pipeline = detector.input_pipeline()
    z = embed_samples(detector.method_, x, pipeline, batch_size=7)
    assert z.shape == (50, 3) and z.dtype == torch.float32
    detector.method_.eval()
    with torch.no_grad():
        direct = detector.method_.embed(pipeline(x))
    torch.testing.assert_close(z, direct)
    with pytest.raises(DataError, match="cannot embed an empty set"):
        embed_samples(detector.method_, x[:0], pipeline)


# ------------------------------------------------------------------ protocol integration


def synthetic_run(config, ctx):
    rng = np.random.default_rng(config.seed)
    labels = np.r_[np.zeros(30, int), -np.ones(20, int)]
    save_scores(ctx.out_dir, "test", scores=rng.random(50) + (labels < 0), labels=labels)
    history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.2}]
    return {"metrics": {"auroc": 1.0}, "data": {}, "history": history, "rows": []}


@pytest.fixture
def synthetic_protocol(monkeypatch):
    monkeypatch.setitem(PROTOCOLS._entries, "synthetic", Protocol("synthetic", "test only", RunConfig(), synthetic_run))


@pytest.mark.usefixtures("synthetic_protocol")
def test_run_protocol_draws_the_figures(tmp_path):
    run_protocol("synthetic", out_dir=tmp_path, progress=False)
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names == ["roc.png", "test_scores.png", "training.png"]


@pytest.mark.usefixtures("synthetic_protocol")
def test_run_protocol_goes_on_without_matplotlib(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("encircle.figures.plotting_available", lambda: False)
    with caplog.at_level(logging.INFO, logger=protocol_module.__name__):
        results = run_protocol("synthetic", out_dir=tmp_path, progress=False)
    assert results["metrics"] == {"auroc": 1.0} and (tmp_path / "results.json").is_file()
    assert not (tmp_path / "figures").exists()
    assert "pip install encircle[plot]" in caplog.text


def test_run_protocol_refuses_rows_of_another_protocol(tmp_path, monkeypatch):
    row = ResultRow("other", "d", "all", "m", "auroc", 0.5, 0, 0.0, "0" * 12)
    protocol = Protocol("mine", "test only", RunConfig(), lambda config, ctx: {"metrics": {}, "rows": [row]})
    monkeypatch.setitem(PROTOCOLS._entries, "mine", protocol)
    with pytest.raises(TrainingError, match="protocol 'mine' must return its result rows"):
        run_protocol("mine", out_dir=tmp_path, progress=False)


def test_mnist_vs_fashion_report_shows_the_output_space(tmp_path):
    overrides = {"data.max_train": 300, "data.max_test": 200, "train.epochs": 1, "train.eval_every": 0}
    try:
        run_protocol("mnist-vs-fashion", out_dir=tmp_path, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")
    art = load_artifacts(tmp_path)["test"]
    assert art.embeddings.shape == (400, 2) and art.centers.shape == (1, 2) and art.radius > 0
    assert art.class_names == ("mnist",) and set(np.unique(art.labels)) == {0, -1}
    assert len(art.images) == 16 and (art.labels[art.image_index] < 0).sum() == 8
    d2 = ((art.embeddings.astype(np.float64) - art.centers[0]) ** 2).sum(axis=1)
    clear = np.abs(d2 - art.radius**2) > 1e-3 * art.radius**2  # away from the boundary's rounding
    np.testing.assert_array_equal((d2 <= art.radius**2)[clear], (art.predictions == 0)[clear])  # circle = boundary
    text = write_report(tmp_path).read_text()
    assert "Result rows" in text and "fpr_at_95_tpr_out" in text  # the run's result rows, as a table
    page = Page(text)
    alts = {img["alt"] for img in page.images}
    assert {"roc", "test_scores", "test_output_space", "test_confusion", "test_predictions"} <= alts
