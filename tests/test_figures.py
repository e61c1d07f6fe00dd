"""Figures: the exact ROC curve and PCA, every plot function, and write_run_figures."""

import json
import struct
import sys

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_curve as sk_roc_curve

from encircle import figures
from encircle.artifacts import save_scores
from encircle.errors import ConfigError, DataError
from encircle.figures import (
    pca_2d,
    plot_confusion_matrix,
    plot_embeddings,
    plot_output_space,
    plot_prediction_grid,
    plot_roc,
    plot_score_histogram,
    plot_training_curves,
    roc_curve,
    write_run_figures,
)

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) of a PNG file, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_png(path):
    width, height = png_size(path)
    assert width > 100 and height > 100
    assert path.stat().st_size > 2000, "a drawn figure is more than a blank header"
    assert not list(path.parent.glob(".*.tmp")), "no temporary file is left behind"


def detection_data(n=300, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 3, size=n)  # -1 = OOD, 0..2 known
    scores = rng.normal(size=n) + (labels < 0) * 1.5
    if ties:
        scores = np.round(scores, 1)  # many tied scores
    return scores, labels


# ------------------------------------------------------------------------------- ROC


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [True, False])
def test_roc_curve_equals_sklearn(seed, ties):
    scores, labels = detection_data(seed=seed, ties=ties)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels < 0, scores, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thresholds, sk_thresholds)


def test_roc_curve_takes_tensors_and_booleans_and_a_hand_example():
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8])
    is_ood = torch.tensor([False, True, False, True])
    fpr, tpr, thresholds = roc_curve(scores, is_ood)
    np.testing.assert_allclose(thresholds, [np.inf, 0.8, 0.4, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros(4), np.array([0, 0, 1, 2]), "both OOD and in-distribution"),
        (np.zeros(4), np.array([-1, -1, -1, -1]), "both OOD and in-distribution"),
        (np.zeros(4), np.array([0, -1, 0]), "labels must have 4 entries"),
        (np.array([0.0, np.nan, 1, 2]), np.array([0, -1, 0, -1]), "scores must be finite"),
        (np.zeros((2, 2)), np.array([0, -1]), "scores must be a non-empty 1-D array"),
        (np.zeros(0), np.zeros(0, dtype=int), "scores must be a non-empty 1-D array"),
        (np.zeros(2), np.array([0.0, 1.0]), "labels must be integer class ids"),
        (np.zeros(2), np.array([0, -2]), "labels must be -1"),
        ([0.1, 0.2], np.array([0, -1]), "scores must be a torch.Tensor or numpy.ndarray, got list"),
    ],
)
def test_roc_curve_bad_input(scores, labels, message):
    with pytest.raises(DataError, match=message):
        roc_curve(scores, labels)


# ------------------------------------------------------------------------------- PCA


def test_pca_2d_matches_numpy_svd_and_sklearn():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 5.0
    projection = pca_2d(x)
    projected = projection.transform(x)
    u, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    by_svd = u[:, :2] * s[:2]
    for k in range(2):  # axes are defined up to sign
        sign = np.sign(projected[:, k] @ by_svd[:, k])
        np.testing.assert_allclose(projected[:, k], sign * by_svd[:, k], atol=1e-9)
        np.testing.assert_allclose(projection.components[k], sign * vt[k], atol=1e-12)
    np.testing.assert_allclose(projection.components @ projection.components.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(projection.explained, s[:2] ** 2 / (s**2).sum())
    reference = PCA(n_components=2, svd_solver="full").fit(x)
    np.testing.assert_allclose(np.abs(projected), np.abs(reference.transform(x)), atol=1e-9)
    np.testing.assert_allclose(projection.explained, reference.explained_variance_ratio_)
    for k in range(2):  # the sign rule: the largest-magnitude coordinate is positive
        assert projection.components[k][np.abs(projection.components[k]).argmax()] > 0


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((1, 3)), "N >= 2 and D >= 2"),
        (np.zeros((5, 1)), "N >= 2 and D >= 2"),
        (np.zeros(5), r"x must be a non-empty real array of shape \(N, D\)"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "x must be finite"),
    ],
)
def test_pca_2d_bad_input(x, message):
    with pytest.raises(DataError, match=message):
        pca_2d(x)


def test_projection_checks_the_dimension():
    with pytest.raises(DataError, match=r"shape \(N, 3\)"):
        pca_2d(np.random.default_rng(0).normal(size=(10, 3))).transform(np.zeros((2, 4)))


