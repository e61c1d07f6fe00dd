import numpy as np
import pytest
import torch

from encircle.config import RunConfig, with_overrides
from encircle.detector import Detector, threshold_at_tpr
from encircle.errors import CheckpointError, DataError


def test_threshold_at_tpr_by_hand():
    scores = torch.arange(1.0, 11.0)  # 1..10
    assert threshold_at_tpr(scores, 0.95) == 10.0  # ceil(9.5) = 10th smallest
    assert threshold_at_tpr(scores, 0.9) == 9.0
    assert threshold_at_tpr(scores, 0.5) == 5.0
    assert threshold_at_tpr(scores, 1.0) == 10.0
    with pytest.raises(DataError, match="at least one normal score"):
        threshold_at_tpr(torch.tensor([]), 0.9)
    with pytest.raises(DataError, match=r"tpr must be in \(0, 1\]"):
        threshold_at_tpr(scores, 0.0)


def config(**extra):
    base = {
        "model.name": "mlp",
        "model.out_features": 4,
        "data.preprocess": "standardize",
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.lr": 1e-2,
    }
    return with_overrides(RunConfig(), {**base, **extra})


def normal(n=200, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)


def test_fit_score_predict_save_load(tmp_path):
    x = normal()
    det = Detector(config()).fit(x, progress=False)
    scores = det.score(x)
    assert scores.shape == (200,) and scores.dtype == torch.float32
    pred = det.predict(x)
    assert set(pred.unique().tolist()) <= {0, -1}
    assert torch.equal(pred, torch.where(scores > det.threshold_, -1, 0))
    far = x + 50.0
    assert det.score(far).mean() > scores.mean(), "far-away points score higher"
    det.save(tmp_path / "det.pt")
    loaded = Detector.load(tmp_path / "det.pt")
    assert torch.equal(loaded.score(x), scores)
    assert loaded.threshold_ == det.threshold_
    assert loaded.config == det.config


def test_threshold_accepts_the_target_share_of_held_out_normals():
    x = torch.from_numpy(normal(400))
    det = Detector(config(**{"calibration.tpr": 0.9, "calibration.holdout": 0.25})).fit(x, progress=False)
    train_idx, holdout_idx = det._split(len(x))
    accepted = (det.score(x[holdout_idx]) <= det.threshold_).float().mean()
    assert accepted >= 0.9
    assert len(holdout_idx) == 100 and len(set(train_idx.tolist()) & set(holdout_idx.tolist())) == 0


def test_detector_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="not fitted"):
        Detector().score(np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match="must be an ImageDataset, a tensor or a NumPy array, got list"):
        Detector(config()).fit([[1.0, 2.0]])
    with pytest.raises(DataError, match="must be uint8 images or floating-point features, got torch.int64"):
        Detector(config()).fit(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(DataError, match="at least 2 normal samples"):
        Detector(config()).fit(normal(1))
    det = Detector(config(**{"train.epochs": 1})).fit(normal(20), progress=False)
    with pytest.raises(DataError, match=r"trained on shape \(5,\)"):
        det.score(np.zeros((3, 4), np.float32))
    with pytest.raises(CheckpointError, match="does not exist"):
        Detector.load(tmp_path / "none.pt")


def test_images_of_another_size_are_resized_to_the_network(tmp_path):
    rng = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (40, 1, 14, 14), dtype=torch.uint8, generator=rng)
    config = with_overrides(RunConfig(), {"model.name": "lenet-mnist", "model.out_features": 32, "train.epochs": 1})
    det = Detector(config).fit(small, progress=False)
    assert det.preprocess_.shape == (1, 28, 28)
    rgb = torch.randint(0, 256, (3, 3, 40, 50), dtype=torch.uint8, generator=rng)
    assert det.score(rgb).shape == (3,)
    det.save(tmp_path / "d.pt")
    assert torch.equal(Detector.load(tmp_path / "d.pt").score(rgb), det.score(rgb))
    with pytest.raises(DataError, match=r"trained on shape \(1, 14, 14\)"):
        det.score(torch.zeros(2, 5))


def test_nan_inputs_are_never_accepted_as_normal():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 5, generator=g)
    detector = Detector(config()).fit(data, progress=False)
    probe = data[:3].clone()
    probe[1, 2] = float("nan")
    assert detector.predict(probe)[1].item() == -1