# --------------------------------------------------------------------------- figures


def test_roc_and_histogram_figures(tmp_path):
    scores, labels = detection_data()
    assert_png(plot_roc(tmp_path / "roc.png", {"a": (scores, labels), "b": (torch.tensor(scores), labels < 0)}))
    assert_png(plot_score_histogram(tmp_path / "h.png", scores, labels, threshold=0.5))
    wide = np.exp(np.random.default_rng(0).normal(size=300) * 4)  # log-spaced bins
    assert_png(plot_score_histogram(tmp_path / "log.png", wide, labels))
    with pytest.raises(DataError, match="at least one name"):
        plot_roc(tmp_path / "x.png", {})


def test_output_space_and_embeddings_figures(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 4, size=300)
    emb2 = rng.normal(size=(300, 2)) + (labels[:, None] < 0) * 3
    assert_png(plot_output_space(tmp_path / "space.png", torch.tensor(emb2), labels, np.zeros(2), 1.5))
    centers = rng.normal(size=(4, 8)) * 4
    emb8 = centers[labels.clip(0)] + rng.normal(size=(300, 8))
    assert_png(plot_embeddings(tmp_path / "pca.png", emb8, labels, centers, class_names=list("abcd")))
    assert_png(plot_embeddings(tmp_path / "2d.png", emb2, labels))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: plot_output_space(p, np.zeros((3, 3)), np.zeros(3, int), np.zeros(2), 1.0), r"shape \(N, 2\)"),
        (lambda p: plot_output_space(p, np.zeros((3, 2)), np.zeros(3, int), np.zeros(3), 1.0), r"center must"),
        (lambda p: plot_output_space(p, np.zeros((3, 2)), np.zeros(3, int), np.zeros(2), -1.0), "radius must"),
        (lambda p: plot_output_space(p, np.zeros((3, 2)), np.zeros(2, int), np.zeros(2), 1.0), "labels must have 3"),
        (lambda p: plot_embeddings(p, np.zeros((3, 1)), np.zeros(3, int)), "D >= 2"),
        (lambda p: plot_embeddings(p, np.zeros((3, 2)), np.zeros(3, int), np.zeros((1, 3))), r"centers must"),
        (lambda p: plot_embeddings(p, np.zeros((3, 2)), np.zeros(3)), "labels must be a non-empty 1-D array of int"),
        (lambda p: plot_confusion_matrix(p, np.array([0, 1]), np.array([0])), "labels must have 2 entries"),
        (lambda p: plot_confusion_matrix(p, np.array([0, -3]), np.array([0, 0])), "predictions must be -1"),
        (lambda p: plot_confusion_matrix(p, np.array([0, 2]), np.array([0, 0]), class_names=["a"]), "-1..0"),
        (lambda p: plot_training_curves(p, []), "history must be a non-empty list"),
        (lambda p: plot_training_curves(p, [{"epoch": 1, "lr": 0.1}]), "'loss' or a '\\*auroc'"),
        (lambda p: plot_score_histogram(p, np.zeros(3), np.zeros(4, int)), "labels must have 3 entries"),
    ],
)
def test_figure_bad_input(tmp_path, call, message):
    with pytest.raises(DataError, match=message):
        call(tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_confusion_matrix_figure(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(-1, 10, size=500)
    predictions = np.where(rng.random(500) < 0.8, labels, rng.integers(-1, 10, size=500))
    path = plot_confusion_matrix(tmp_path / "cm.png", predictions, labels, class_names=[f"c{i}" for i in range(10)])
    assert_png(path)
    assert_png(plot_confusion_matrix(tmp_path / "cm2.png", torch.tensor([0, -1]), torch.tensor([0, 0])))


def test_training_curves_from_a_list_and_from_a_mapping(tmp_path):
    history = [{"epoch": e, "loss": 1 / e, "lr": 0.1, "test_auroc": 0.5 + e / 20} for e in range(1, 6)]
    assert_png(plot_training_curves(tmp_path / "list.png", history))
    runs = {"class0/seed1": history, "class1/seed1": history[:3], "empty": []}
    assert_png(plot_training_curves(tmp_path / "map.png", runs))
    width, height = png_size(tmp_path / "list.png")
    assert width > 1.5 * height, "loss and auroc panels side by side"


def test_prediction_grid(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(10, 1, 12, 12), dtype=np.uint8)
    predictions = np.array([0, 1, -1, 2, 0, -1, 1, 1, 0, 2])
    path = plot_prediction_grid(
        tmp_path / "g.png", images, predictions, rng.random(10), labels=predictions[::-1].copy()
    )
    assert_png(path)
    color = rng.integers(0, 256, size=(3, 3, 8, 8), dtype=np.uint8)
    assert_png(plot_prediction_grid(tmp_path / "c.png", torch.tensor(color), np.array([0, -1, 1]), np.ones(3)))
    with pytest.raises(DataError, match="images must be uint8"):
        plot_prediction_grid(tmp_path / "x.png", images.astype(np.float32), predictions, np.ones(10))
    with pytest.raises(DataError, match="scores must have 10 entries"):
        plot_prediction_grid(tmp_path / "x.png", images, predictions, np.ones(9))
    with pytest.raises(DataError, match="columns must be an integer >= 1"):
        plot_prediction_grid(tmp_path / "x.png", images, predictions, np.ones(10), columns=0)


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    assert not figures.plotting_available()
    with pytest.raises(ConfigError, match=r"pip install encircle\[plot\]"):
        plot_roc(tmp_path / "r.png", {"a": detection_data()})


# ------------------------------------------------------------------------ run figures


def make_run(run, *, history=True):
    """A run directory with a history, a 2-D one-center set and a 6-D multi-center set."""
    rng = np.random.default_rng(5)
    run.mkdir(parents=True, exist_ok=True)
    results = {"protocol": "synthetic", "metrics": {"auroc": 0.9}}
    if history:
        results["history"] = [{"epoch": e, "loss": 2.0 / e, "test_auroc": 0.6 + e / 10} for e in (1, 2, 3)]
    (run / "results.json").write_text(json.dumps(results))
    labels = np.r_[np.zeros(60, int), -np.ones(40, int)]
    emb = rng.normal(size=(100, 2)) + (labels[:, None] < 0) * 4
    scores = (emb**2).sum(axis=1)
    images = rng.integers(0, 256, size=(6, 1, 10, 10), dtype=np.uint8)
    save_scores(
        run,
        "oneclass",
        scores=scores,
        labels=labels,
        predictions=np.where(scores > 4, -1, 0),
        embeddings=emb,
        centers=np.zeros((1, 2)),
        radius=2.0,
        threshold=4.0,
        images=images,
        image_index=np.array([0, 1, 2, 97, 98, 99]),
    )
    known = rng.integers(-1, 3, size=90)
    centers = np.eye(3, 6) * 5
    emb6 = centers[known.clip(0)] + rng.normal(size=(90, 6)) + (known[:, None] < 0) * 3
    save_scores(
        run,
        "trial0",
        scores=rng.random(90),
        labels=known,
        predictions=known[::-1].copy(),
        embeddings=emb6,
        centers=centers,
        class_names=["zero", "one", "two"],
    )
    return run


def test_write_run_figures_draws_what_the_run_supports(tmp_path):
    run = make_run(tmp_path / "run")
    written = write_run_figures(run)
    assert [p.name for p in written] == [
        "training.png",
        "roc.png",
        "oneclass_scores.png",
        "oneclass_output_space.png",
        "oneclass_confusion.png",
        "oneclass_predictions.png",
        "trial0_scores.png",
        "trial0_embeddings.png",
        "trial0_confusion.png",
    ]
    for path in written:
        assert path.parent == run / "figures"
        assert_png(path)


def test_write_run_figures_reads_history_jsonl_and_mappings(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n{"epoch": 2, "loss": 0.5}\n')
    assert [p.name for p in write_run_figures(run)] == ["training.png"]
    (run / "results.json").write_text(json.dumps({"history": {"class0/seed1": [{"epoch": 1, "loss": 1.0}]}}))
    assert [p.name for p in write_run_figures(run)] == ["training.png"]
    (run / "results.json").write_text(json.dumps({"history": "not records"}))
    assert write_run_figures(run) == []


def test_write_run_figures_bad_input(tmp_path):
    with pytest.raises(DataError, match="existing run directory"):
        write_run_figures(tmp_path / "missing")
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="results.json' is not readable JSON"):
        write_run_figures(tmp_path)
    (tmp_path / "results.json").unlink()
    (tmp_path / "history.jsonl").write_text("{oops\n")
    with pytest.raises(DataError, match="history.jsonl' is not readable JSON lines"):
        write_run_figures(tmp_path)
